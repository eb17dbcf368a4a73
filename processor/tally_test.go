package processor

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/agentmeter/agentmeter/catalog"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// eventPoint is one point of agentmeter.receiver.events.
type eventPoint struct {
	value int64
	start time.Time
}

// eventPoints are the points of agentmeter.receiver.events by
// "event_type/outcome", and the start times of the eviction counts.
func eventPoints(t *testing.T, sm metricdata.ScopeMetrics) (map[string]eventPoint, []time.Time) {
	t.Helper()
	points := map[string]eventPoint{}
	var evictedStarts []time.Time
	for _, m := range sm.Metrics {
		switch m.Name {
		case catalog.ReceiverEvents.Name:
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				typ, _ := dp.Attributes.Value(catalog.AttrEventType)
				out, _ := dp.Attributes.Value(catalog.AttrOutcome)
				points[typ.AsString()+"/"+out.AsString()] = eventPoint{dp.Value, dp.StartTime}
			}
		case catalog.ConversationsEvicted.Name:
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				evictedStarts = append(evictedStarts, dp.StartTime)
			}
		}
	}
	if len(points) != 3*numPayloadTypes-2 {
		t.Fatalf("%d points of %s, want %d: %v", len(points), catalog.ReceiverEvents.Name, 3*numPayloadTypes-2, points)
	}
	return points, evictedStarts
}

// TestEventOutcomes: every outcome is counted by payload type, whoever
// decided it: the validator (Refused), de-duplication, or the processor.
func TestEventOutcomes(t *testing.T) {
	h := newHarness(t, Config{DedupeWindow: time.Minute})
	h.consume(llm("a", "c1", nil), llm("a", "c1", nil), created("cr", "c1", nil), created("cr2", "c1", nil),
		status("s", "c1", pb.AgentState_AGENT_STATE_RUNNING))
	h.p.Refused(&pb.Event{EventId: "no-payload"})
	h.p.Refused(llm("bad", "", nil))
	sm, err := h.p.Produce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got, _ := eventPoints(t, sm[0])
	want := map[string]int64{
		"llm_call/accepted": 1, "llm_call/duplicate": 1, "llm_call/rejected": 1,
		"conversation/accepted": 1, "conversation/rejected": 1, "agent_status/accepted": 1,
		"none/rejected": 1,
	}
	for k, p := range got {
		if p.value != want[k] {
			t.Errorf("%s = %d, want %d", k, p.value, want[k])
		}
		if !p.start.Equal(h.p.start) {
			t.Errorf("%s start time %v, want the processor's %v (memory mode)", k, p.start, h.p.start)
		}
	}
}

// outcomeBatch is one batch with every outcome: n new calls, one of them
// twice (a duplicate), and a second "created" of a live conversation (a
// rejection); plus one event refused by validation.
func (d *durable) outcomeBatch(prefix string, n int) {
	d.t.Helper()
	evs := []*pb.Event{created(prefix+"-cr", prefix+"-conv", nil), created(prefix+"-cr2", prefix+"-conv", nil)}
	for i := range n {
		evs = append(evs, llm(fmt.Sprintf("%s-%d", prefix, i), prefix+"-conv", nil))
	}
	evs = append(evs, evs[2])
	d.mustConsume(evs...)
	d.p.Refused(&pb.Event{EventId: prefix + "-bad"})
}

// cleanRestart starts the processor, shuts it down (the final snapshot),
// and opens it again on the same store. It returns the points exported
// last, after the shutdown (as the final export does).
func (d *durable) cleanRestart() map[string]eventPoint {
	d.t.Helper()
	ctx := context.Background()
	if err := d.p.Start(ctx); err != nil {
		d.t.Fatal(err)
	}
	if err := d.p.Shutdown(ctx); err != nil {
		d.t.Fatal(err)
	}
	// Nothing is counted after the final snapshot.
	d.p.Refused(&pb.Event{EventId: "after-shutdown"})
	last, _ := eventPoints(d.t, d.produce())
	d.crash()
	return last
}

// TestEventOutcomesAcrossRestarts: accepted events continue exactly under
// the store's start time across a crash (the log replay counts them);
// duplicates, rejections and evictions continue across a clean restart,
// and after a crash start again at zero under a new start time, never
// lower under the same one.
func TestEventOutcomesAcrossRestarts(t *testing.T) {
	d := newDurable(t, Config{DedupeWindow: time.Hour, MaxTracked: 2})
	storeStart := d.store.Start()
	d.outcomeBatch("a", 10)
	if err := d.p.Snapshot(); err != nil {
		t.Fatal(err)
	}
	d.outcomeBatch("b", 5) // in the log only
	before, _ := eventPoints(t, d.produce())
	check := func(what string, want map[string]int64, wantUnloggedStart func(time.Time) bool) map[string]eventPoint {
		t.Helper()
		got, evictedStarts := eventPoints(t, d.produce())
		for k, p := range got {
			if p.value != want[k] {
				t.Errorf("%s: %s = %d, want %d", what, k, p.value, want[k])
			}
			if k == "llm_call/accepted" || k == "conversation/accepted" || k == "agent_status/accepted" || k == "runtime_fault/accepted" {
				if !p.start.Equal(storeStart) {
					t.Errorf("%s: %s start time %v, want the store's %v", what, k, p.start, storeStart)
				}
			} else if !wantUnloggedStart(p.start) {
				t.Errorf("%s: %s start time %v, not the one expected", what, k, p.start)
			}
		}
		for _, s := range evictedStarts {
			if !s.Equal(got["llm_call/duplicate"].start) {
				t.Errorf("%s: eviction count start time %v, want that of the duplicates %v", what, s, got["llm_call/duplicate"].start)
			}
		}
		return got
	}
	check("before", map[string]int64{"llm_call/accepted": 15, "llm_call/duplicate": 2, "conversation/accepted": 2,
		"conversation/rejected": 2, "none/rejected": 2}, func(time.Time) bool { return true })

	// kill -9: the accepted events come back exactly, from the snapshot
	// and the log; the others start again at zero, later.
	crashAt := time.Now()
	d.crash()
	after := check("after a crash", map[string]int64{"llm_call/accepted": 15, "conversation/accepted": 2},
		func(s time.Time) bool { return s.After(before["llm_call/duplicate"].start) && !s.Before(crashAt) })

	// A clean restart continues them all, under the same start times.
	d.outcomeBatch("c", 3)
	last := d.cleanRestart()
	clean := check("after a clean restart", map[string]int64{"llm_call/accepted": 18, "llm_call/duplicate": 1,
		"conversation/accepted": 3, "conversation/rejected": 1, "none/rejected": 1},
		func(s time.Time) bool { return s.Equal(after["llm_call/duplicate"].start) })
	for k, p := range last {
		if clean[k] != p {
			t.Errorf("%s exported last before the clean restart: %v, after it: %v", k, p, clean[k])
		}
	}

	// A crash after a clean restart does not bring the final snapshot's
	// counts back under their start time: it was replaced at start.
	d.outcomeBatch("d", 1)
	crashAt = time.Now()
	d.crash()
	check("after a crash that followed a clean restart", map[string]int64{"llm_call/accepted": 19, "conversation/accepted": 4},
		func(s time.Time) bool { return s.After(clean["llm_call/duplicate"].start) && !s.Before(crashAt) })

	// When that snapshot at start cannot be written, they start again at
	// zero too.
	d.outcomeBatch("e", 1)
	ctx := context.Background()
	if err := d.p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	d.minFB = 1 << 62
	restartAt := time.Now()
	d.crash()
	check("after a clean restart on a full disk", map[string]int64{"llm_call/accepted": 20, "conversation/accepted": 5},
		func(s time.Time) bool { return !s.Before(restartAt) })
}
