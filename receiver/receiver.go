// Package receiver is agentmeter's ingest endpoint: the agentmeter.v1
// IngestService, registered on the grpcserver. It counts a request's events
// on the wire before decoding it, charges the in-flight memory budget,
// validates each event, hands the valid ones to a processor.Consumer, and
// answers what happened to every event.
package receiver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentmeter/agentmeter/catalog"
	"github.com/agentmeter/agentmeter/grpcserver"
	"github.com/agentmeter/agentmeter/processor"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// Config configures the receiver.
type Config struct {
	// MaxEventsPerRequest bounds the events of one request.
	MaxEventsPerRequest int
	// MaxInflightBytes bounds the estimated memory of the requests being
	// decoded and applied at once, across all connections; a request that
	// would go over it is refused with ResourceExhausted and a retry delay.
	// One request is always let through when none is in flight.
	MaxInflightBytes int64
	// Limits bound each event.
	Limits Limits
	// KeepEncoded keeps each request's wire bytes until it is answered
	// and hands them to the consumer (Consumer.Begin's encoded), which then
	// need not encode the events again; they are charged to the in-flight
	// budget. For a durable processor.
	KeepEncoded bool
}

// Deps are the receiver's collaborators.
type Deps struct {
	Logger   *slog.Logger
	Meter    metric.Meter
	Consumer processor.Consumer
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Draining is closed when the server starts shutting down, so that
	// streams end after the batch they are applying.
	Draining <-chan struct{}
}

// Receiver serves the ingest API. It holds no goroutine or listener of its
// own: the grpcserver it is registered on runs it.
type Receiver struct {
	cfg      Config
	log      *slog.Logger
	consumer processor.Consumer
	now      func() time.Time
	draining <-chan struct{}
	scratch  sync.Pool

	// inflight is the estimated memory of the requests in flight, charged
	// by request.DecodeGRPC and given back by request.release.
	inflight atomic.Int64
}

type scratch struct {
	valid   []*pb.Event
	index   []int // index in the request of valid[i]
	results []processor.Result
}

// New builds the receiver; Register puts it on a gRPC server.
func New(cfg Config, deps Deps) (*Receiver, error) {
	if deps.Consumer == nil {
		return nil, errors.New("receiver: no consumer")
	}
	if cfg.MaxEventsPerRequest <= 0 || cfg.MaxInflightBytes <= 0 {
		return nil, errors.New("receiver: MaxEventsPerRequest and MaxInflightBytes must be > 0")
	}
	r := &Receiver{
		cfg:      cfg,
		log:      deps.Logger,
		consumer: deps.Consumer,
		now:      deps.Now,
		draining: deps.Draining,
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.now == nil {
		r.now = time.Now
	}
	r.scratch.New = func() any { return &scratch{} }
	if deps.Meter != nil {
		if err := r.initMetrics(deps.Meter); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// ingestServer is what the service description's handlers call.
type ingestServer interface {
	recordStream(grpc.ServerStream) error
}

// ingestDesc is agentmeter.v1.IngestService with handlers that decode into
// a request, so that the wire count, the budget and the decode problems
// ride with it; the names and the proto file are the generated ones.
var ingestDesc = grpc.ServiceDesc{
	ServiceName: pb.IngestService_ServiceDesc.ServiceName,
	HandlerType: (*ingestServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Record",
		Handler:    recordHandler,
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "RecordStream",
		Handler:       func(srv any, stream grpc.ServerStream) error { return srv.(*Receiver).recordStream(stream) },
		ServerStreams: true,
		ClientStreams: true,
	}},
	Metadata: pb.IngestService_ServiceDesc.Metadata,
}

// Register adds the ingest service to s.
func (r *Receiver) Register(s grpc.ServiceRegistrar) {
	s.RegisterService(&ingestDesc, r)
}

func recordHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	r := srv.(*Receiver)
	q := &request{r: r}
	defer q.release()
	if err := dec(q); err != nil {
		return nil, err
	}
	handle := func(ctx context.Context, _ any) (any, error) {
		resp, err := r.applyRequest(ctx, q)
		if status.Code(err) == codes.ResourceExhausted {
			_ = grpc.SetTrailer(ctx, grpcserver.Pushback())
		}
		return resp, err
	}
	if interceptor == nil {
		return handle(ctx, q)
	}
	return interceptor(ctx, q, &grpc.UnaryServerInfo{Server: srv, FullMethod: pb.IngestService_Record_FullMethodName}, handle)
}

// A stream's requests are pipelined: up to streamPipeline of them (and at
// most streamPipelineBytes of the in-flight budget, or a quarter of it when
// that is less) are received and decoded ahead, and started in order, before
// the first is answered, so that their durable writes share fsyncs. Answers
// go back in request order. Receiving runs ahead of starting, so that a
// stream's decoding overlaps its applying. The bound counts every request
// of the stream between its receipt and its answer: a deeper pipeline takes
// no more of the budget than one stream's share.
const (
	streamPipeline      = 32
	streamPipelineBytes = 4 << 20
)

// streamCall is a request of a stream between its start and its answer.
type streamCall struct {
	q *request
	a *applying
}

// streamHeld is what a stream's requests between receipt and answer hold:
// the receiving goroutine waits for room before it reads the next one.
type streamHeld struct {
	mu    sync.Mutex
	n     int
	bytes int64
	freed chan struct{} // a token when room was made
}

func (h *streamHeld) add(q *request) {
	h.mu.Lock()
	h.n++
	h.bytes += q.charged
	h.mu.Unlock()
}

func (h *streamHeld) remove(q *request) {
	h.mu.Lock()
	h.n--
	h.bytes -= q.charged
	h.mu.Unlock()
	select {
	case h.freed <- struct{}{}:
	default:
	}
}

func (h *streamHeld) full(maxBytes int64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n >= streamPipeline || h.bytes >= maxBytes
}

// recordStream serves IngestService.RecordStream: one response per
// request, in order. When the server drains, the stream ends after the
// batches already started were answered, or at once when it is idle, with
// Unavailable: every batch answered was applied, and no other was.
func (r *Receiver) recordStream(stream grpc.ServerStream) error {
	ctx := stream.Context()
	maxBytes := min(streamPipelineBytes, r.cfg.MaxInflightBytes/4)
	held := &streamHeld{freed: make(chan struct{}, 1)}
	// Recv runs in its own goroutine, ahead of the requests' start while
	// the pipeline has room, so that an idle stream does not hold up
	// shutdown; it ends when the stream's context does. What it received
	// and was not started when the stream ended gives its budget back.
	next := make(chan *request, streamPipeline)
	go func() {
		defer close(next)
		for {
			for held.full(maxBytes) {
				select {
				case <-held.freed:
				case <-ctx.Done():
					return
				}
			}
			q := &request{r: r}
			if err := stream.RecvMsg(q); err != nil {
				q.release()
				q = &request{recvErr: err}
			}
			held.add(q)
			next <- q // room: held counts it
			if q.recvErr != nil {
				return
			}
		}
	}()
	var queue []streamCall // started, not answered, in request order
	// Started requests left unanswered when the stream ends are still
	// applied: give their budget back when they are; those received and
	// not started, at once.
	defer func() {
		go func(left []streamCall) {
			for _, c := range left {
				_, _ = c.a.answer()
				c.q.release()
			}
			for q := range next {
				q.release()
			}
		}(queue)
	}()
	answerHead := func() error {
		c := queue[0]
		queue[0] = streamCall{}
		queue = queue[1:]
		resp, err := c.a.answer()
		held.remove(c.q) // before release, which zeroes its charge
		c.q.release()
		if err != nil {
			if status.Code(err) == codes.ResourceExhausted {
				stream.SetTrailer(grpcserver.Pushback())
			}
			return err
		}
		return stream.SendMsg(resp)
	}
	answerAll := func() error {
		for len(queue) > 0 {
			if err := answerHead(); err != nil {
				return err
			}
		}
		return nil
	}
	expired := grpcserver.ReceiveExpired(ctx)
	for {
		var head <-chan struct{}
		if len(queue) > 0 {
			head = queue[0].a.done()
			select {
			case <-head:
				if err := answerHead(); err != nil {
					return err
				}
				continue
			default:
			}
		}
		select {
		case q, ok := <-next:
			if !ok { // the stream's context ended
				return status.FromContextError(ctx.Err()).Err()
			}
			if errors.Is(q.recvErr, io.EOF) {
				return answerAll()
			}
			if q.recvErr != nil {
				return q.recvErr
			}
			queue = append(queue, streamCall{q: q, a: r.startRequest(ctx, q)})
		case <-head:
		case <-r.draining:
			if err := answerAll(); err != nil {
				return err
			}
			return errDraining
		case <-expired:
			if err := answerAll(); err != nil {
				return err
			}
			return errIdle
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// applyRequest answers a decoded request: refused as a whole, or applied.
func (r *Receiver) applyRequest(ctx context.Context, q *request) (*pb.RecordResponse, error) {
	return r.startRequest(ctx, q).answer()
}

// startRequest starts applying a decoded request.
func (r *Receiver) startRequest(ctx context.Context, q *request) *applying {
	if q.refused != nil {
		return &applying{err: q.refused}
	}
	return r.start(ctx, &q.msg, q.issues, q.encoded())
}

var errDraining = status.Error(codes.Unavailable,
	"agentmeter is shutting down: every batch answered on this stream was applied, no other was")

var errIdle = status.Error(codes.Unavailable,
	"no complete batch on this stream within receiver.grpc.receive_timeout: the stream is closed; every batch answered on it was applied, no other was; open a new one")

// applying is a request between start and answer: validated, and its valid
// events handed to the consumer.
type applying struct {
	r       *Receiver
	events  []*pb.Event // the request's
	resp    *pb.RecordResponse
	err     error
	sc      *scratch           // valid events, their indexes and results
	pending *processor.Pending // nil when nothing went to the consumer
}

// apply validates and consumes one request; decodeIssues are its events
// that could not be decoded, by index.
func (r *Receiver) apply(ctx context.Context, req *pb.RecordRequest, decodeIssues map[int]decodeIssue) (*pb.RecordResponse, error) {
	return r.start(ctx, req, decodeIssues, nil).answer()
}

// start validates the request's events and begins consuming the valid ones;
// encoded, when known, is req's encoding, kept until the answer.
func (r *Receiver) start(ctx context.Context, req *pb.RecordRequest, decodeIssues map[int]decodeIssue, encoded []byte) *applying {
	events := req.GetEvents()
	if len(events) > r.cfg.MaxEventsPerRequest {
		return &applying{err: errTooManyEvents(len(events), r.cfg.MaxEventsPerRequest)}
	}
	now := r.now()
	a := &applying{r: r, events: events, resp: &pb.RecordResponse{}}

	sc := r.scratch.Get().(*scratch)
	sc.valid, sc.index = sc.valid[:0], sc.index[:0]
	for i, ev := range events {
		var field, reason string
		ok := true
		if issue, bad := decodeIssues[i]; bad {
			field, reason, ok = issue.field, issue.reason, false
		} else {
			field, reason, ok = Validate(ev, now, r.cfg.Limits)
		}
		if !ok {
			reject(a.resp, i, ev, field, reason)
			continue
		}
		sc.valid = append(sc.valid, ev)
		sc.index = append(sc.index, i)
	}
	n := len(sc.valid)
	if n == 0 {
		r.scratch.Put(sc)
		r.refused(events, a.resp.Rejected)
		return a
	}
	if cap(sc.results) < n {
		sc.results = make([]processor.Result, n)
	}
	a.sc = sc
	if n != len(events) {
		encoded = nil // it has the rejected ones too
	}
	a.pending = r.consumer.Begin(ctx, sc.valid, encoded, now, sc.results[:n])
	return a
}

// done is closed when answer no longer blocks.
func (a *applying) done() <-chan struct{} {
	if a.pending == nil {
		return processor.Ended(nil).Done()
	}
	return a.pending.Done()
}

// answer waits until the request was applied and returns its response, or
// the status it is refused with. Call it once.
func (a *applying) answer() (*pb.RecordResponse, error) {
	if a.pending == nil {
		return a.resp, a.err
	}
	r, resp, sc := a.r, a.resp, a.sc
	a.sc = nil
	results := sc.results[:len(sc.valid)]
	defer func() {
		clear(results)
		clear(sc.valid) // drop the references to the request's events
		r.scratch.Put(sc)
	}()
	if err := a.pending.Wait(); err != nil {
		return nil, storeError(err)
	}
	// The validator's rejections are counted once the request is answered
	// (a batch the processor could not store is sent again, whole).
	refused := len(resp.Rejected)
	r.refused(a.events, resp.Rejected)
	for i, res := range results {
		switch res.Outcome {
		case processor.Accepted:
			resp.Accepted++
		case processor.Duplicate:
			resp.Duplicates++
		default:
			reject(resp, sc.index[i], sc.valid[i], res.Field, res.Reason)
		}
	}
	if refused > 0 && len(resp.Rejected) > refused {
		// Rejections by the processor were appended after the
		// validator's; keep them all in request order.
		slices.SortFunc(resp.Rejected, func(a, b *pb.Rejection) int { return cmp.Compare(a.Index, b.Index) })
	}
	return resp, nil
}

// storeError is the status of a batch the processor could not store:
// nothing of it was applied, and the client should send it again later.
func storeError(err error) error {
	if errors.Is(err, processor.ErrPanic) {
		return status.Error(codes.Internal, "agentmeter failed on this batch (a bug, logged); resend it: what of it was stored counts once")
	}
	if errors.Is(err, processor.ErrStorageFull) {
		return status.Error(codes.ResourceExhausted,
			"agentmeter's storage is full: nothing of this batch was stored; retry later")
	}
	return status.Errorf(codes.Unavailable, "agentmeter could not store this batch, nothing of it was applied; retry: %v", err)
}

// refused hands the events the validator rejected to the processor, which
// counts every outcome.
func (r *Receiver) refused(events []*pb.Event, rejected []*pb.Rejection) {
	for _, rj := range rejected {
		r.consumer.Refused(events[rj.Index])
	}
}

// reject lists event i of the request as rejected. The processor counts it
// (Consumer.Refused, or its own rejections).
func reject(resp *pb.RecordResponse, i int, ev *pb.Event, field, reason string) {
	resp.Rejected = append(resp.Rejected, &pb.Rejection{
		Index:   uint32(i),
		EventId: printable(ev.GetEventId()),
		Field:   field,
		Reason:  reason,
	})
}

// printable makes an event id safe to echo in a response: valid UTF-8, at
// most 256 bytes.
func printable(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) > 256 {
		s = s[:256]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return s
}

func (r *Receiver) initMetrics(m metric.Meter) error {
	inflight, err := catalog.ReceiverInflightBytes.Int64ObservableGauge(m)
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(inflight, r.inflight.Load())
		return nil
	}, inflight)
	if err != nil {
		return fmt.Errorf("register receiver callback: %w", err)
	}
	return nil
}
