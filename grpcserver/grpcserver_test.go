package grpcserver

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/types/known/emptypb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testService is a service of test.Svc: Ok, Fail (NotFound), Panic, Block
// (until release is closed or the call ends) and Echo (a bidi stream).
type testService struct {
	release chan struct{}
}

func unary(method string, do func(ctx context.Context, s *testService) error) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		in := new(emptypb.Empty)
		if err := dec(in); err != nil {
			return nil, err
		}
		h := func(ctx context.Context, _ any) (any, error) { return &emptypb.Empty{}, do(ctx, srv.(*testService)) }
		return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: method}, h)
	}
}

func testDesc(name string) *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: name,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			{MethodName: "Ok", Handler: unary("/"+name+"/Ok", func(context.Context, *testService) error { return nil })},
			{MethodName: "Fail", Handler: unary("/"+name+"/Fail", func(context.Context, *testService) error { return status.Error(codes.NotFound, "no") })},
			{MethodName: "Panic", Handler: unary("/"+name+"/Panic", func(context.Context, *testService) error { panic("boom") })},
			{MethodName: "Block", Handler: unary("/"+name+"/Block", func(ctx context.Context, s *testService) error {
				select {
				case <-s.release:
				case <-ctx.Done():
				}
				return nil
			})},
		},
		Streams: []grpc.StreamDesc{{
			StreamName: "Watch", ServerStreams: true,
			Handler: func(srv any, stream grpc.ServerStream) error {
				if err := stream.RecvMsg(new(emptypb.Empty)); err != nil {
					return err
				}
				if err := stream.SendMsg(&emptypb.Empty{}); err != nil {
					return err
				}
				select {
				case <-srv.(*testService).release:
				case <-stream.Context().Done():
				}
				return nil
			},
		}, {
			StreamName: "Echo", ServerStreams: true, ClientStreams: true,
			Handler: func(_ any, stream grpc.ServerStream) error {
				for {
					in := new(emptypb.Empty)
					if err := stream.RecvMsg(in); err != nil {
						if errors.Is(err, io.EOF) {
							return nil
						}
						return err
					}
					if err := stream.SendMsg(in); err != nil {
						return err
					}
				}
			},
		}},
	}
}

func config() Config {
	return Config{
		Endpoint: "127.0.0.1:0", MaxRecvMsgSize: 1 << 20, MaxConcurrentStreams: 16, MaxConnections: 8,
		MaxInflightRPCs: 16, ReceiveTimeout: time.Minute, MaxConnectionIdle: time.Minute, HandshakeTimeout: 5 * time.Second,
	}
}

type fixture struct {
	srv  *Server
	svc  *testService
	conn *grpc.ClientConn
}

// start serves test.Svc and test.Other on a free loopback port.
func start(t *testing.T, cfg Config, deps Deps) *fixture {
	t.Helper()
	srv, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	svc := &testService{release: make(chan struct{})}
	srv.RegisterService(testDesc("test.Svc"), svc)
	srv.RegisterService(testDesc("test.Other"), svc)
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv.SetServing(true)
	conn := dial(t, srv)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := srv.Wait(); err != nil {
			t.Errorf("Wait after Shutdown = %v, want nil", err)
		}
	})
	return &fixture{srv: srv, svc: svc, conn: conn}
}

func dial(t *testing.T, srv *Server) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(srv.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func (f *fixture) call(ctx context.Context, method string) error {
	return f.conn.Invoke(ctx, method, &emptypb.Empty{}, &emptypb.Empty{})
}

// eventually polls cond until it holds or 5s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 5s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestHealthFollowsServing(t *testing.T) {
	f := start(t, config(), Deps{})
	health := healthpb.NewHealthClient(f.conn)
	check := func(svc string) healthpb.HealthCheckResponse_ServingStatus {
		resp, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Status
	}
	for _, svc := range []string{"", "test.Svc", "test.Other"} {
		if st := check(svc); st != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health(%q) = %v, want SERVING", svc, st)
		}
	}
	f.srv.SetServing(false)
	if st := check("test.Svc"); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("after SetServing(false): %v, want NOT_SERVING", st)
	}
}

// TestRefusalsCountedPerService: each service's refusals are its own, and
// a success or a client that went away is no refusal.
func TestRefusalsCountedPerService(t *testing.T) {
	f := start(t, config(), Deps{})
	ctx := context.Background()
	for range 3 {
		if err := f.call(ctx, "/test.Svc/Fail"); status.Code(err) != codes.NotFound {
			t.Fatalf("Fail = %v", err)
		}
	}
	if err := f.call(ctx, "/test.Other/Fail"); status.Code(err) != codes.NotFound {
		t.Fatalf("Fail = %v", err)
	}
	if err := f.call(ctx, "/test.Svc/Ok"); err != nil {
		t.Fatal(err)
	}
	if err := f.call(ctx, "/no.Such/Method"); status.Code(err) != codes.Unimplemented {
		t.Fatalf("unknown method = %v", err)
	}
	if n := f.srv.Refused("test.Svc", codes.NotFound); n != 3 {
		t.Errorf("test.Svc NotFound = %d, want 3", n)
	}
	if n := f.srv.Refused("test.Other", codes.NotFound); n != 1 {
		t.Errorf("test.Other NotFound = %d, want 1", n)
	}
}

func TestPanicRecoveredAndCounted(t *testing.T) {
	f := start(t, config(), Deps{})
	err := f.call(context.Background(), "/test.Other/Panic")
	if status.Code(err) != codes.Internal {
		t.Fatalf("Panic = %v, want Internal", err)
	}
	if n := f.srv.Refused("test.Other", codes.Internal); n != 1 {
		t.Errorf("refused Internal = %d, want 1", n)
	}
	if c, ok := f.srv.metrics.panics.Load("test.Other"); !ok || c.(interface{ Load() int64 }).Load() != 1 {
		t.Errorf("panics of test.Other not counted")
	}
	// The server still serves.
	if err := f.call(context.Background(), "/test.Other/Ok"); err != nil {
		t.Fatal(err)
	}
}

// TestInflightBudget: with max_inflight_rpcs calls in progress, the next is
// refused with ResourceExhausted and a RetryInfo before its request is
// read; once they end, calls go through again.
func TestInflightBudget(t *testing.T) {
	cfg := config()
	cfg.MaxInflightRPCs = 2
	f := start(t, cfg, Deps{})
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if err := f.call(ctx, "/test.Svc/Block"); err != nil {
				t.Error(err)
			}
		})
	}
	eventually(t, "two calls in flight", func() bool { return f.srv.Inflight() == 2 })
	err := f.call(ctx, "/test.Other/Ok")
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "max_inflight_rpcs") {
		t.Fatalf("third call = %v, want ResourceExhausted naming max_inflight_rpcs", err)
	}
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	if retry == nil || retry.GetRetryDelay().AsDuration() != RetryDelay {
		t.Errorf("details = %v, want a RetryInfo of %s", st.Details(), RetryDelay)
	}
	if n := f.srv.Refused("test.Other", codes.ResourceExhausted); n != 1 {
		t.Errorf("refused ResourceExhausted = %d, want 1", n)
	}
	close(f.svc.release)
	wg.Wait()
	eventually(t, "no call in flight", func() bool { return f.srv.Inflight() == 0 })
	if err := f.call(ctx, "/test.Other/Ok"); err != nil {
		t.Fatalf("after the budget freed: %v", err)
	}
}

// TestTapsRunBeforeTheBudget: a tap's refusal is the client's answer, is
// counted, and takes no in-flight slot.
func TestTapsRunBeforeTheBudget(t *testing.T) {
	var order []string
	var mu sync.Mutex
	deny := func(ctx context.Context, info *tap.Info) (context.Context, error) {
		mu.Lock()
		order = append(order, "deny")
		mu.Unlock()
		if strings.HasSuffix(info.FullMethodName, "/Fail") {
			return nil, status.Error(codes.Unauthenticated, "no token")
		}
		return ctx, nil
	}
	cfg := config()
	cfg.MaxInflightRPCs = 1
	f := start(t, cfg, Deps{Taps: []tap.ServerInHandle{deny}})
	for range 5 {
		if err := f.call(context.Background(), "/test.Svc/Fail"); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("Fail = %v, want the tap's Unauthenticated", err)
		}
	}
	if n := f.srv.Refused("test.Svc", codes.Unauthenticated); n != 5 {
		t.Errorf("refused Unauthenticated = %d, want 5", n)
	}
	if err := f.call(context.Background(), "/test.Svc/Ok"); err != nil {
		t.Fatalf("Ok after refusals = %v: a refused call kept its slot", err)
	}
}

// TestReceiveTimeoutCutsAPartialRequest sends, over raw HTTP/2, the header
// of a unary call and all but the last bytes of its message: the server
// ends the call after receive_timeout and gives its slot back.
func TestReceiveTimeoutCutsAPartialRequest(t *testing.T) {
	cfg := config()
	cfg.ReceiveTimeout = 300 * time.Millisecond
	f := start(t, cfg, Deps{})
	c, err := net.Dial("tcp", f.srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, h := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":path", "/test.Svc/Ok"}, {":authority", "x"},
		{"content-type", "application/grpc"}, {"te", "trailers"},
	} {
		_ = enc.WriteField(hpack.HeaderField{Name: h[0], Value: h[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	// A 1000-byte message, of which 10 bytes are sent.
	if err := fr.WriteData(1, false, append([]byte{0, 0, 0, 0x03, 0xe8}, make([]byte, 10)...)); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	eventually(t, "the partial call holds a slot", func() bool { return f.srv.Inflight() == 1 })
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		frame, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no end of stream 1 within 5s: %v", err)
		}
		if frame.Header().StreamID != 1 {
			continue
		}
		if h, ok := frame.(*http2.HeadersFrame); ok && !h.StreamEnded() {
			continue
		}
		break // trailers or RST_STREAM: the call is over
	}
	if d := time.Since(sent); d < cfg.ReceiveTimeout/2 {
		t.Errorf("the call ended after %v, before receive_timeout (%v)", d, cfg.ReceiveTimeout)
	}
	eventually(t, "the slot is given back", func() bool { return f.srv.Inflight() == 0 })
	if n := f.srv.Refused("test.Svc", codes.Canceled); n != 1 {
		t.Errorf("refused Canceled (the receive timeout) = %d, want 1", n)
	}
}

// TestReceiveTimeoutEndsAnIdleStream: a stream that stops sending is
// cancelled by the server, and counted.
func TestReceiveTimeoutEndsAnIdleStream(t *testing.T) {
	cfg := config()
	cfg.ReceiveTimeout = 300 * time.Millisecond
	f := start(t, cfg, Deps{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := f.conn.NewStream(ctx, &testDesc("test.Svc").Streams[1], "/test.Svc/Echo")
	if err != nil {
		t.Fatal(err)
	}
	// Messages within the timeout keep it open.
	for range 3 {
		if err := stream.SendMsg(&emptypb.Empty{}); err != nil {
			t.Fatal(err)
		}
		if err := stream.RecvMsg(new(emptypb.Empty)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(cfg.ReceiveTimeout / 3)
	}
	err = stream.RecvMsg(new(emptypb.Empty))
	if status.Code(err) != codes.Canceled {
		t.Fatalf("idle stream ended with %v, want Canceled", err)
	}
	eventually(t, "the slot is given back", func() bool { return f.srv.Inflight() == 0 })
	if n := f.srv.Refused("test.Svc", codes.Canceled); n != 1 {
		t.Errorf("refused Canceled (the receive timeout) = %d, want 1", n)
	}
}

// TestMaxConnections: a connection over max_connections is not served until
// another closes.
func TestMaxConnections(t *testing.T) {
	cfg := config()
	cfg.MaxConnections = 1
	f := start(t, cfg, Deps{})
	if err := f.call(context.Background(), "/test.Svc/Ok"); err != nil {
		t.Fatal(err)
	}
	second := dial(t, f.srv)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := second.Invoke(ctx, "/test.Svc/Ok", &emptypb.Empty{}, &emptypb.Empty{}); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("second connection's call = %v, want it to wait (DeadlineExceeded)", err)
	}
	_ = f.conn.Close()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if err := second.Invoke(ctx2, "/test.Svc/Ok", &emptypb.Empty{}, &emptypb.Empty{}, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("second connection after the first closed: %v", err)
	}
}

// failingListener fails its first Accept for good.
type failingListener struct{ net.Listener }

func (failingListener) Accept() (net.Conn, error) { return nil, errors.New("accept: listener died") }

func TestWaitReportsADeadListener(t *testing.T) {
	srv, err := New(config(), Deps{Listen: func(network, addr string) (net.Listener, error) {
		ln, err := net.Listen(network, addr)
		return failingListener{ln}, err
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := srv.Wait(); err == nil || !strings.Contains(err.Error(), "listener died") {
		t.Fatalf("Wait = %v, want the listener's error", err)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestShutdownWithoutStartAndTwice(t *testing.T) {
	srv, err := New(config(), Deps{})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err == nil {
		t.Fatal("Start after Shutdown succeeded")
	}
	select {
	case <-srv.Draining():
	default:
		t.Error("Draining not closed by Shutdown")
	}
}

// TestShutdownDeadlineCutsCalls: a call still running at the deadline is cut
// off and Shutdown says so.
func TestShutdownDeadlineCutsCalls(t *testing.T) {
	f := start(t, config(), Deps{})
	done := make(chan error, 1)
	go func() { done <- f.call(context.Background(), "/test.Svc/Block") }()
	eventually(t, "the call in flight", func() bool { return f.srv.Inflight() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := f.srv.Shutdown(ctx); err == nil || !strings.Contains(err.Error(), "cut off") {
		t.Fatalf("Shutdown = %v, want an error saying calls were cut off", err)
	}
	if err := <-done; status.Code(err) != codes.Unavailable {
		t.Errorf("cut call = %v, want Unavailable", err)
	}
}

func TestNewRefusesZeroBounds(t *testing.T) {
	cfg := config()
	cfg.MaxInflightRPCs = 0
	if _, err := New(cfg, Deps{}); err == nil {
		t.Fatal("New accepted MaxInflightRPCs 0")
	}
}

// TestServerStreamGivesBackItsSlot: a server-streaming call holds an
// in-flight slot only until its request is in, so open watches do not
// starve the calls whose requests arrive.
func TestServerStreamGivesBackItsSlot(t *testing.T) {
	cfg := config()
	cfg.MaxInflightRPCs = 1
	f := start(t, cfg, Deps{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 3 {
		stream, err := f.conn.NewStream(ctx, &testDesc("test.Svc").Streams[0], "/test.Svc/Watch")
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.SendMsg(&emptypb.Empty{}); err != nil {
			t.Fatal(err)
		}
		if err := stream.RecvMsg(new(emptypb.Empty)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "no slot held by the open watches", func() bool { return f.srv.Inflight() == 0 })
	if err := f.call(context.Background(), "/test.Svc/Ok"); err != nil {
		t.Fatalf("a call with three watches open and max_inflight_rpcs 1: %v", err)
	}
}

// TestHandshakeTimeout: a connection that never sends the HTTP/2 preface is
// closed after handshake_timeout.
func TestHandshakeTimeout(t *testing.T) {
	cfg := config()
	cfg.HandshakeTimeout = 200 * time.Millisecond
	f := start(t, cfg, Deps{})
	c, err := net.Dial("tcp", f.srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("silent connection: %v, want it closed by the server", err)
	}
	if d := time.Since(start); d < cfg.HandshakeTimeout/2 {
		t.Errorf("closed after %v, before handshake_timeout (%v)", d, cfg.HandshakeTimeout)
	}
}

// TestMaxConnectionIdle: a connection with no call for max_connection_idle
// gets a GOAWAY.
func TestMaxConnectionIdle(t *testing.T) {
	cfg := config()
	cfg.MaxConnectionIdle = 300 * time.Millisecond
	f := start(t, cfg, Deps{})
	c, err := net.Dial("tcp", f.srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		frame, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY within 5s: %v", err)
		}
		if s, ok := frame.(*http2.SettingsFrame); ok && !s.IsAck() {
			_ = fr.WriteSettingsAck()
		}
		if _, ok := frame.(*http2.GoAwayFrame); ok {
			break
		}
	}
	if d := time.Since(start); d < cfg.MaxConnectionIdle/2 {
		t.Errorf("GOAWAY after %v, before max_connection_idle (%v)", d, cfg.MaxConnectionIdle)
	}
}
