// Package grpcserver owns agentmeter's gRPC server: its listener, the
// standard health service tied to readiness, server reflection, the
// interceptors every service gets (panic recovery, refusals counted per
// service, the receive timeout), keepalive, and the global in-flight budget
// that refuses an RPC before its request is read. The ingest and usage
// services only register on it.
//
// Authentication plugs in through Deps.Taps (checked before the in-flight
// budget, so that an unauthenticated client costs nothing) and
// Deps.Options (transport credentials, more interceptors).
package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/net/netutil"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/agentmeter/agentmeter/catalog"
)

// Config configures the server. Every bound must be > 0; config.Default
// and config's Validate keep them so.
type Config struct {
	// Endpoint is the host:port to listen on.
	Endpoint string
	// MaxRecvMsgSize bounds one request message, in bytes.
	MaxRecvMsgSize int
	// MaxConcurrentStreams bounds the concurrent RPCs of one connection.
	MaxConcurrentStreams uint32
	// MaxConnections bounds the open connections; more wait in the
	// kernel's accept backlog.
	MaxConnections int
	// MaxInflightRPCs bounds the RPCs in progress across all connections
	// (a client stream for its whole life, a server stream until its
	// request is in); more are refused with ResourceExhausted and a retry
	// delay before their request is read.
	MaxInflightRPCs int
	// ReceiveTimeout bounds each wait for a request message: a unary
	// call's request, each message of a client stream. An RPC that sends
	// nothing, or part of a message, for this long is ended.
	ReceiveTimeout time.Duration
	// MaxConnectionIdle closes a connection with no RPC for this long.
	MaxConnectionIdle time.Duration
	// HandshakeTimeout bounds a new connection's setup (TLS, HTTP/2
	// preface and settings).
	HandshakeTimeout time.Duration
}

// Deps are the server's collaborators.
type Deps struct {
	Logger *slog.Logger
	// Meter receives the server's self-metrics; none when nil.
	Meter metric.Meter
	// Taps run in order on every new RPC, before its request is read and
	// before the in-flight budget is charged; the first error refuses the
	// RPC with its status (a status error, or PermissionDenied) and is
	// counted. Authentication belongs here.
	Taps []tap.ServerInHandle
	// Options are more server options (transport credentials, more
	// interceptors, which run after the server's own), applied last.
	Options []grpc.ServerOption
	// Listen opens the listener; net.Listen when nil.
	Listen func(network, address string) (net.Listener, error)
}

// RetryDelay is the delay a client refused by the in-flight budget is asked
// to wait (google.rpc.RetryInfo) before it retries.
const RetryDelay = 250 * time.Millisecond

// Keepalive enforcement: clients may ping every 10s at most, also without
// an RPC in flight; a client pinging faster is disconnected (GOAWAY
// too_many_pings), as gRPC does.
const (
	keepaliveMinTime = 10 * time.Second
	keepaliveTime    = 2 * time.Hour
	keepaliveTimeout = 20 * time.Second
)

// Server is the gRPC server. Register services before Start.
type Server struct {
	cfg     Config
	log     *slog.Logger
	listen  func(network, address string) (net.Listener, error)
	server  *grpc.Server
	health  *health.Server
	taps    []tap.ServerInHandle
	metrics metrics

	// mu guards the lifecycle fields below.
	mu       sync.Mutex
	services []string
	listener net.Listener
	started  bool
	stopped  bool
	served   chan struct{} // closed when Serve returns
	serveErr error         // what Serve returned, unless Shutdown stopped it
	draining chan struct{} // closed when Shutdown begins

	inflight atomic.Int64
	// known holds the registered service names, set by Start, before
	// any RPC can arrive.
	known map[string]bool
}

// New builds the server with health and reflection registered. Nothing
// listens until Start.
func New(cfg Config, deps Deps) (*Server, error) {
	switch {
	case cfg.MaxRecvMsgSize <= 0, cfg.MaxConcurrentStreams == 0, cfg.MaxConnections <= 0,
		cfg.MaxInflightRPCs <= 0, cfg.ReceiveTimeout <= 0, cfg.MaxConnectionIdle <= 0, cfg.HandshakeTimeout <= 0:
		return nil, fmt.Errorf("grpcserver: every bound must be > 0: %+v", cfg)
	}
	s := &Server{
		cfg:      cfg,
		log:      deps.Logger,
		listen:   deps.Listen,
		health:   health.NewServer(),
		taps:     deps.Taps,
		served:   make(chan struct{}),
		draining: make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.listen == nil {
		s.listen = net.Listen
	}
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.ForceServerCodecV2(codec{proto: encoding.GetCodecV2(grpcproto.Name)}),
		grpc.InTapHandle(s.tap),
		grpc.ConnectionTimeout(cfg.HandshakeTimeout),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: cfg.MaxConnectionIdle,
			Time:              keepaliveTime,
			Timeout:           keepaliveTimeout,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             keepaliveMinTime,
			PermitWithoutStream: true,
		}),
		grpc.ChainUnaryInterceptor(s.unaryInterceptor),
		grpc.ChainStreamInterceptor(s.streamInterceptor),
	}
	s.server = grpc.NewServer(append(opts, deps.Options...)...)
	healthpb.RegisterHealthServer(s.server, s.health)
	reflection.Register(s.server)
	s.SetServing(false)
	if deps.Meter != nil {
		if err := s.metrics.register(deps.Meter, &s.inflight); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// RegisterService implements grpc.ServiceRegistrar: the generated
// RegisterXxxServer functions take the Server. The health service answers
// for each registered service.
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	s.server.RegisterService(desc, impl)
	s.mu.Lock()
	s.services = append(s.services, desc.ServiceName)
	s.mu.Unlock()
	s.health.SetServingStatus(desc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
}

// SetServing sets what the health service answers, for the whole server
// ("") and every registered service.
func (s *Server) SetServing(serving bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.mu.Lock()
	services := append([]string{""}, s.services...)
	s.mu.Unlock()
	for _, name := range services {
		s.health.SetServingStatus(name, st)
	}
}

// Draining is closed when Shutdown begins, so that long-lived streams can
// end.
func (s *Server) Draining() <-chan struct{} { return s.draining }

// Start listens on the endpoint and serves in the background. A Serve that
// ends by itself is reported by Wait.
func (s *Server) Start(_ context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.stopped {
		return errors.New("grpcserver: Start after Start or Shutdown")
	}
	ln, err := s.listen("tcp", s.cfg.Endpoint)
	if err != nil {
		return fmt.Errorf("listen on receiver.grpc.endpoint %q: %w", s.cfg.Endpoint, err)
	}
	s.listener = ln
	s.started = true
	s.known = make(map[string]bool)
	for name := range s.server.GetServiceInfo() {
		s.known[name] = true
	}
	go func() {
		err := s.server.Serve(netutil.LimitListener(ln, s.cfg.MaxConnections))
		s.mu.Lock()
		if !s.stopped && err == nil {
			err = errors.New("grpc server stopped serving")
		}
		if !s.stopped {
			s.serveErr = fmt.Errorf("serve grpc on %s: %w", ln.Addr(), err)
		}
		s.mu.Unlock()
		close(s.served)
	}()
	s.log.Info("grpc server listening", "endpoint", ln.Addr().String())
	return nil
}

// Wait blocks until the server stops serving and returns why: nil when
// Shutdown stopped it (or it never started), the error otherwise (a
// listener that died).
func (s *Server) Wait() error {
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	if !started {
		return nil
	}
	<-s.served
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serveErr
}

// Addr is the listening address, once started.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listener == nil {
		return nil
	}
	return s.listener.Addr()
}

// Shutdown turns health NOT_SERVING, closes Draining, refuses new RPCs and
// lets in-flight ones finish until ctx's deadline, when what is left is cut
// off (and reported as an error: those clients got no answer, and resend).
// Safe without Start, idempotent: later calls return nil.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	started := s.started
	s.mu.Unlock()

	s.health.Shutdown() // NOT_SERVING for every service, now
	close(s.draining)
	if !started {
		s.server.Stop()
		return nil
	}
	stopped := make(chan struct{})
	go func() {
		s.server.GracefulStop()
		close(stopped)
	}()
	var err error
	select {
	case <-stopped:
	case <-ctx.Done():
		s.server.Stop()
		<-stopped
		err = fmt.Errorf("grpc calls still running were cut off at the shutdown deadline: %w", ctx.Err())
	}
	<-s.served
	return err
}

// serviceOf is the service of a full method name ("/pkg.Service/Method"),
// or "unknown" when it is not registered: the self-metrics' label values
// stay bounded whatever clients send.
func (s *Server) serviceOf(fullMethod string) string {
	svc, _, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if ok && s.known[svc] {
		return svc
	}
	return "unknown"
}

type watchKey struct{}

// tap runs the taps, then charges the in-flight budget; the slot is given
// back when the RPC's context ends, whatever ends it. It also arms the
// receive timeout, which the interceptors disarm once a message is in.
func (s *Server) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	service := s.serviceOf(info.FullMethodName)
	for _, t := range s.taps {
		var err error
		if ctx, err = t(ctx, info); err != nil {
			s.metrics.refuse(service, status.Code(err), codes.PermissionDenied)
			return nil, err
		}
	}
	if n := s.inflight.Add(1); n > int64(s.cfg.MaxInflightRPCs) {
		s.inflight.Add(-1)
		s.metrics.refuse(service, codes.ResourceExhausted, codes.OK)
		return nil, Exhausted(fmt.Sprintf("agentmeter has receiver.grpc.max_inflight_rpcs (%d) RPCs in flight", s.cfg.MaxInflightRPCs))
	}
	// The receive timeout cancels the call: gRPC answers CANCELLED and
	// frees what the call held. A stream handler waiting for a message is
	// told first (ReceiveExpired), so that it can end the call with a
	// status of its own. A cancel by the server is only ever this one, so
	// it is what refused{grpc_code="Canceled"} counts.
	ctx, cancel := context.WithCancel(ctx)
	cut := func() {
		if ctx.Err() != nil {
			return // the call ended meanwhile
		}
		s.metrics.count(refusal{service, codes.Canceled})
		s.log.Warn("grpc call cut: no complete request message within receiver.grpc.receive_timeout",
			"method", info.FullMethodName, "receive_timeout", s.cfg.ReceiveTimeout.String())
		cancel()
	}
	w := &recvWatch{
		d:       s.cfg.ReceiveTimeout,
		release: sync.OnceFunc(func() { s.inflight.Add(-1) }),
		expired: make(chan struct{}),
	}
	expire := sync.OnceFunc(func() { close(w.expired) })
	w.timer = time.AfterFunc(w.d, func() {
		if !w.inHandler.Load() {
			cut()
			return
		}
		expire()
		time.AfterFunc(ReceiveGrace, cut)
	})
	context.AfterFunc(ctx, func() {
		w.timer.Stop()
		w.release()
	})
	return context.WithValue(ctx, watchKey{}, w), nil
}

// ReceiveGrace is how long a stream handler told by ReceiveExpired has to
// end its call before the server cancels it.
const ReceiveGrace = time.Second

// ReceiveExpired is closed when a stream handler of this server has waited
// receiver.grpc.receive_timeout for a message: a handler that selects on it
// can end the call with a status of its own before the server cancels it
// (ReceiveGrace later). Outside a call of this server it is nil (never
// ready).
func ReceiveExpired(ctx context.Context) <-chan struct{} {
	if w := watchOf(ctx); w != nil {
		return w.expired
	}
	return nil
}

// Pushback is the trailer that asks gRPC clients with a retry policy to
// retry after RetryDelay (grpc-retry-pushback-ms), for a handler that
// answers Exhausted. A refusal by the in-flight budget cannot carry it: it
// ends the call before any metadata, with the RetryInfo alone.
func Pushback() metadata.MD {
	return metadata.Pairs("grpc-retry-pushback-ms", strconv.FormatInt(RetryDelay.Milliseconds(), 10))
}

// Exhausted is a ResourceExhausted status asking the client to retry after
// RetryDelay, for what refuses work because a bound is full.
func Exhausted(msg string) error {
	st := status.New(codes.ResourceExhausted, fmt.Sprintf("%s: retry after %s", msg, RetryDelay))
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(RetryDelay)}); err == nil {
		st = d
	}
	return st.Err()
}

// recvWatch cancels an RPC whose request message does not arrive within d:
// armed from the RPC's start until its request is in (unary), and while a
// stream handler waits in RecvMsg. It also holds the RPC's in-flight slot.
type recvWatch struct {
	d     time.Duration
	timer *time.Timer
	// release gives the in-flight slot back; idempotent.
	release func()
	// inHandler is set once the call's handler runs: from then on an
	// expiry closes expired first and cancels ReceiveGrace later.
	inHandler atomic.Bool
	expired   chan struct{}
}

func watchOf(ctx context.Context) *recvWatch {
	w, _ := ctx.Value(watchKey{}).(*recvWatch)
	return w
}

func (w *recvWatch) arm() {
	if w != nil {
		w.timer.Reset(w.d)
	}
}

func (w *recvWatch) disarm() {
	if w != nil {
		w.timer.Stop()
	}
}

// enter marks the handler as running and stops the timer: the request (a
// unary call's) or the stream is in.
func (w *recvWatch) enter() {
	if w != nil {
		w.inHandler.Store(true)
		w.timer.Stop()
	}
}

func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	// The request is in: stop the receive timer.
	watchOf(ctx).enter()
	service := s.serviceOf(info.FullMethod)
	defer s.recoverPanic(service, info.FullMethod, &err)
	resp, err = handler(ctx, req)
	s.metrics.refuse(service, status.Code(err), codes.OK)
	return resp, err
}

func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	w := watchOf(ss.Context())
	w.enter()
	service := s.serviceOf(info.FullMethod)
	defer s.recoverPanic(service, info.FullMethod, &err)
	// A server-streaming call (WatchUsage) receives its one request and
	// then only sends: its slot goes back once the request is in, so that
	// long watches do not hold the budget that bounds requests arriving.
	err = handler(srv, &watchedStream{ServerStream: ss, w: w, oneRequest: !info.IsClientStream})
	s.metrics.refuse(service, status.Code(err), codes.OK)
	return err
}

// watchedStream arms the receive timeout while the handler waits for a
// message.
type watchedStream struct {
	grpc.ServerStream
	w          *recvWatch
	oneRequest bool
}

func (ws *watchedStream) RecvMsg(m any) error {
	ws.w.arm()
	err := ws.ServerStream.RecvMsg(m)
	ws.w.disarm()
	if err == nil && ws.oneRequest && ws.w != nil {
		ws.w.release()
	}
	return err
}

func (s *Server) recoverPanic(service, method string, err *error) {
	if p := recover(); p != nil {
		s.metrics.panic(service)
		s.log.Error("panic in grpc handler", "method", method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		*err = status.Error(codes.Internal, "internal error; the request may be retried")
		s.metrics.refuse(service, codes.Internal, codes.OK)
	}
}

// metrics are the server's self-metrics: refusals by service and code,
// panics by service, RPCs in flight.
type metrics struct {
	refused sync.Map // refusal -> *atomic.Int64
	panics  sync.Map // service -> *atomic.Int64
}

type refusal struct {
	service string
	code    codes.Code
}

// refuse counts an RPC that ended with code (def when code is OK, for
// errors without a status); OK and Canceled (the client went away) are not
// refusals.
func (m *metrics) refuse(service string, code, def codes.Code) {
	if code == codes.OK {
		code = def
	}
	if code == codes.OK || code == codes.Canceled {
		return
	}
	m.count(refusal{service, code})
}

func (m *metrics) count(r refusal) {
	c, _ := m.refused.LoadOrStore(r, new(atomic.Int64))
	c.(*atomic.Int64).Add(1)
}

func (m *metrics) panic(service string) {
	c, _ := m.panics.LoadOrStore(service, new(atomic.Int64))
	c.(*atomic.Int64).Add(1)
}

// Refused is the number of RPCs of service refused with code so far.
func (s *Server) Refused(service string, code codes.Code) int64 {
	if c, ok := s.metrics.refused.Load(refusal{service, code}); ok {
		return c.(*atomic.Int64).Load()
	}
	return 0
}

// Inflight is the number of RPCs in flight.
func (s *Server) Inflight() int64 { return s.inflight.Load() }

func (m *metrics) register(meter metric.Meter, inflight *atomic.Int64) error {
	refused, err := catalog.GRPCRefused.Int64ObservableCounter(meter)
	if err != nil {
		return err
	}
	panics, err := catalog.GRPCPanics.Int64ObservableCounter(meter)
	if err != nil {
		return err
	}
	rpcs, err := catalog.GRPCInflight.Int64ObservableGauge(meter)
	if err != nil {
		return err
	}
	_, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		m.refused.Range(func(k, v any) bool {
			r := k.(refusal)
			o.ObserveInt64(refused, v.(*atomic.Int64).Load(), metric.WithAttributes(
				catalog.AttrGRPCService.String(r.service), catalog.AttrGRPCCode.String(r.code.String())))
			return true
		})
		m.panics.Range(func(k, v any) bool {
			o.ObserveInt64(panics, v.(*atomic.Int64).Load(),
				metric.WithAttributeSet(attribute.NewSet(catalog.AttrGRPCService.String(k.(string)))))
			return true
		})
		o.ObserveInt64(rpcs, inflight.Load())
		return nil
	}, refused, panics, rpcs)
	if err != nil {
		return fmt.Errorf("register grpc server callback: %w", err)
	}
	return nil
}
