// Package receiver is agentmeter's ingest endpoint: the agentmeter.v1
// IngestService over gRPC, with the standard health service and server
// reflection on the same port. It validates each event, hands the valid ones
// to a processor.Consumer, and answers what happened to every event.
package receiver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/agentmeter/agentmeter/catalog"
	"github.com/agentmeter/agentmeter/processor"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// Config configures the receiver.
type Config struct {
	// Endpoint is the host:port to listen on.
	Endpoint string
	// MaxRecvMsgSize bounds one request message, in bytes.
	MaxRecvMsgSize int
	// MaxConcurrentStreams bounds the concurrent RPCs of one connection.
	MaxConcurrentStreams uint32
	// MaxEventsPerRequest bounds the events of one request.
	MaxEventsPerRequest int
	// Limits bound each event.
	Limits Limits
}

// Deps are the receiver's collaborators.
type Deps struct {
	Logger   *slog.Logger
	Meter    metric.Meter
	Consumer processor.Consumer
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Register adds more services to the gRPC server (the usage API);
	// draining is closed when the receiver starts shutting down, so that
	// long-lived streams can end.
	Register func(s *grpc.Server, draining <-chan struct{})
}

// Receiver serves the ingest API.
type Receiver struct {
	pb.UnimplementedIngestServiceServer

	cfg      Config
	log      *slog.Logger
	consumer processor.Consumer
	now      func() time.Time
	server   *grpc.Server
	health   *health.Server
	codec    *lenientCodec
	listener net.Listener
	served   chan struct{}
	draining chan struct{}
	stopOnce sync.Once
	scratch  sync.Pool

	// events[type][outcome] counts events for the self-metrics.
	events   [numEventTypes][numOutcomes]atomic.Int64
	refused  sync.Map // codes.Code -> *atomic.Int64
	panics   atomic.Int64
	eventSet [numEventTypes][numOutcomes]attribute.Set
}

// Event types of the self-metrics, by payload.
const (
	typeLLMCall = iota
	typeAgentStatus
	typeConversation
	typeRuntimeFault
	typeNone
	numEventTypes
)

var eventTypeNames = [numEventTypes]string{"llm_call", "agent_status", "conversation", "runtime_fault", "none"}

const (
	outAccepted = iota
	outDuplicate
	outRejected
	numOutcomes
)

var outcomeNames = [numOutcomes]string{catalog.OutcomeAccepted, catalog.OutcomeDuplicate, catalog.OutcomeRejected}

func eventType(ev *pb.Event) int {
	switch ev.GetPayload().(type) {
	case *pb.Event_LlmCall:
		return typeLLMCall
	case *pb.Event_AgentStatus:
		return typeAgentStatus
	case *pb.Event_Conversation:
		return typeConversation
	case *pb.Event_RuntimeFault:
		return typeRuntimeFault
	}
	return typeNone
}

type scratch struct {
	valid   []*pb.Event
	index   []int // index in the request of valid[i]
	types   []int
	results []processor.Result
}

// New builds the gRPC server. Nothing listens until Start.
func New(cfg Config, deps Deps) (*Receiver, error) {
	if deps.Consumer == nil {
		return nil, errors.New("receiver: no consumer")
	}
	if cfg.MaxEventsPerRequest <= 0 || cfg.MaxRecvMsgSize <= 0 {
		return nil, errors.New("receiver: MaxEventsPerRequest and MaxRecvMsgSize must be > 0")
	}
	r := &Receiver{
		cfg:      cfg,
		log:      deps.Logger,
		consumer: deps.Consumer,
		now:      deps.Now,
		health:   health.NewServer(),
		served:   make(chan struct{}),
		draining: make(chan struct{}),
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.now == nil {
		r.now = time.Now
	}
	r.scratch.New = func() any { return &scratch{} }
	r.codec = newLenientCodec()
	r.server = grpc.NewServer(
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.ForceServerCodecV2(r.codec),
		grpc.ChainUnaryInterceptor(r.unaryInterceptor),
		grpc.ChainStreamInterceptor(r.streamInterceptor),
	)
	pb.RegisterIngestServiceServer(r.server, r)
	healthpb.RegisterHealthServer(r.server, r.health)
	reflection.Register(r.server)
	if deps.Register != nil {
		deps.Register(r.server, r.draining)
	}
	r.SetServing(false)
	if deps.Meter != nil {
		if err := r.initMetrics(deps.Meter); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// SetServing sets what the gRPC health service answers, for the whole
// server ("") and for agentmeter.v1.IngestService.
func (r *Receiver) SetServing(serving bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	r.health.SetServingStatus("", st)
	r.health.SetServingStatus(pb.IngestService_ServiceDesc.ServiceName, st)
}

// Start listens on the endpoint and serves in the background.
func (r *Receiver) Start(_ context.Context) error {
	ln, err := net.Listen("tcp", r.cfg.Endpoint)
	if err != nil {
		return fmt.Errorf("listen on receiver.grpc.endpoint %q: %w", r.cfg.Endpoint, err)
	}
	r.listener = ln
	go func() {
		defer close(r.served)
		if err := r.server.Serve(ln); err != nil {
			r.log.Error("grpc server stopped", "err", err)
		}
	}()
	r.log.Info("grpc ingest listening", "endpoint", ln.Addr().String())
	return nil
}

// Addr is the listening address, once started.
func (r *Receiver) Addr() net.Addr {
	if r.listener == nil {
		return nil
	}
	return r.listener.Addr()
}

// Shutdown turns health NOT_SERVING, refuses new RPCs and lets in-flight
// ones finish: a stream ends after the batch it is applying. At ctx's
// deadline, what is left is cut off. Safe without Start, idempotent.
func (r *Receiver) Shutdown(ctx context.Context) error {
	r.stopOnce.Do(func() {
		r.health.Shutdown() // NOT_SERVING for every service, now
		close(r.draining)
		if r.listener == nil {
			r.server.Stop()
			return
		}
		stopped := make(chan struct{})
		go func() {
			r.server.GracefulStop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-ctx.Done():
			// Whatever is still in flight was not answered, so its client
			// knows to resend it.
			r.log.Warn("grpc calls cut off at the shutdown deadline")
			r.server.Stop()
			<-stopped
		}
		<-r.served
	})
	return nil
}

// Record implements IngestService.Record.
func (r *Receiver) Record(ctx context.Context, req *pb.RecordRequest) (*pb.RecordResponse, error) {
	return r.apply(ctx, req)
}

// RecordStream implements IngestService.RecordStream: one response per
// request, in order. When the receiver drains, the stream ends after the
// batch being applied, or at once when it is idle, with Unavailable: every
// batch answered was applied, and no other was.
func (r *Receiver) RecordStream(stream pb.IngestService_RecordStreamServer) error {
	ctx := stream.Context()
	type received struct {
		req *pb.RecordRequest
		err error
	}
	// Recv runs in its own goroutine so that an idle stream does not hold
	// up shutdown; it ends when the stream's context does.
	next := make(chan received)
	go func() {
		for {
			req, err := stream.Recv()
			select {
			case next <- received{req, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		var in received
		select {
		case in = <-next:
		case <-r.draining:
			return errDraining
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
		if errors.Is(in.err, io.EOF) {
			return nil
		}
		if in.err != nil {
			return in.err
		}
		resp, err := r.apply(ctx, in.req)
		if err != nil {
			return err
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

var errDraining = status.Error(codes.Unavailable,
	"agentmeter is shutting down: every batch answered on this stream was applied, no other was")

// apply validates and consumes one request.
func (r *Receiver) apply(ctx context.Context, req *pb.RecordRequest) (*pb.RecordResponse, error) {
	events := req.GetEvents()
	if len(events) > r.cfg.MaxEventsPerRequest {
		return nil, status.Errorf(codes.InvalidArgument,
			"request has %d events, more than receiver.max_events_per_request (%d): split it into smaller batches",
			len(events), r.cfg.MaxEventsPerRequest)
	}
	now := r.now()
	resp := &pb.RecordResponse{}
	decodeIssues := r.codec.take(req)

	sc := r.scratch.Get().(*scratch)
	sc.valid, sc.index, sc.types = sc.valid[:0], sc.index[:0], sc.types[:0]
	for i, ev := range events {
		typ := eventType(ev)
		var field, reason string
		ok := true
		if issue, bad := decodeIssues[i]; bad {
			field, reason, ok = issue.field, issue.reason, false
		} else {
			field, reason, ok = Validate(ev, now, r.cfg.Limits)
		}
		if !ok {
			r.reject(resp, i, ev, typ, field, reason)
			continue
		}
		sc.valid = append(sc.valid, ev)
		sc.index = append(sc.index, i)
		sc.types = append(sc.types, typ)
	}
	if n := len(sc.valid); n > 0 {
		if cap(sc.results) < n {
			sc.results = make([]processor.Result, n)
		}
		results := sc.results[:n]
		r.consumer.Consume(ctx, sc.valid, now, results)
		var tally [numEventTypes][2]int64
		validatorRejections := len(resp.Rejected)
		for i, res := range results {
			switch res.Outcome {
			case processor.Accepted:
				tally[sc.types[i]][outAccepted]++
				resp.Accepted++
			case processor.Duplicate:
				tally[sc.types[i]][outDuplicate]++
				resp.Duplicates++
			default:
				r.reject(resp, sc.index[i], sc.valid[i], sc.types[i], res.Field, res.Reason)
			}
		}
		for t := range numEventTypes {
			for o := range 2 {
				if tally[t][o] > 0 {
					r.events[t][o].Add(tally[t][o])
				}
			}
		}
		clear(results)
		if validatorRejections > 0 && len(resp.Rejected) > validatorRejections {
			// Rejections by the processor were appended after the
			// validator's; keep them all in request order.
			slices.SortFunc(resp.Rejected, func(a, b *pb.Rejection) int { return cmp.Compare(a.Index, b.Index) })
		}
	}
	clear(sc.valid) // drop the references to the request's events
	r.scratch.Put(sc)
	return resp, nil
}

// reject lists event i of the request as rejected and counts it.
func (r *Receiver) reject(resp *pb.RecordResponse, i int, ev *pb.Event, typ int, field, reason string) {
	r.events[typ][outRejected].Add(1)
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

func (r *Receiver) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer r.recoverPanic(info.FullMethod, &err)
	resp, err = handler(ctx, req)
	r.countRefused(err)
	return resp, err
}

func (r *Receiver) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer r.recoverPanic(info.FullMethod, &err)
	err = handler(srv, ss)
	r.countRefused(err)
	return err
}

func (r *Receiver) recoverPanic(method string, err *error) {
	if p := recover(); p != nil {
		r.panics.Add(1)
		r.log.Error("panic in grpc handler", "method", method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		*err = status.Error(codes.Internal, "internal error; the request may be retried")
	}
}

func (r *Receiver) countRefused(err error) {
	if err == nil {
		return
	}
	code := status.Code(err)
	if code == codes.Canceled || code == codes.OK {
		return
	}
	c, _ := r.refused.LoadOrStore(code, new(atomic.Int64))
	c.(*atomic.Int64).Add(1)
}

func (r *Receiver) initMetrics(m metric.Meter) error {
	for t := range numEventTypes {
		for o := range numOutcomes {
			r.eventSet[t][o] = attribute.NewSet(
				catalog.AttrEventType.String(eventTypeNames[t]),
				catalog.AttrOutcome.String(outcomeNames[o]),
			)
		}
	}
	events, err := catalog.ReceiverEvents.Int64ObservableCounter(m)
	if err != nil {
		return err
	}
	refused, err := catalog.ReceiverRequests.Int64ObservableCounter(m)
	if err != nil {
		return err
	}
	panics, err := catalog.ReceiverPanics.Int64ObservableCounter(m)
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for t := range numEventTypes {
			for oc := range numOutcomes {
				// The "none" type only ever has rejections.
				if t == typeNone && oc != outRejected {
					continue
				}
				o.ObserveInt64(events, r.events[t][oc].Load(), metric.WithAttributeSet(r.eventSet[t][oc]))
			}
		}
		r.refused.Range(func(k, v any) bool {
			o.ObserveInt64(refused, v.(*atomic.Int64).Load(),
				metric.WithAttributes(catalog.AttrGRPCCode.String(k.(codes.Code).String())))
			return true
		})
		o.ObserveInt64(panics, r.panics.Load())
		return nil
	}, events, refused, panics)
	if err != nil {
		return fmt.Errorf("register receiver callback: %w", err)
	}
	return nil
}

// eventCount is the number of events of payload type typ ("llm_call", ...)
// with outcome ("accepted", "duplicate", "rejected") so far. For tests.
func (r *Receiver) eventCount(typ, outcome string) int64 {
	for t := range numEventTypes {
		for o := range numOutcomes {
			if eventTypeNames[t] == typ && outcomeNames[o] == outcome {
				return r.events[t][o].Load()
			}
		}
	}
	return 0
}
