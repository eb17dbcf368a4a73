package e2e

import (
	"fmt"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// eventSeries is one point of agentmeter.receiver.events in an OTLP export.
type eventSeries struct {
	value int64
	start uint64
}

// eventSeriesOf are the llm_call points of agentmeter.receiver.events in
// an export, by outcome.
func eventSeriesOf(req *collectorpb.ExportMetricsServiceRequest) map[string]eventSeries {
	out := map[string]eventSeries{}
	for _, m := range metrics(req, otelEvents) {
		for _, dp := range m.GetSum().GetDataPoints() {
			if !attrsMatch(dp.GetAttributes(), labels{"event_type": "llm_call"}) {
				continue
			}
			for _, kv := range dp.GetAttributes() {
				if kv.GetKey() == "outcome" {
					out[anyString(kv.GetValue())] = eventSeries{dp.GetAsInt(), dp.GetStartTimeUnixNano()}
				}
			}
		}
	}
	return out
}

// processStart is the start time of agentmeter.exporter.otlp.exports, one
// of the counters of the process itself, in the last export after
// exportsBefore; 0 when there is none.
func processStart(s *sink, exportsBefore int) uint64 {
	ex := s.all()
	if len(ex) <= exportsBefore {
		return 0
	}
	for _, m := range metrics(ex[len(ex)-1].req, "agentmeter.exporter.otlp.exports") {
		for _, dp := range m.GetSum().GetDataPoints() {
			return dp.GetStartTimeUnixNano()
		}
	}
	return 0
}

// TestEventCountsAcrossRestarts: with storage.directory set,
// agentmeter_receiver_events_total continues across restarts. Accepted
// events are counted exactly across a clean restart and a kill -9 (the log
// replay counts them), under the same OTLP start time. Duplicates and
// rejections continue across a clean restart under the same start time;
// after a kill -9 they start again at zero under a new start time: a
// counter reset, never a decrease under the same start time. The counters
// of the process itself start again at every start, under a new start
// time.
func TestEventCountsAcrossRestarts(t *testing.T) {
	t.Parallel()
	s := &sink{}
	otlpAddr, _ := serveOTLPGRPC(t, "127.0.0.1:0", s)
	opts := options{
		// No periodic snapshot within the test: what a kill -9 keeps
		// comes from the snapshot written at start and the log.
		Storage: &storageOptions{Directory: t.TempDir(), SnapshotInterval: time.Hour},
		OTLP:    &otlpOptions{Endpoint: otlpAddr, Protocol: "grpc", Interval: 200 * time.Millisecond, Timeout: 200 * time.Millisecond},
	}
	const model = "restart-count-model"
	n := 0
	// send sends accepted new calls, duplicates of a call already sent and
	// calls with negative tokens (rejected), each in its own request.
	send := func(c *collector, accepted, duplicates, rejected int) {
		t.Helper()
		for range accepted {
			n++
			checkResponse(t, "new call", c.record(simpleCall(fmt.Sprintf("rc-%d", n), model, 10, 1)), &pb.RecordResponse{Accepted: 1})
		}
		for range duplicates {
			checkResponse(t, "resent call", c.record(simpleCall("rc-1", model, 10, 1)), &pb.RecordResponse{Duplicates: 1})
		}
		for i := range rejected {
			resp := c.record(simpleCall(fmt.Sprintf("rc-bad-%d-%d", n, i), model, -1, 1))
			if len(resp.GetRejected()) != 1 {
				t.Fatalf("call with negative tokens: %v, want rejected", resp)
			}
		}
	}
	// check compares /metrics and this process's OTLP export with want
	// (accepted, duplicate, rejected), and returns the export's points.
	check := func(c *collector, what string, exportsBefore int, want [3]int64) map[string]eventSeries {
		t.Helper()
		fams, _ := c.scrape()
		for i, outcome := range []string{"accepted", "duplicate", "rejected"} {
			if v, _ := fams.value("agentmeter_receiver_events_total", labels{"event_type": "llm_call", "outcome": outcome}); int64(v) != want[i] {
				t.Errorf("%s: /metrics agentmeter_receiver_events_total{llm_call,%s} = %v, want %d", what, outcome, v, want[i])
			}
		}
		var got map[string]eventSeries
		eventually(t, 10*time.Second, what+": an OTLP export of this process with the counts", func() (bool, string) {
			ex := s.all()
			if len(ex) <= exportsBefore {
				return false, "no export yet"
			}
			got = eventSeriesOf(ex[len(ex)-1].req)
			return got["accepted"].value == want[0] && got["duplicate"].value == want[1] && got["rejected"].value == want[2],
				fmt.Sprintf("%v, want %v", got, want)
		})
		return got
	}
	sameStart := func(what string, got, was map[string]eventSeries, outcomes ...string) {
		t.Helper()
		for _, o := range outcomes {
			if got[o].start != was[o].start {
				t.Errorf("%s: OTLP start time of {llm_call,%s} is %d, was %d", what, o, got[o].start, was[o].start)
			}
		}
	}

	c := startCollector(t, opts)
	send(c, 5, 2, 1)
	first := check(c, "first process", 0, [3]int64{5, 2, 1})
	firstProcess := processStart(s, 0)

	// SIGTERM: everything continues, under the same start times.
	c.stop()
	exports := len(s.all())
	c = startCollector(t, opts)
	clean := check(c, "after SIGTERM", exports, [3]int64{5, 2, 1})
	sameStart("after SIGTERM", clean, first, "accepted", "duplicate", "rejected")
	if got := processStart(s, exports); got <= firstProcess {
		t.Errorf("after SIGTERM: OTLP start time of agentmeter.exporter.otlp.exports is %d, was %d: want a new, later one", got, firstProcess)
	}
	send(c, 3, 1, 1)
	check(c, "after SIGTERM, more sent", exports, [3]int64{8, 3, 2})

	// kill -9: accepted exact, same start time; duplicates and rejections
	// from zero, under a new start time.
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-c.exited
	exports = len(s.all())
	c = startCollector(t, opts)
	killed := check(c, "after kill -9", exports, [3]int64{8, 0, 0})
	sameStart("after kill -9", killed, first, "accepted")
	for _, o := range []string{"duplicate", "rejected"} {
		if killed[o].start <= clean[o].start {
			t.Errorf("after kill -9: OTLP start time of {llm_call,%s} is %d, was %d: want a new, later one", o, killed[o].start, clean[o].start)
		}
	}
	send(c, 1, 2, 1)
	check(c, "after kill -9, more sent", exports, [3]int64{9, 2, 1})

	// A clean stop after the kill: the new start times continue.
	c.stop()
	exports = len(s.all())
	c = startCollector(t, opts)
	again := check(c, "SIGTERM after the kill -9", exports, [3]int64{9, 2, 1})
	sameStart("SIGTERM after the kill -9", again, killed, "accepted", "duplicate", "rejected")
	c.stop()
}
