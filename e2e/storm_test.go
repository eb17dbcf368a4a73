//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// The memory storms of the README: hostile or just heavy clients against a
// collector with memory.limit_mib: 128. Each storm runs against a fresh
// process, so that its peak RSS (VmHWM) is the storm's own. After each one
// the process must be alive and accept a 1-event batch within a second.

const (
	stormLimitMiB = 128
	stormMsgSize  = 4 << 20 // receiver.grpc.max_recv_msg_size_mib at its default
	stormMaxBatch = 10000   // receiver.max_events_per_request at its default
	// stormHold is how long the storms of held streams hold them.
	stormHold = 3 * time.Second
	// callTimeout bounds one call of a storm: storms are counted in calls,
	// not seconds, so that a loaded machine makes them slower, not lighter.
	callTimeout = 60 * time.Second
)

// stormConn dials the collector's gRPC endpoint; closed at the end of the test.
func stormConn(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// sendRaw sends one encoded RecordRequest (with badinput_test.go's rawCodec) and returns the call's status code.
func sendRaw(ctx context.Context, conn *grpc.ClientConn, req []byte) codes.Code {
	err := conn.Invoke(ctx, pb.IngestService_Record_FullMethodName, req, &pb.RecordResponse{}, grpc.ForceCodecV2(rawCodec{}))
	return status.Code(err)
}

// codeCounts counts the status codes the storm's calls ended with.
type codeCounts struct {
	mu sync.Mutex
	m  map[codes.Code]int
}

func (c *codeCounts) add(code codes.Code) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[codes.Code]int{}
	}
	c.m[code]++
}

func (c *codeCounts) get(code codes.Code) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[code]
}

func (c *codeCounts) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprint(c.m)
}

// concurrently runs f calls times in each of n goroutines at once, each
// call with callTimeout.
func concurrently(n, calls int, f func(ctx context.Context, worker int)) {
	var wg sync.WaitGroup
	for w := range n {
		wg.Go(func() {
			for range calls {
				ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
				f(ctx, w)
				cancel()
			}
		})
	}
	wg.Wait()
}

// fullEvent is an LLM call with every field set.
func fullEvent(id, model string) *pb.Event {
	cost := 0.0123
	return call{id: id, conv: "conv-" + id[:min(len(id), 12)], agent: "StormAgent", provider: "anthropic",
		model: model, respModel: model + "-20250514", errorType: "", prompt: 1000, completion: 200,
		cacheRead: 600, cacheWrite: 100, write1h: 10, reasoning: 50, contextWindow: 200000,
		latency: 2.5, ttft: 0.4, cost: &cost, at: time.Now()}.event()
}

// fullBatch encodes a RecordRequest of n full events with ids under prefix.
func fullBatch(t *testing.T, prefix string, n int) []byte {
	t.Helper()
	req := &pb.RecordRequest{Events: make([]*pb.Event, n)}
	for i := range n {
		req.Events[i] = fullEvent(fmt.Sprintf("%s-%06d", prefix, i), "storm-model")
	}
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > stormMsgSize {
		t.Fatalf("a full batch of %d events is %d bytes, over %d", n, len(b), stormMsgSize)
	}
	return b
}

// badUTF8Batch encodes a RecordRequest of n full events, one of whose
// request_model is not UTF-8.
func badUTF8Batch(t *testing.T, prefix string, n int) []byte {
	t.Helper()
	req := &pb.RecordRequest{Events: make([]*pb.Event, n)}
	for i := range n {
		model := "storm-model"
		if i == n/2 {
			model = "BADUTF8-MARKER"
		}
		req.Events[i] = fullEvent(fmt.Sprintf("%s-%06d", prefix, i), model)
	}
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, []byte("BADUTF8-MARKER"))
	if i < 0 {
		t.Fatal("marker not in the encoded batch")
	}
	b[i], b[i+1] = 0xff, 0xfe
	return b
}

// peakWatcher samples a process's VmRSS every 50 ms; VmHWM at the end is
// the peak, the samples say when.
type peakWatcher struct {
	pid     int
	maxRSS  atomic.Int64 // KiB
	stop    chan struct{}
	stopped chan struct{}
}

func watchPeak(pid int) *peakWatcher {
	w := &peakWatcher{pid: pid, stop: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(w.stopped)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
				if v, err := procStatusKiB(pid, "VmRSS"); err == nil && v > w.maxRSS.Load() {
					w.maxRSS.Store(v)
				}
			}
		}
	}()
	return w
}

func (w *peakWatcher) done() {
	close(w.stop)
	<-w.stopped
}

// acceptsOneEvent sends 1-event batches until one is accepted, for at most
// a second, and returns how long it took.
func acceptsOneEvent(t *testing.T, c *collector, id string) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for i := 0; time.Since(start) < time.Second; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second-time.Since(start))
		resp, err := c.ingest.Record(ctx, &pb.RecordRequest{Events: []*pb.Event{simpleCall(fmt.Sprintf("%s-%d", id, i), "after-storm", 10, 1)}})
		cancel()
		if err == nil && resp.GetAccepted() == 1 {
			return time.Since(start)
		}
		last = fmt.Sprintf("%v %v", resp, err)
		time.Sleep(20 * time.Millisecond) // between two attempts of a one-second window
	}
	t.Errorf("no 1-event batch accepted within a second after the storm; last answer: %s", last)
	return time.Since(start)
}

// TestMemoryStorms runs each storm against a collector with
// memory.limit_mib: 128 and checks that peak RSS stays at or under 128 MiB,
// the process lives, and a 1-event batch is accepted within a second after.
//
//	go test -v -run TestMemoryStorms ./e2e/
//
// Not parallel: it measures RSS, and the storms need the CPU.
func TestMemoryStorms(t *testing.T) {
	storms := []struct {
		name string
		run  func(t *testing.T, c *collector) string // returns what the clients saw
		// storage runs the collector with storage.directory set (Pebble's
		// memtables and block cache count against the limit too).
		storage bool
	}{
		{"empty events: 16 concurrent 4 MiB requests on one connection", stormEmptyEvents, false},
		{"full batches from 32 connections", stormFullBatches, false},
		{"128 streams holding all but the last byte of 4 MiB", stormPartialMessages, false},
		{"1000 silent streams", stormSilentStreams, false},
		{"over-count requests with bad UTF-8", stormOverCountBadUTF8, false},
		{"8 concurrent scrapes at the 2000-series cap", stormScrapes, false},
		{"full batches from 32 connections, storage.directory set", stormFullBatches, true},
	}
	type result struct {
		name     string
		peakMiB  float64
		idleMiB  float64
		recovery time.Duration
		clients  string
	}
	var results []result
	for i, s := range storms {
		t.Run(fmt.Sprintf("storm%d", i+1), func(t *testing.T) {
			opts := options{MemoryLimitMiB: stormLimitMiB, MaxEventsPerRequest: stormMaxBatch}
			if s.storage {
				opts.Storage = &storageOptions{Directory: t.TempDir()}
			}
			c := startCollector(t, opts)
			pid := c.cmd.Process.Pid
			idle, err := procStatusKiB(pid, "VmHWM")
			if err != nil {
				t.Fatal(err)
			}
			w := watchPeak(pid)
			clients := s.run(t, c)
			w.done()
			if c.hasExited() {
				t.Fatalf("%s: the collector died (exit %d)\n%s", s.name, c.exitCode, c.stderr.String())
			}
			hwm, err := procStatusKiB(pid, "VmHWM")
			if err != nil {
				t.Fatalf("read VmHWM after the storm: %v", err)
			}
			rec := acceptsOneEvent(t, c, fmt.Sprintf("after-storm-%d", i+1))
			r := result{name: s.name, peakMiB: float64(hwm) / 1024, idleMiB: float64(idle) / 1024, recovery: rec, clients: clients}
			results = append(results, r)
			t.Logf("storm %d (%s): peak RSS %.1f MiB (VmHWM; highest sampled VmRSS %.1f MiB, %.1f MiB before), 1-event batch accepted %v after; clients: %s",
				i+1, s.name, r.peakMiB, float64(w.maxRSS.Load())/1024, r.idleMiB, rec.Round(time.Millisecond), clients)
			if hwm > stormLimitMiB<<10 {
				t.Errorf("%s: peak RSS %.1f MiB, over memory.limit_mib %d", s.name, r.peakMiB, stormLimitMiB)
			}
			c.stop()
		})
	}
	for i, r := range results {
		t.Logf("storm %d: peak RSS %6.1f MiB  %s", i+1, r.peakMiB, r.name)
	}
}

// stormEmptyEvents (emptyEvents is bounds_test.go's): one connection, 16 concurrent Record calls of 4 MiB
// each, every event empty (2 bytes on the wire), again and again.
func stormEmptyEvents(t *testing.T, c *collector) string {
	conn := stormConn(t, c.grpcAddr)
	req := emptyEvents((stormMsgSize - 64) / 2)
	var seen codeCounts
	concurrently(16, 3, func(ctx context.Context, _ int) {
		seen.add(sendRaw(ctx, conn, req))
	})
	if n := seen.get(codes.InvalidArgument); n < 16 {
		t.Errorf("only %d requests of empty events refused with InvalidArgument: the storm did not happen (%s)", n, seen.String())
	}
	return seen.String()
}

// stormFullBatches: 32 connections, each sending full batches of 10000
// events with every field set, one after another.
func stormFullBatches(t *testing.T, c *collector) string {
	const conns = 32
	batches := make([][]byte, 4)
	for i := range batches {
		batches[i] = fullBatch(t, fmt.Sprintf("full-%d", i), stormMaxBatch)
	}
	cs := make([]*grpc.ClientConn, conns)
	for i := range cs {
		cs[i] = stormConn(t, c.grpcAddr)
	}
	var seen codeCounts
	var n atomic.Int64
	concurrently(conns, 4, func(ctx context.Context, w int) {
		seen.add(sendRaw(ctx, cs[w], batches[int(n.Add(1))%len(batches)]))
	})
	if seen.get(codes.OK) == 0 {
		t.Errorf("no full batch accepted during the storm (%s)", seen.String())
	}
	return seen.String()
}

// stormOverCountBadUTF8: requests of max_events_per_request + 1 full
// events, one of them with a request_model that is not UTF-8: refused, and
// nothing of them may stay behind. 4 at a time.
func stormOverCountBadUTF8(t *testing.T, c *collector) string {
	req := badUTF8Batch(t, "bad", stormMaxBatch+1)
	conn := stormConn(t, c.grpcAddr)
	var seen codeCounts
	concurrently(4, 25, func(ctx context.Context, _ int) {
		seen.add(sendRaw(ctx, conn, req))
	})
	if n := seen.get(codes.InvalidArgument); n < 16 {
		t.Errorf("only %d over-count requests refused with InvalidArgument: the storm did not happen (%s)", n, seen.String())
	}
	return seen.String()
}

// stormSilentStreams: 1000 RecordStream calls that send nothing, held open
// for the length of the storm, over 63 connections (16 streams each, the
// default max_concurrent_streams).
func stormSilentStreams(t *testing.T, c *collector) string {
	const streams, perConn = 1000, 16
	var seen codeCounts
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		wg     sync.WaitGroup
		opened atomic.Int64
	)
	conns := make([]*grpc.ClientConn, (streams+perConn-1)/perConn)
	for i := range conns {
		conns[i] = stormConn(t, c.grpcAddr)
	}
	for i := range streams {
		wg.Go(func() {
			client := pb.NewIngestServiceClient(conns[i/perConn])
			stream, err := client.RecordStream(ctx)
			if err != nil {
				seen.add(status.Code(err))
				return
			}
			opened.Add(1)
			_, err = stream.Recv() // ends when the server gives up on it, or the storm ends
			seen.add(status.Code(err))
		})
	}
	time.Sleep(stormHold) // the storm: the streams stay silent this long
	cancel()
	wg.Wait()
	if opened.Load() != streams {
		t.Errorf("%d of %d silent streams opened", opened.Load(), streams)
	}
	return fmt.Sprintf("%d streams opened; ended with %s", opened.Load(), seen.String())
}

// stormScrapes: 2000 LLM series (the cap), then rounds of 8 concurrent
// /metrics scrapes (gzip, as Prometheus asks) for the length of the storm.
func stormScrapes(t *testing.T, c *collector) string {
	const series = 2000
	for i := 0; i < series; i += 500 {
		batch := make([]*pb.Event, 0, 1000)
		for j := i; j < i+500; j++ {
			for k, errType := range []string{"", "timeout"} {
				ev := fullEvent(fmt.Sprintf("series-%d-%d", j, k), fmt.Sprintf("storm-model-%04d", j))
				ev.GetLlmCall().ErrorType = errType
				batch = append(batch, ev)
			}
		}
		if resp := c.record(batch...); resp.GetAccepted() != uint32(len(batch)) {
			t.Fatalf("fill the series: accepted %d of %d", resp.GetAccepted(), len(batch))
		}
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	defer client.CloseIdleConnections()
	var (
		rounds int
		got    atomic.Int64
		seen   codeCounts
	)
	for ; rounds < 3; rounds++ {
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				req, _ := http.NewRequest(http.MethodGet, "http://"+c.httpAddr+c.opts.MetricsPath, nil)
				req.Header.Set("Accept-Encoding", "gzip") // set by hand: the body stays compressed
				resp, err := client.Do(req)
				if err != nil {
					t.Errorf("scrape: %v", err)
					return
				}
				defer resp.Body.Close()
				n, _ := io.Copy(io.Discard, resp.Body)
				got.Add(n)
				seen.add(codes.Code(resp.StatusCode)) // HTTP status, counted alike
			})
		}
		wg.Wait()
	}
	// A scrape waits at most 10 s for its gather (then 503, as a
	// Prometheus scrape would time out): on a starved machine some may.
	ok, late := seen.get(codes.Code(http.StatusOK)), seen.get(codes.Code(http.StatusServiceUnavailable))
	if ok == 0 || ok+late != 8*rounds {
		t.Errorf("%d of %d scrapes answered 200 and %d 503, want every one answered and at least one 200 (%s)",
			ok, 8*rounds, late, seen.String())
	}
	return fmt.Sprintf("%d rounds of 8 scrapes, HTTP statuses %s, %d gzip bytes each", rounds, seen.String(), got.Load()/int64(8*rounds))
}

// stormPartialMessages: 128 RecordStream calls over 8 HTTP/2 connections
// (16 each) written frame by frame, each sending a gRPC message header that
// announces 4 MiB and then all of it but the last byte, and holding there
// for the length of the storm.
func stormPartialMessages(t *testing.T, c *collector) string {
	const conns, perConn = 8, 16
	var (
		wg            sync.WaitGroup
		sent, refused atomic.Int64
	)
	// The message: a gRPC prefix announcing 4 MiB, then empty events; built
	// once, it is only read.
	msg := make([]byte, 5+stormMsgSize)
	binary.BigEndian.PutUint32(msg[1:5], uint32(stormMsgSize))
	copy(msg[5:], emptyEvents(stormMsgSize/2))
	for range conns {
		h, err := dialH2(c.grpcAddr)
		if err != nil {
			t.Fatalf("open an HTTP/2 connection: %v", err)
		}
		t.Cleanup(h.close)
		wg.Go(func() {
			defer h.close() // the storm ends: the client goes away
			s, r := h.partialMessages(perConn, msg)
			sent.Add(s)
			refused.Add(r)
		})
	}
	wg.Wait()
	// The collector admits max_inflight_rpcs (16 at 128 MiB) of the calls;
	// those take their messages nearly whole.
	if sent.Load() < 32<<20 {
		t.Errorf("only %d MiB of partial messages sent: the storm did not happen", sent.Load()>>20)
	}
	return fmt.Sprintf("%d MiB of partial messages sent over %d streams; %d streams refused or reset by the server",
		sent.Load()>>20, conns*perConn, refused.Load())
}

// h2conn is a client HTTP/2 connection written frame by frame, which no
// gRPC client library lets a test do: it can leave a message unfinished.
type h2conn struct {
	conn net.Conn
	wmu  sync.Mutex // guards fr's writes
	fr   *http2.Framer

	mu         sync.Mutex // guards what follows
	cond       *sync.Cond
	connWindow int64
	initWindow int64
	windows    map[uint32]int64
	ended      map[uint32]bool
	dead       bool
}

func dialH2(addr string) (*h2conn, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	h := &h2conn{conn: conn, fr: http2.NewFramer(conn, conn), connWindow: 65535, initWindow: 65535,
		windows: map[uint32]int64{}, ended: map[uint32]bool{}}
	h.cond = sync.NewCond(&h.mu)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		conn.Close()
		return nil, err
	}
	if err := h.fr.WriteSettings(); err != nil {
		conn.Close()
		return nil, err
	}
	go h.readLoop()
	return h, nil
}

func (h *h2conn) close() {
	_ = h.conn.Close()
	h.mu.Lock()
	h.dead = true
	h.cond.Broadcast()
	h.mu.Unlock()
}

// readLoop answers the server's settings and pings and tracks the flow
// control windows and the streams the server ends.
func (h *h2conn) readLoop() {
	defer h.close()
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
			h.mu.Lock()
			_ = f.ForeachSetting(func(s http2.Setting) error {
				if s.ID == http2.SettingInitialWindowSize {
					delta := int64(s.Val) - h.initWindow
					h.initWindow = int64(s.Val)
					for id := range h.windows {
						h.windows[id] += delta
					}
				}
				return nil
			})
			h.cond.Broadcast()
			h.mu.Unlock()
			h.wmu.Lock()
			_ = h.fr.WriteSettingsAck()
			h.wmu.Unlock()
		case *http2.PingFrame:
			if !f.IsAck() {
				h.wmu.Lock()
				_ = h.fr.WritePing(true, f.Data)
				h.wmu.Unlock()
			}
		case *http2.WindowUpdateFrame:
			h.mu.Lock()
			if f.StreamID == 0 {
				h.connWindow += int64(f.Increment)
			} else {
				h.windows[f.StreamID] += int64(f.Increment)
			}
			h.cond.Broadcast()
			h.mu.Unlock()
		case *http2.MetaHeadersFrame:
			if f.StreamEnded() {
				h.endStream(f.StreamID)
			}
		case *http2.DataFrame:
			if f.StreamEnded() {
				h.endStream(f.StreamID)
			}
		case *http2.RSTStreamFrame:
			h.endStream(f.StreamID)
		case *http2.GoAwayFrame:
			return
		}
	}
}

func (h *h2conn) endStream(id uint32) {
	h.mu.Lock()
	h.ended[id] = true
	h.cond.Broadcast()
	h.mu.Unlock()
}

// partialMessages opens n RecordStream calls and sends on each all of msg
// (a length-prefixed gRPC message) but its last byte, as flow control
// allows; once every stream has sent that or been ended by the server (or
// after callTimeout), it holds them for stormHold. It returns the bytes
// sent and the number of streams the server ended.
func (h *h2conn) partialMessages(n int, msg []byte) (sent, ended int64) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	ids := make([]uint32, n)
	left := map[uint32]int{}
	for i := range ids {
		ids[i] = uint32(2*i + 1)
		hb.Reset()
		for _, kv := range [][2]string{{":method", "POST"}, {":scheme", "http"},
			{":path", pb.IngestService_RecordStream_FullMethodName}, {":authority", h.conn.RemoteAddr().String()},
			{"content-type", "application/grpc"}, {"te", "trailers"}} {
			_ = enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
		}
		h.mu.Lock()
		h.windows[ids[i]] += h.initWindow
		h.mu.Unlock()
		h.wmu.Lock()
		err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: ids[i], BlockFragment: hb.Bytes(), EndHeaders: true})
		h.wmu.Unlock()
		if err != nil {
			return sent, ended
		}
		left[ids[i]] = len(msg) - 1
	}
	stop := context.AfterFunc(ctx, func() {
		h.mu.Lock()
		h.dead = true
		h.cond.Broadcast()
		h.mu.Unlock()
	})
	defer stop()
	for len(left) > 0 {
		// Find a stream that may send, or wait for a window update.
		h.mu.Lock()
		var id uint32
		var chunk int
		for id == 0 && !h.dead {
			for _, s := range ids {
				l, ok := left[s]
				if !ok {
					continue
				}
				if h.ended[s] {
					delete(left, s)
					continue
				}
				if w := min(h.windows[s], h.connWindow); w > 0 {
					id, chunk = s, min(int(w), l, 16384)
					break
				}
			}
			if id == 0 && len(left) > 0 {
				h.cond.Wait()
			} else {
				break
			}
		}
		if h.dead || id == 0 {
			h.mu.Unlock()
			break
		}
		h.windows[id] -= int64(chunk)
		h.connWindow -= int64(chunk)
		h.mu.Unlock()
		off := len(msg) - 1 - left[id]
		h.wmu.Lock()
		err := h.fr.WriteData(id, false, msg[off:off+chunk])
		h.wmu.Unlock()
		if err != nil {
			break
		}
		sent += int64(chunk)
		if left[id] -= chunk; left[id] == 0 {
			delete(left, id)
		}
	}
	select { // hold the unfinished messages
	case <-time.After(stormHold):
	case <-ctx.Done():
	}
	h.mu.Lock()
	for _, s := range ids {
		if h.ended[s] {
			ended++
		}
	}
	h.mu.Unlock()
	return sent, ended
}
