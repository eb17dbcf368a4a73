package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// OTel names of the catalogue instruments the OTLP tests read (catalog/).
const (
	otelTokens      = "agentmeter.llm.tokens"
	otelCost        = "agentmeter.llm.cost_usd"
	otelDuration    = "gen_ai.client.operation.duration"
	otelTokenUsage  = "gen_ai.client.token.usage"
	otelTransitions = "agentmeter.agent.status_transitions"
	otelEvents      = "agentmeter.receiver.events"
)

// export is one OTLP export request received by a sink.
type export struct {
	at   time.Time
	path string // HTTP only
	req  *collectorpb.ExportMetricsServiceRequest
}

// sink stores the export requests it receives, in order. delay, when set,
// holds each answer back: a slow backend.
type sink struct {
	mu      sync.Mutex
	exports []export
	delay   atomic.Int64 // nanoseconds
}

func (s *sink) add(e export) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.exports = append(s.exports, e)
}

func (s *sink) all() []export {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]export(nil), s.exports...)
}

func (s *sink) hold(ctx context.Context) {
	if d := time.Duration(s.delay.Load()); d > 0 {
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done():
		}
	}
}

// grpcSink serves the OTLP MetricsService into a sink.
type grpcSink struct {
	collectorpb.UnimplementedMetricsServiceServer
	*sink
}

func (g grpcSink) Export(ctx context.Context, req *collectorpb.ExportMetricsServiceRequest) (*collectorpb.ExportMetricsServiceResponse, error) {
	g.add(export{at: time.Now(), req: req})
	g.hold(ctx)
	return &collectorpb.ExportMetricsServiceResponse{}, nil
}

// serveOTLPGRPC serves an OTLP gRPC endpoint on addr ("127.0.0.1:0" for any
// port) into s until the returned stop is called (or the test ends).
func serveOTLPGRPC(t *testing.T, addr string, s *sink) (string, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("otlp sink: listen on %s: %v", addr, err)
	}
	srv := grpc.NewServer()
	collectorpb.RegisterMetricsServiceServer(srv, grpcSink{sink: s})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			srv.Stop()
			<-done
		})
	}
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

// metric returns the metrics of that name in an export (normally one).
func metrics(req *collectorpb.ExportMetricsServiceRequest, name string) []*metricspb.Metric {
	var out []*metricspb.Metric
	for _, rm := range req.GetResourceMetrics() {
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				if m.GetName() == name {
					out = append(out, m)
				}
			}
		}
	}
	return out
}

// attrsMatch: like labels.match, on OTel attributes (dotted keys).
func attrsMatch(kvs []*commonpb.KeyValue, want labels) bool {
	have := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		have[kv.GetKey()] = anyString(kv.GetValue())
	}
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func anyString(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_BoolValue:
		return fmt.Sprint(x.BoolValue)
	case *commonpb.AnyValue_IntValue:
		return fmt.Sprint(x.IntValue)
	case *commonpb.AnyValue_DoubleValue:
		return fmt.Sprint(x.DoubleValue)
	}
	return ""
}

// sumOf adds the Sum (or Gauge) points of name that want matches.
func sumOf(req *collectorpb.ExportMetricsServiceRequest, name string, want labels) (total float64, points int) {
	for _, m := range metrics(req, name) {
		var dps []*metricspb.NumberDataPoint
		switch d := m.GetData().(type) {
		case *metricspb.Metric_Sum:
			dps = d.Sum.GetDataPoints()
		case *metricspb.Metric_Gauge:
			dps = d.Gauge.GetDataPoints()
		}
		for _, dp := range dps {
			if !attrsMatch(dp.GetAttributes(), want) {
				continue
			}
			points++
			switch v := dp.GetValue().(type) {
			case *metricspb.NumberDataPoint_AsInt:
				total += float64(v.AsInt)
			case *metricspb.NumberDataPoint_AsDouble:
				total += v.AsDouble
			}
		}
	}
	return total, points
}

// histOf adds the histogram points of name that want matches.
func histOf(req *collectorpb.ExportMetricsServiceRequest, name string, want labels) (count uint64, sum float64, points int) {
	for _, m := range metrics(req, name) {
		for _, dp := range m.GetHistogram().GetDataPoints() {
			if attrsMatch(dp.GetAttributes(), want) {
				points++
				count += dp.GetCount()
				sum += dp.GetSum()
			}
		}
	}
	return count, sum, points
}

// tokensIn is the total of agentmeter.llm.tokens of one type.
func tokensIn(req *collectorpb.ExportMetricsServiceRequest, typ string) float64 {
	v, _ := sumOf(req, otelTokens, labels{"gen_ai.token.type": typ})
	return v
}

// fixtureMismatch compares an export with the fixture's totals and says
// what differs ("" when nothing does).
func fixtureMismatch(req *collectorpb.ExportMetricsServiceRequest) string {
	var diffs []string
	for typ, want := range fixtureTokens {
		if got := tokensIn(req, typ); got != want {
			diffs = append(diffs, fmt.Sprintf("%s{gen_ai.token.type=%s} = %v, want %v", otelTokens, typ, got, want))
		}
	}
	if got, _ := sumOf(req, otelCost, labels{}); !near(got, fixtureCost) {
		diffs = append(diffs, fmt.Sprintf("%s = %.12f, want %.12f", otelCost, got, fixtureCost))
	}
	if count, sum, _ := histOf(req, otelDuration, labels{"error.type": ""}); count != uint64(fixtureCalls) || !near(sum, fixtureLatencySum) {
		diffs = append(diffs, fmt.Sprintf("%s without error.type: count %d sum %v, want %d and %v", otelDuration, count, sum, fixtureCalls, fixtureLatencySum))
	}
	if count, _, _ := histOf(req, otelDuration, labels{"error.type": "timeout"}); count != 1 {
		diffs = append(diffs, fmt.Sprintf("%s{error.type=timeout}: count %d, want 1", otelDuration, count))
	}
	if count, sum, _ := histOf(req, otelTokenUsage, labels{"gen_ai.token.type": "input", "gen_ai.request.model": "gpt-4o"}); count != 3 || sum != 2000 {
		diffs = append(diffs, fmt.Sprintf("%s{input, gpt-4o}: count %d sum %v, want 3 and 2000", otelTokenUsage, count, sum))
	}
	for k, want := range fixtureTransitions {
		sel := labels{"gen_ai.agent.name": k[0], "agent_state": k[1]}
		if got, _ := sumOf(req, otelTransitions, sel); got != want {
			diffs = append(diffs, fmt.Sprintf("%s%v = %v, want %v", otelTransitions, sel, got, want))
		}
	}
	if got, _ := sumOf(req, otelEvents, labels{"outcome": "accepted"}); got != 17 {
		diffs = append(diffs, fmt.Sprintf("%s{outcome=accepted} = %v, want 17", otelEvents, got))
	}
	return strings.Join(diffs, "; ")
}

// checkCumulative fails t unless every sum and histogram in req is
// cumulative (sums of counters monotonic) and each point starts before it
// ends.
func checkCumulative(t *testing.T, req *collectorpb.ExportMetricsServiceRequest) {
	t.Helper()
	cum := metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE
	// A metric with no data point yet is not exported: cost and status
	// transitions may be absent when the events had none.
	optional := map[string]bool{otelCost: true, otelTransitions: true}
	for _, rm := range req.GetResourceMetrics() {
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				n := len(m.GetSum().GetDataPoints()) + len(m.GetGauge().GetDataPoints()) + len(m.GetHistogram().GetDataPoints())
				if n == 0 {
					t.Errorf("export carries %s without a data point", m.GetName())
				}
			}
		}
	}
	for _, name := range []string{otelTokens, otelCost, otelTransitions, otelEvents, otelDuration, otelTokenUsage} {
		ms := metrics(req, name)
		if len(ms) == 0 && optional[name] {
			continue
		}
		if len(ms) != 1 {
			t.Errorf("export has %d metrics named %s, want 1", len(ms), name)
			continue
		}
		switch d := ms[0].GetData().(type) {
		case *metricspb.Metric_Sum:
			if d.Sum.GetAggregationTemporality() != cum || !d.Sum.GetIsMonotonic() {
				t.Errorf("%s: temporality %v monotonic %v, want cumulative and monotonic", name, d.Sum.GetAggregationTemporality(), d.Sum.GetIsMonotonic())
			}
			for _, dp := range d.Sum.GetDataPoints() {
				if dp.GetStartTimeUnixNano() == 0 || dp.GetStartTimeUnixNano() > dp.GetTimeUnixNano() {
					t.Errorf("%s: point start %d, time %d", name, dp.GetStartTimeUnixNano(), dp.GetTimeUnixNano())
				}
			}
		case *metricspb.Metric_Histogram:
			if d.Histogram.GetAggregationTemporality() != cum {
				t.Errorf("%s: temporality %v, want cumulative", name, d.Histogram.GetAggregationTemporality())
			}
		default:
			t.Errorf("%s: data %T, want a sum or a histogram", name, d)
		}
	}
}

// startTimes maps each point of agentmeter.llm.tokens (by attributes) to its
// start time.
func startTimes(req *collectorpb.ExportMetricsServiceRequest) map[string]uint64 {
	out := map[string]uint64{}
	for _, m := range metrics(req, otelTokens) {
		for _, dp := range m.GetSum().GetDataPoints() {
			keys := make([]string, 0, len(dp.GetAttributes()))
			for _, kv := range dp.GetAttributes() {
				keys = append(keys, kv.GetKey()+"="+anyString(kv.GetValue()))
			}
			sort.Strings(keys)
			out[strings.Join(keys, ",")] = dp.GetStartTimeUnixNano()
		}
	}
	return out
}

// collectedAt is when the collector gathered an export: the time of its
// token data points (zero when it has none).
func collectedAt(req *collectorpb.ExportMetricsServiceRequest) time.Time {
	for _, m := range metrics(req, otelTokens) {
		for _, dp := range m.GetSum().GetDataPoints() {
			return time.Unix(0, int64(dp.GetTimeUnixNano()))
		}
	}
	return time.Time{}
}

// TestOTLPGRPCExport: the periodic OTLP push carries the fixture's totals,
// cumulative, with the resource attributes from the environment.
func TestOTLPGRPCExport(t *testing.T) {
	t.Parallel()
	s := &sink{}
	addr, _ := serveOTLPGRPC(t, "127.0.0.1:0", s)
	c := startCollector(t, options{
		OTLP: &otlpOptions{Endpoint: addr, Protocol: "grpc", Interval: time.Second, Timeout: time.Second},
		Env: []string{
			"OTEL_SERVICE_NAME=agentmeter-otlp-e2e",
			"OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=e2e,k8s.pod.name=agent-7",
		},
	})
	unary, batches := fixture(time.Now())
	c.record(unary...)
	for _, b := range batches {
		c.record(b...)
	}
	pushed := time.Now()

	var last export
	eventually(t, 20*time.Second, "an OTLP export with the fixture's totals", func() (bool, string) {
		ex := s.all()
		if len(ex) == 0 {
			return false, "no export received"
		}
		last = ex[len(ex)-1]
		if d := fixtureMismatch(last.req); d != "" {
			return false, fmt.Sprintf("%d exports, last: %s", len(ex), d)
		}
		return true, ""
	})
	checkCumulative(t, last.req)

	rm := last.req.GetResourceMetrics()
	if len(rm) != 1 {
		t.Fatalf("export has %d resource metrics, want 1", len(rm))
	}
	for k, want := range map[string]string{
		"service.name":                "agentmeter-otlp-e2e",
		"deployment.environment.name": "e2e",
		"k8s.pod.name":                "agent-7",
	} {
		if !attrsMatch(rm[0].GetResource().GetAttributes(), labels{k: want}) {
			t.Errorf("resource attribute %s: want %q; resource is %v", k, want, rm[0].GetResource().GetAttributes())
		}
	}

	// Every export after the push carries the same cumulative totals with
	// the same start times: wait for one more and compare.
	n := len(s.all())
	eventually(t, 10*time.Second, "another export", func() (bool, string) {
		return len(s.all()) > n, fmt.Sprintf("%d exports", len(s.all()))
	})
	ex := s.all()
	first := startTimes(ex[0].req)
	for i, e := range ex {
		// Collected after the push, not only received after it: an export
		// collected before the last Record can arrive after it.
		if !collectedAt(e.req).After(pushed) {
			continue
		}
		if d := fixtureMismatch(e.req); d != "" {
			t.Errorf("export %d after the push: %s", i, d)
		}
		for k, st := range startTimes(e.req) {
			if f, ok := first[k]; ok && f != st {
				t.Errorf("export %d: start time of %s moved from %d to %d", i, k, f, st)
			}
		}
	}
	c.stop()
}

// outageBatch is phase p's events: three calls of 100*p input tokens each.
func outageBatch(p int) []*pb.Event {
	out := make([]*pb.Event, 3)
	for i := range out {
		out[i] = simpleCall(fmt.Sprintf("outage-%d-%d", p, i), "otlp-outage-model", int64(100*p), int64(10*p))
	}
	return out
}

// TestOTLPEndpointOutage: an OTLP endpoint down when the collector starts,
// then up, then down and back: the first export each time it comes back
// carries every event pushed so far.
func TestOTLPEndpointOutage(t *testing.T) {
	t.Parallel()
	addr := freePort(t) // nothing listens here yet
	c := startCollector(t, options{
		OTLP: &otlpOptions{Endpoint: addr, Protocol: "grpc", Interval: time.Second, Timeout: time.Second},
	})

	failures := func() float64 {
		fams, _, err := c.tryScrape()
		if err != nil {
			return -1
		}
		v, _ := fams.value("agentmeter_exporter_otlp_exports_total", labels{"outcome": "failure"})
		return v
	}
	// awaitFailedExports waits until two more exports failed than had when
	// called: the second of them was collected after the call, so it (and
	// every export after it) includes what was pushed before.
	awaitFailedExports := func(phase string) {
		t.Helper()
		base := failures()
		eventually(t, 30*time.Second, phase+": two more failed OTLP exports", func() (bool, string) {
			f := failures()
			return f >= base+2, fmt.Sprintf("agentmeter_exporter_otlp_exports_total{outcome=failure} = %v, was %v", f, base)
		})
	}
	// awaitFirstExport waits for s's first export and checks its totals.
	awaitFirstExport := func(phase string, s *sink, wantInput float64) {
		t.Helper()
		eventually(t, 30*time.Second, phase+": an export", func() (bool, string) {
			return len(s.all()) > 0, "none yet"
		})
		first := s.all()[0]
		if got := tokensIn(first.req, "input"); got != wantInput {
			t.Errorf("%s: first export after the endpoint came up has input tokens %v, want %v", phase, got, wantInput)
		}
		checkCumulative(t, first.req)
	}

	// Phase 1: endpoint down from the start.
	c.record(outageBatch(1)...)
	awaitFailedExports("phase 1")
	s1 := &sink{}
	_, stop1 := serveOTLPGRPC(t, addr, s1)
	awaitFirstExport("phase 1 (endpoint up late)", s1, 300)

	// Phase 2: endpoint up.
	c.record(outageBatch(2)...)
	eventually(t, 20*time.Second, "phase 2: an export with 900 input tokens", func() (bool, string) {
		ex := s1.all()
		got := tokensIn(ex[len(ex)-1].req, "input")
		return got == 900, fmt.Sprintf("last export has %v", got)
	})
	start := startTimes(s1.all()[0].req)

	// Phase 3: endpoint goes down, events arrive, endpoint comes back.
	stop1()
	c.record(outageBatch(3)...)
	awaitFailedExports("phase 3")
	s2 := &sink{}
	serveOTLPGRPC(t, addr, s2)
	awaitFirstExport("phase 3 (endpoint back)", s2, 1800)
	if got := tokensIn(s2.all()[0].req, "output"); got != 180 {
		t.Errorf("phase 3: first export after the endpoint came back has output tokens %v, want 180", got)
	}
	for k, st := range startTimes(s2.all()[0].req) {
		if f, ok := start[k]; ok && f != st {
			t.Errorf("phase 3: start time of %s moved from %d to %d across the outage", k, f, st)
		}
	}
	// The self-metric saw the successes too.
	fams, _ := c.scrape()
	if ok, _ := fams.value("agentmeter_exporter_otlp_exports_total", labels{"outcome": "success"}); ok < 2 {
		t.Errorf("agentmeter_exporter_otlp_exports_total{outcome=success} = %v, want >= 2", ok)
	}
	c.stop()
}

// TestOTLPHTTPProtobuf: OTLP over HTTP with protobuf bodies at /v1/metrics.
func TestOTLPHTTPProtobuf(t *testing.T) {
	t.Parallel()
	s := &sink{}
	var badRequests atomic.Int64
	srv := httptest.NewServer(otlpHTTPHandler(s, &badRequests))
	t.Cleanup(srv.Close)

	c := startCollector(t, options{
		OTLP: &otlpOptions{Endpoint: otlpHTTPEndpoint(srv.URL), Protocol: "http/protobuf", Interval: time.Second, Timeout: time.Second},
	})
	unary, batches := fixture(time.Now())
	c.record(unary...)
	for _, b := range batches {
		c.record(b...)
	}
	eventually(t, 20*time.Second, "an OTLP/HTTP export with the fixture's totals", func() (bool, string) {
		if n := badRequests.Load(); n > 0 {
			return false, fmt.Sprintf("%d requests were not POST /v1/metrics with a protobuf body", n)
		}
		ex := s.all()
		if len(ex) == 0 {
			return false, "no export received"
		}
		if d := fixtureMismatch(ex[len(ex)-1].req); d != "" {
			return false, fmt.Sprintf("%d exports, last: %s", len(ex), d)
		}
		return true, ""
	})
	ex := s.all()
	checkCumulative(t, ex[len(ex)-1].req)
	c.stop()
	if n := badRequests.Load(); n > 0 {
		t.Errorf("%d OTLP/HTTP requests were not POST /v1/metrics with a protobuf body", n)
	}
}

// otlpHTTPEndpoint is exporters.otlp.endpoint for an OTLP/HTTP server at
// base (http://host:port): the full URL of the metrics path.
func otlpHTTPEndpoint(base string) string { return base + "/v1/metrics" }

// otlpHTTPHandler is an OTLP/HTTP protobuf receiver: it takes gzip or plain
// export requests at POST /v1/metrics into s, and refuses every other
// request, counting it in badRequests.
func otlpHTTPHandler(s *sink, badRequests *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/metrics" {
			badRequests.Add(1)
			http.Error(w, "want POST /v1/metrics", http.StatusNotFound)
			return
		}
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		b, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/x-protobuf" {
			badRequests.Add(1)
			http.Error(w, "content type "+ct, http.StatusUnsupportedMediaType)
			return
		}
		req := new(collectorpb.ExportMetricsServiceRequest)
		if err := proto.Unmarshal(b, req); err != nil {
			badRequests.Add(1)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.add(export{at: time.Now(), path: r.URL.Path, req: req})
		out, _ := proto.Marshal(&collectorpb.ExportMetricsServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = io.Copy(w, bytes.NewReader(out))
	})
}
