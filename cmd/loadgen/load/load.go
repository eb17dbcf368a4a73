// Package load drives an agentmeter IngestService with batches of realistic
// events as fast as the server answers, and checks every answer.
//
// The client is lean so that it leaves the CPU to the server it measures: a
// ring of batches is encoded once, and each send copies one into a buffer and
// overwrites its event ids and times in place, so no per-event encoding or
// allocation happens while measuring.
package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// Mode is how batches travel.
type Mode string

// The modes.
const (
	// ModeStream sends batches on RecordStream streams, Window in flight each.
	ModeStream Mode = "stream"
	// ModeUnary sends each batch as a Record call, Streams*Window calls at once.
	ModeUnary Mode = "unary"
)

// Bounds of Config.
const (
	MaxBatch   = 50_000
	MaxStreams = 1024
	MaxWindow  = 1024
	// MaxRequestBytes is the largest encoded batch: agentmeter's receive limit.
	MaxRequestBytes = 16 << 20
	// ringEvents bounds the events of all pre-built batches together.
	ringEvents = 1 << 16
)

// Config is one load run.
type Config struct {
	// Target is host:port; the host must be loopback (localhost, 127.0.0.0/8, ::1).
	Target string
	// Mode is ModeStream or ModeUnary.
	Mode Mode
	// Batch is the number of events per RecordRequest.
	Batch int
	// Streams is the number of concurrent streams (ModeStream) or of unary
	// callers, each with Window calls in flight (ModeUnary).
	Streams int
	// Window is the number of requests in flight per stream before the sender
	// waits for a response.
	Window int
	// Duration stops sending after this long; 0 = no time limit (Events must be set).
	Duration time.Duration
	// Events stops after this many events; 0 = no limit (Duration must be set).
	Events int64
	// Timeout is a hard bound on the whole run, whatever Duration and Events say.
	Timeout time.Duration
	// Conversations is the number of distinct conversation ids cycled.
	Conversations int
	// Models is the number of distinct request_model values cycled.
	Models int
	// Progress is the interval of progress log lines; 0 = none.
	Progress time.Duration
	// Drain bounds the wait for outstanding responses once sending stops.
	Drain time.Duration
	// Logger receives progress lines and notices; nil = discard.
	Logger *slog.Logger
}

// Default returns the defaults of the loadgen command.
func Default() Config {
	return Config{
		Target:        "localhost:4320",
		Mode:          ModeStream,
		Batch:         100,
		Streams:       1,
		Window:        8,
		Duration:      10 * time.Second,
		Timeout:       10 * time.Minute,
		Conversations: 100,
		Models:        4,
		Progress:      time.Second,
		Drain:         10 * time.Second,
	}
}

// Validate reports every invalid field.
func (c Config) Validate() error {
	var errs []error
	if err := CheckLoopback(c.Target); err != nil {
		errs = append(errs, err)
	}
	if c.Mode != ModeStream && c.Mode != ModeUnary {
		errs = append(errs, fmt.Errorf("mode %q must be %q or %q", c.Mode, ModeStream, ModeUnary))
	}
	if c.Batch < 1 || c.Batch > MaxBatch {
		errs = append(errs, fmt.Errorf("batch %d must be in [1, %d]", c.Batch, MaxBatch))
	}
	if c.Streams < 1 || c.Streams > MaxStreams {
		errs = append(errs, fmt.Errorf("streams %d must be in [1, %d]", c.Streams, MaxStreams))
	}
	if c.Window < 1 || c.Window > MaxWindow {
		errs = append(errs, fmt.Errorf("window %d must be in [1, %d]", c.Window, MaxWindow))
	}
	if c.Duration < 0 || c.Events < 0 {
		errs = append(errs, errors.New("duration and events must be >= 0"))
	}
	if c.Duration == 0 && c.Events == 0 {
		errs = append(errs, errors.New("duration or events must be > 0: the run must be bounded"))
	}
	if c.Timeout <= 0 {
		errs = append(errs, errors.New("timeout must be > 0"))
	}
	if c.Conversations < 1 || c.Conversations > 1_000_000 {
		errs = append(errs, fmt.Errorf("conversations %d must be in [1, 1000000]", c.Conversations))
	}
	if c.Models < 1 || c.Models > 10_000 {
		errs = append(errs, fmt.Errorf("models %d must be in [1, 10000]", c.Models))
	}
	if c.Progress < 0 {
		errs = append(errs, errors.New("progress must be >= 0"))
	}
	if c.Drain <= 0 {
		errs = append(errs, errors.New("drain must be > 0"))
	}
	return errors.Join(errs...)
}

// CheckLoopback refuses a target whose host is not loopback: this tool floods
// its target, and the machines it runs on may only talk to themselves. Names
// other than localhost are not resolved.
func CheckLoopback(target string) error {
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return fmt.Errorf("target %q: %w", target, err)
	}
	if port == "" {
		return fmt.Errorf("target %q has no port", target)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("target %q: host must be localhost or a loopback address", target)
}

// Result is what a run did. Events and the rates count events whose
// responses arrived.
type Result struct {
	Events       int64   `json:"events"`
	Seconds      float64 `json:"seconds"`
	EventsPerSec float64 `json:"events_per_sec"`
	Requests     int64   `json:"requests"`
	Accepted     int64   `json:"accepted"`
	Duplicates   int64   `json:"duplicates"`
	Rejected     int64   `json:"rejected"`
	// Errors counts failed streams or calls and responses whose counts do not
	// add up to their request's events.
	Errors int64 `json:"errors"`
}

// checkResponse says whether a response accounts for exactly the n events of
// its request: every event accepted, a duplicate, or rejected.
func checkResponse(n int, r *pb.RecordResponse) error {
	got := uint64(r.GetAccepted()) + uint64(r.GetDuplicates()) + uint64(len(r.GetRejected()))
	if got != uint64(n) {
		return fmt.Errorf("response accounts for %d events (accepted %d, duplicates %d, rejected %d), request had %d",
			got, r.GetAccepted(), r.GetDuplicates(), len(r.GetRejected()), n)
	}
	return nil
}

// tally is the run's counters, shared by all workers through atomics.
type tally struct {
	start      time.Time
	events     atomic.Int64
	requests   atomic.Int64
	accepted   atomic.Int64
	duplicates atomic.Int64
	rejected   atomic.Int64
	errors     atomic.Int64
	lastAck    atomic.Int64 // nanoseconds from start to the latest response
	noticed    atomic.Bool  // the first rejection or mismatch was logged
	log        *slog.Logger
}

// add accounts for one response to a request of n events.
func (t *tally) add(n int, r *pb.RecordResponse) {
	t.lastAck.Store(int64(time.Since(t.start)))
	t.requests.Add(1)
	t.events.Add(int64(n))
	t.accepted.Add(int64(r.GetAccepted()))
	if d := r.GetDuplicates(); d > 0 {
		t.duplicates.Add(int64(d))
	}
	if rej := r.GetRejected(); len(rej) > 0 {
		t.rejected.Add(int64(len(rej)))
		if t.noticed.CompareAndSwap(false, true) {
			t.log.Warn("server rejected events", "first_event_id", rej[0].GetEventId(),
				"field", rej[0].GetField(), "reason", rej[0].GetReason(), "in_batch", len(rej))
		}
	}
	if err := checkResponse(n, r); err != nil {
		t.errors.Add(1)
		if t.noticed.CompareAndSwap(false, true) {
			t.log.Warn("response does not add up", "err", err)
		}
	}
}

func (t *tally) result() Result {
	r := Result{
		Events:     t.events.Load(),
		Requests:   t.requests.Load(),
		Accepted:   t.accepted.Load(),
		Duplicates: t.duplicates.Load(),
		Rejected:   t.rejected.Load(),
		Errors:     t.errors.Load(),
		Seconds:    time.Duration(t.lastAck.Load()).Seconds(),
	}
	if r.Seconds == 0 {
		r.Seconds = time.Since(t.start).Seconds()
	}
	if r.Seconds > 0 {
		r.EventsPerSec = float64(r.Events) / r.Seconds
	}
	return r
}

// frame is an encoded RecordRequest, sent as is by frameCodec.
type frame struct{ b []byte }

// frameCodec sends frames without encoding them and is the proto codec for
// everything else. Its name makes the content type application/grpc+proto.
type frameCodec struct{ proto encoding.CodecV2 }

func (c frameCodec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*frame); ok {
		return mem.BufferSlice{mem.SliceBuffer(f.b)}, nil
	}
	return c.proto.Marshal(v)
}

func (c frameCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

func (frameCodec) Name() string { return proto.Name }

// runner is one run's shared, read-only setup plus its tally.
type runner struct {
	cfg       Config
	ids       *ids
	templates []template
	call      grpc.CallOption
	tally     *tally
}

// fill builds the request for the ids first..first+n-1 into dst.
func (r *runner) fill(dst []byte, first uint64, n int) []byte {
	t := &r.templates[(first/uint64(r.cfg.Batch))%uint64(len(r.templates))]
	return t.fill(dst, r.ids, first, n, time.Now().Unix())
}

// Run sends load until Duration passes, Events are sent or ctx ends, waits up
// to Drain for the outstanding responses, and returns what happened. Timeout
// bounds all of it. The error is the first transport error; the Result is valid either
// way.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s, err := newIDs(uint64(cfg.Events))
	if err != nil {
		return Result{}, err
	}
	count := min(max(64, (cfg.Conversations+cfg.Batch-1)/cfg.Batch), max(1, ringEvents/cfg.Batch))
	templates, err := buildTemplates(s, count, cfg.Batch, cfg.Conversations, cfg.Models, time.Now().Unix())
	if err != nil {
		return Result{}, fmt.Errorf("build batches: %w", err)
	}
	for _, t := range templates {
		if len(t.b) > MaxRequestBytes {
			return Result{}, fmt.Errorf("a batch of %d events encodes to %d bytes, over %d: use a smaller batch",
				cfg.Batch, len(t.b), MaxRequestBytes)
		}
	}
	c := encoding.GetCodecV2(proto.Name)
	if c == nil {
		return Result{}, errors.New("the gRPC proto codec is not registered")
	}

	conn, err := grpc.NewClient(cfg.Target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return Result{}, fmt.Errorf("dial %s: %w", cfg.Target, err)
	}
	defer func() { _ = conn.Close() }()

	// Connect before the clock starts.
	if err := waitReady(ctx, conn, min(cfg.Timeout, 10*time.Second)); err != nil {
		return Result{}, fmt.Errorf("connect to %s: %w", cfg.Target, err)
	}

	r := &runner{
		cfg:       cfg,
		ids:       s,
		templates: templates,
		call:      grpc.ForceCodecV2(frameCodec{proto: c}),
		tally:     &tally{start: time.Now(), log: log},
	}
	// hardCtx bounds the RPCs; sendCtx stops sending when Duration passes or
	// ctx ends, after which outstanding responses get up to Drain to arrive.
	hardCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Timeout)
	defer cancel()
	sendCtx, stopSend := context.WithCancel(hardCtx)
	defer stopSend()
	defer context.AfterFunc(ctx, stopSend)()
	if cfg.Duration > 0 {
		var stop context.CancelFunc
		sendCtx, stop = context.WithTimeout(sendCtx, cfg.Duration)
		defer stop()
	}

	progressDone := make(chan struct{})
	var progressWG sync.WaitGroup
	if cfg.Progress > 0 {
		progressWG.Go(func() { r.progress(progressDone) })
	}

	workers := cfg.Streams
	if cfg.Mode == ModeUnary {
		workers = cfg.Streams * cfg.Window
	}
	errs := make([]error, workers)
	var wg sync.WaitGroup
	client := pb.NewIngestServiceClient(conn)
	for w := range workers {
		wg.Go(func() {
			if cfg.Mode == ModeUnary {
				errs[w] = r.unary(sendCtx, hardCtx, conn)
			} else {
				errs[w] = r.stream(sendCtx, hardCtx, client)
			}
			if errs[w] != nil {
				r.tally.errors.Add(1)
			}
		})
	}
	wg.Wait()
	close(progressDone)
	progressWG.Wait()

	res := r.tally.result()
	for _, err := range errs {
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// waitReady connects conn and waits until it is ready or d passes.
func waitReady(ctx context.Context, conn *grpc.ClientConn, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	conn.Connect()
	for {
		s := conn.GetState()
		if s == connectivity.Ready {
			return nil
		}
		if !conn.WaitForStateChange(ctx, s) {
			return fmt.Errorf("still %s after %s: %w", s, d, ctx.Err())
		}
	}
}

// drainContext returns a context for RPCs that outlives sendCtx by the drain
// time, so that outstanding responses can arrive after sending stops, and
// always ends when ctx does.
func (r *runner) drainContext(sendCtx, ctx context.Context) (context.Context, context.CancelFunc) {
	rpcCtx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-rpcCtx.Done():
			return
		case <-sendCtx.Done():
		}
		t := time.NewTimer(r.cfg.Drain)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-rpcCtx.Done():
		}
	}()
	return rpcCtx, cancel
}

// stream runs one RecordStream until sendCtx ends or the ids run out, with up
// to Window requests in flight, then waits for their responses.
//
// Buffer reuse: request k goes out only after the response to k-Window has
// arrived, so the server has read every request up to k-Window, and gRPC's
// writer is done with their buffers. A ring of Window+2 buffers therefore
// never overwrites one gRPC may still read; the two spare slots also give the
// race detector a happens-before edge through the stream's write quota.
func (r *runner) stream(sendCtx, ctx context.Context, client pb.IngestServiceClient) error {
	rpcCtx, cancel := r.drainContext(sendCtx, ctx)
	defer cancel()
	st, err := client.RecordStream(rpcCtx, r.call)
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	// The receiver holds one request's size while it waits for the response,
	// the channel the others: Window in flight.
	inflight := make(chan int, r.cfg.Window-1)
	recvDone := make(chan struct{})
	var recvErr error
	go func() {
		defer close(recvDone)
		recvErr = r.receive(st, inflight)
	}()

	slots := make([][]byte, r.cfg.Window+2)
	var sendErr error
send:
	for seq := 0; sendCtx.Err() == nil; seq++ {
		first, n := r.ids.reserve(uint64(r.cfg.Batch))
		if n == 0 {
			break
		}
		select {
		case inflight <- int(n):
		case <-sendCtx.Done():
			break send
		case <-recvDone:
			break send
		}
		i := seq % len(slots)
		slots[i] = r.fill(slots[i], first, int(n))
		if err := st.SendMsg(&frame{b: slots[i]}); err != nil {
			if !errors.Is(err, io.EOF) { // io.EOF: the receiver sees the real error
				sendErr = fmt.Errorf("send: %w", err)
			}
			break
		}
	}
	close(inflight)
	if err := st.CloseSend(); err != nil && sendErr == nil {
		sendErr = fmt.Errorf("close send: %w", err)
	}
	<-recvDone
	if recvErr != nil {
		return recvErr
	}
	return sendErr
}

// receive reads one response per size in inflight and accounts for it, then
// expects the server to end the stream.
func (r *runner) receive(st grpc.ClientStream, inflight <-chan int) error {
	resp := new(pb.RecordResponse)
	for n := range inflight {
		if err := st.RecvMsg(resp); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("receive: %w", err)
		}
		r.tally.add(n, resp)
	}
	switch err := st.RecvMsg(resp); {
	case errors.Is(err, io.EOF):
		return nil
	case err == nil:
		return errors.New("receive: a response without a request")
	default:
		return fmt.Errorf("receive end of stream: %w", err)
	}
}

// unary sends one Record call at a time until sendCtx ends or the ids run
// out. A call returns after the server has read its request, so a ring of
// three buffers is enough (see stream).
func (r *runner) unary(sendCtx, ctx context.Context, conn *grpc.ClientConn) error {
	rpcCtx, cancel := r.drainContext(sendCtx, ctx)
	defer cancel()
	var slots [3][]byte
	resp := new(pb.RecordResponse)
	for seq := 0; sendCtx.Err() == nil; seq++ {
		first, n := r.ids.reserve(uint64(r.cfg.Batch))
		if n == 0 {
			return nil
		}
		i := seq % len(slots)
		slots[i] = r.fill(slots[i], first, int(n))
		if err := conn.Invoke(rpcCtx, pb.IngestService_Record_FullMethodName, &frame{b: slots[i]}, resp, r.call); err != nil {
			return fmt.Errorf("record: %w", err)
		}
		r.tally.add(int(n), resp)
	}
	return nil
}

// progress logs a line every Progress until done is closed.
func (r *runner) progress(done <-chan struct{}) {
	t := time.NewTicker(r.cfg.Progress)
	defer t.Stop()
	lastAt, lastEvents := r.tally.start, int64(0)
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			ev := r.tally.events.Load()
			rate := float64(ev-lastEvents) / now.Sub(lastAt).Seconds()
			r.tally.log.Info("progress",
				"elapsed", now.Sub(r.tally.start).Round(time.Millisecond).String(),
				"events", ev,
				"events_per_sec", int64(rate),
				"accepted", r.tally.accepted.Load(),
				"duplicates", r.tally.duplicates.Load(),
				"rejected", r.tally.rejected.Load(),
				"errors", r.tally.errors.Load())
			lastAt, lastEvents = now, ev
		}
	}
}
