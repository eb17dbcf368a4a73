package processor

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/metric/metricdata/metricdatatest"
	"google.golang.org/protobuf/proto"

	"github.com/agentmeter/agentmeter/pricing"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
	"github.com/agentmeter/agentmeter/storage"
)

// durable is a processor on a store in dir, restarted at will.
type durable struct {
	t     *testing.T
	dir   string
	cfg   Config
	minFB uint64
	// pricer prices the calls sent without a cost; nil: fixedPricer.
	pricer Pricer
	store  *storage.Store
	p      *Processor
}

func newDurable(t *testing.T, cfg Config) *durable {
	t.Helper()
	if cfg.IdleExpiry == 0 {
		cfg.IdleExpiry = time.Hour
	}
	if cfg.MaxTracked == 0 {
		cfg.MaxTracked = 100
	}
	if cfg.DedupeMaxIDs == 0 {
		cfg.DedupeMaxIDs = 1000
	}
	d := &durable{t: t, dir: t.TempDir(), cfg: cfg}
	d.open()
	t.Cleanup(func() {
		if d.store != nil {
			_ = d.store.Close()
		}
	})
	return d
}

func (d *durable) open() {
	d.t.Helper()
	s, err := storage.Open(storage.Config{Directory: d.dir, MinFreeBytes: d.minFB}, nil)
	if err != nil {
		d.t.Fatal(err)
	}
	pricer := d.pricer
	if pricer == nil {
		pricer = fixedPricer
	}
	p, err := New(d.cfg, Deps{Store: s, Pricer: pricer})
	if err != nil {
		_ = s.Close()
		d.t.Fatal(err)
	}
	d.store, d.p = s, p
}

// crash drops the processor without a shutdown (no final snapshot) and
// reopens the store, as a kill -9 would.
func (d *durable) crash() {
	d.t.Helper()
	if err := d.store.Close(); err != nil {
		d.t.Fatal(err)
	}
	d.store = nil
	d.open()
}

func (d *durable) consume(events ...*pb.Event) ([]Result, error) {
	res := make([]Result, len(events))
	err := d.p.Consume(context.Background(), events, time.Now(), res)
	return res, err
}

func (d *durable) mustConsume(events ...*pb.Event) []Result {
	d.t.Helper()
	res, err := d.consume(events...)
	if err != nil {
		d.t.Fatal(err)
	}
	return res
}

func (d *durable) produce() metricdata.ScopeMetrics {
	d.t.Helper()
	sm, err := d.p.Produce(context.Background())
	if err != nil || len(sm) != 1 {
		d.t.Fatalf("Produce: %v, %d scopes", err, len(sm))
	}
	return sm[0]
}

func usd(v float64) *float64 { return &v }

// workload is a mix of every kind of event over a few conversations.
func workload(prefix string, n int) []*pb.Event {
	var evs []*pb.Event
	for i := range n {
		conv := fmt.Sprintf("conv-%d", i%7)
		id := fmt.Sprintf("%s-%d", prefix, i)
		switch i % 10 {
		case 0:
			evs = append(evs, created(id, conv, usd(0.05)))
		case 1:
			evs = append(evs, status(id, conv, pb.AgentState(1+i%3)))
		case 9:
			evs = append(evs, closed(id, conv, pb.CloseReason_CLOSE_REASON_USER))
		default:
			evs = append(evs, llm(id, conv, func(c *pb.LLMCall) {
				c.RequestModel = fmt.Sprintf("m-%d", i%3)
				if i%4 == 0 {
					c.CostUsd, c.Provider = nil, "priced"
				}
			}))
		}
	}
	return evs
}

func TestDurableRestoresState(t *testing.T) {
	for _, snapshot := range []bool{false, true} {
		t.Run(fmt.Sprintf("snapshot=%v", snapshot), func(t *testing.T) {
			d := newDurable(t, Config{DedupeWindow: time.Hour, MaxTracked: 4})
			evs := workload("a", 300)
			for i := 0; i < len(evs); i += 25 {
				d.mustConsume(evs[i : i+25]...)
				if snapshot && i == 100 {
					if err := d.p.Snapshot(); err != nil {
						t.Fatal(err)
					}
				}
			}
			want := d.produce()
			wantUsage := map[string]*pb.ConversationUsage{}
			for i := range 7 {
				id := fmt.Sprintf("conv-%d", i)
				u, ok := d.p.Usage(id)
				if !ok {
					t.Fatalf("%s not found before the restart", id)
				}
				wantUsage[id] = u
			}
			start := d.p.start

			d.crash()
			if !d.p.start.Equal(start) {
				t.Errorf("start time %v after the restart, was %v", d.p.start, start)
			}
			for id, w := range wantUsage {
				u, ok := d.p.Usage(id)
				if !ok {
					t.Errorf("%s not found after the restart", id)
					continue
				}
				if !proto.Equal(u, w) {
					t.Errorf("%s after the restart:\n%v\nwant\n%v", id, u, w)
				}
			}
			got := d.produce()
			// Which conversations are in memory differs (Usage above
			// reloaded some): leave the gauges of tracked conversations out.
			metricdatatest.AssertEqual(t, dropGauges(want), dropGauges(got), metricdatatest.IgnoreTimestamp())

			// Every id is remembered across the restart.
			res := d.mustConsume(evs[:50]...)
			for i, r := range res {
				if r.Outcome != Duplicate {
					t.Fatalf("event %d resent after the restart: outcome %v, want duplicate", i, r.Outcome)
				}
			}
		})
	}
}

func dropGauges(sm metricdata.ScopeMetrics) metricdata.ScopeMetrics {
	out := sm
	out.Metrics = nil
	for _, m := range sm.Metrics {
		if _, gauge := m.Data.(metricdata.Gauge[int64]); gauge {
			continue
		}
		if m.Name == "agentmeter.processor.conversations_evicted" {
			continue // sweeps and reloads are not replayed
		}
		out.Metrics = append(out.Metrics, m)
	}
	return out
}

// TestDurableBudgetSurvivesEviction is the $1 budget evicted by 10,000
// other conversations: with storage its next calls still see the budget.
func TestDurableBudgetSurvivesEviction(t *testing.T) {
	d := newDurable(t, Config{DedupeWindow: time.Hour, MaxTracked: 10})
	d.mustConsume(created("c", "budgeted", usd(1)))
	d.mustConsume(llm("l1", "budgeted", func(c *pb.LLMCall) { c.CostUsd = proto.Float64(0.75) }))
	var others []*pb.Event
	for i := range 1000 {
		others = append(others, llm(fmt.Sprintf("o%d", i), fmt.Sprintf("other-%d", i), nil))
	}
	d.mustConsume(others...)
	if _, ok := d.p.convs.byID["budgeted"]; ok {
		t.Fatal("the budgeted conversation is still in memory: the test evicts nothing")
	}
	d.mustConsume(llm("l2", "budgeted", func(c *pb.LLMCall) { c.CostUsd = proto.Float64(0.5) }))
	u, ok := d.p.Usage("budgeted")
	if !ok {
		t.Fatal("budgeted conversation not found")
	}
	if u.MaxBudgetUsd == nil || *u.MaxBudgetUsd != 1 || !u.BudgetExceeded || u.CostUsd != 1.25 || u.Calls != 2 {
		t.Errorf("after eviction: budget %v, exceeded %v, cost %v, calls %d; want 1, true, 1.25, 2",
			u.MaxBudgetUsd, u.BudgetExceeded, u.CostUsd, u.Calls)
	}
	// And across a restart, with it evicted again.
	d.mustConsume(others[:20]...) // duplicates, but they touch nothing
	d.crash()
	u, ok = d.p.Usage("budgeted")
	if !ok || u.CostUsd != 1.25 || !u.BudgetExceeded {
		t.Errorf("after a restart: %v", u)
	}
}

// TestDurableDedupeHorizon resends a batch after far more newer ids than
// memory holds: storage still knows them.
func TestDurableDedupeHorizon(t *testing.T) {
	d := newDurable(t, Config{DedupeWindow: time.Hour, DedupeMaxIDs: 100})
	first := workload("first", 50)
	d.mustConsume(first...)
	for i := range 20 {
		d.mustConsume(workload(fmt.Sprintf("newer%d", i), 100)...)
	}
	for i, r := range d.mustConsume(first...) {
		if r.Outcome != Duplicate {
			t.Fatalf("event %d resent after 2000 newer ids (memory holds 100): %v, want duplicate", i, r.Outcome)
		}
	}
}

// TestDurableFailedWriteAppliesNothing: a refused write applies nothing and
// leaves the ids free, so that the retry is accepted.
func TestDurableFailedWriteAppliesNothing(t *testing.T) {
	d := newDurable(t, Config{DedupeWindow: time.Hour})
	d.minFB = math.MaxInt64 // every write: disk full
	d.crash()
	evs := workload("x", 20)
	_, err := d.consume(evs...)
	if !errors.Is(err, ErrStorageFull) {
		t.Fatalf("Consume on a full disk: %v, want ErrStorageFull", err)
	}
	if _, ok := d.p.Usage("conv-1"); ok {
		t.Error("a conversation of the refused batch is in the ledger")
	}
	if n := d.store.Stats().DiskFull; n != 1 {
		t.Errorf("disk-full count %d, want 1", n)
	}
	d.minFB = 0
	d.crash()
	for i, r := range d.mustConsume(evs...) {
		if r.Outcome == Duplicate {
			t.Fatalf("event %d of the refused batch is a duplicate on retry", i)
		}
	}
}

// TestDurableRetriesKeepFilter: a batch refused again and again, then
// accepted, fills its generation's filter once: the retries do not retire
// the filter (past filterOverfill × its capacity, 300 ids here).
func TestDurableRetriesKeepFilter(t *testing.T) {
	d := newDurable(t, Config{DedupeWindow: time.Hour, DedupeMaxIDs: 10})
	backlog := func(n int) {
		d.p.dmu.Lock()
		d.p.dd.unflushedN = n
		d.p.dmu.Unlock()
	}
	evs := workload("r", 100)
	backlog(idBacklogMax) // as if snapshots had failed that long: refused after classify
	for range 5 {
		if _, err := d.consume(evs...); !errors.Is(err, ErrStorageFull) {
			t.Fatalf("Consume with the id backlog full: %v, want ErrStorageFull", err)
		}
	}
	backlog(0) // a snapshot wrote them
	for i, r := range d.mustConsume(evs...) {
		if r.Outcome != Accepted {
			t.Fatalf("event %d after the backlog cleared: %v, want accepted", i, r.Outcome)
		}
	}
	d.p.dmu.Lock()
	m := d.p.dd.slot(d.p.dd.gen(time.Now().UnixNano()))
	usable, n := m.usable, m.filterN
	d.p.dmu.Unlock()
	if !usable || n != len(evs) {
		t.Fatalf("after 5 refusals and the accepted retry: filter usable %v holding %d ids, want usable holding %d",
			usable, n, len(evs))
	}
	for i, r := range d.mustConsume(evs...) {
		if r.Outcome != Duplicate {
			t.Fatalf("event %d resent after it was stored: %v, want duplicate", i, r.Outcome)
		}
	}
}

// TestDurableConcurrentSameIDs: concurrent batches with the same ids count
// each id once.
func TestDurableConcurrentSameIDs(t *testing.T) {
	d := newDurable(t, Config{DedupeWindow: time.Hour})
	evs := make([]*pb.Event, 50)
	for i := range evs {
		evs[i] = llm(fmt.Sprintf("same-%d", i), "conc", nil)
	}
	const workers = 8
	errs := make(chan error, workers)
	accepted := make(chan int, workers)
	for range workers {
		go func() {
			res, err := d.consume(evs...)
			n := 0
			for _, r := range res {
				if r.Outcome == Accepted {
					n++
				}
			}
			errs <- err
			accepted <- n
		}()
	}
	total := 0
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		total += <-accepted
	}
	if total != len(evs) {
		t.Errorf("%d accepted over %d concurrent copies of %d events, want %d", total, workers, len(evs), len(evs))
	}
	if u, _ := d.p.Usage("conc"); u.GetCalls() != int64(len(evs)) {
		t.Errorf("calls %d, want %d", u.GetCalls(), len(evs))
	}
}

func TestTokenSumsSaturate(t *testing.T) {
	h := newHarness(t, Config{DedupeWindow: time.Minute})
	big := int64(math.MaxInt64/2 + 1)
	for i := range 3 {
		h.consume(llm(fmt.Sprintf("big-%d", i), "sat", func(c *pb.LLMCall) { c.PromptTokens = big }))
	}
	if got := h.sum("agentmeter.llm.tokens", map[string]string{"gen_ai.token.type": "input"}); got != math.MaxInt64 {
		t.Errorf("input tokens %v, want held at %v", got, int64(math.MaxInt64))
	}
	u, _ := h.p.Usage("sat")
	if u.GetTokens().GetInput() != math.MaxInt64 {
		t.Errorf("ledger input tokens %d, want %d", u.GetTokens().GetInput(), int64(math.MaxInt64))
	}
	// The series and the ledger each saturated twice (2nd and 3rd call).
	if got := h.sum("agentmeter.processor.saturations", nil); got != 4 {
		t.Errorf("saturations %v, want 4", got)
	}
	// One below the bound does not saturate.
	h2 := newHarness(t, Config{DedupeWindow: time.Minute})
	h2.consume(llm("a", "", func(c *pb.LLMCall) { c.PromptTokens = math.MaxInt64 - 1 }),
		llm("b", "", func(c *pb.LLMCall) { c.PromptTokens = 1 }))
	if got := h2.sum("agentmeter.processor.saturations", nil); got != 0 {
		t.Errorf("saturations at exactly the bound %v, want 0", got)
	}
}

// TestDurableDedupeFilter: memory holds 5 ids a generation and its filter
// 100; every id beyond memory is still found (filter then disk), across a
// restart too, and new ids are accepted.
func TestDurableDedupeFilter(t *testing.T) {
	d := newDurable(t, Config{DedupeWindow: time.Hour, DedupeMaxIDs: 10})
	first := workload("f", 60)
	d.mustConsume(first...)
	check := func(what string) {
		t.Helper()
		for i, r := range d.mustConsume(first...) {
			if r.Outcome != Duplicate {
				t.Fatalf("%s: event %d resent: %v, want duplicate", what, i, r.Outcome)
			}
		}
	}
	check("filter in use")
	d.crash()
	check("after a restart")
	for i, r := range d.mustConsume(workload("g", 30)...) {
		if r.Outcome == Duplicate {
			t.Fatalf("new event %d called a duplicate", i)
		}
	}
	d.mustConsume(workload("h", 300)...) // past filterOverfill × its capacity: disk only
	check("filter saturated")
}

// TestDurableIDsThroughSnapshots: ids reach their keys with snapshots, and
// every id of the window stays a duplicate whatever happened in between:
// a crash before any snapshot (the log has them), snapshots that moved them
// to disk, a crash after more batches, memory far too small for them.
func TestDurableIDsThroughSnapshots(t *testing.T) {
	d := newDurable(t, Config{DedupeWindow: time.Hour, DedupeMaxIDs: 10})
	var sent [][]*pb.Event
	send := func(prefix string, n int) {
		t.Helper()
		evs := workload(prefix, n)
		for i, r := range d.mustConsume(evs...) {
			if r.Outcome == Duplicate {
				t.Fatalf("%s: new event %d called a duplicate", prefix, i)
			}
		}
		sent = append(sent, evs)
	}
	checkAll := func(what string) {
		t.Helper()
		for b, evs := range sent {
			for i, r := range d.mustConsume(evs...) {
				if r.Outcome != Duplicate {
					t.Fatalf("%s: batch %d event %d resent: %v, want duplicate", what, b, i, r.Outcome)
				}
			}
		}
	}
	snapshot := func() {
		t.Helper()
		if err := d.p.Snapshot(); err != nil {
			t.Fatal(err)
		}
	}
	send("a", 40)
	d.crash()
	checkAll("crash before any snapshot")
	send("b", 40)
	snapshot()
	checkAll("after a snapshot")
	send("c", 40)
	d.crash()
	checkAll("crash after a snapshot and more batches")
	snapshot()
	send("d", 300) // past filterOverfill × the memory filter's capacity (100)
	snapshot()
	send("e", 30)
	checkAll("filter saturated")
	d.crash()
	checkAll("filter saturated, after a crash")
	// The replay committed the ids of the log after the last snapshot again
	// (batch e); the duplicates since added none.
	if n := d.p.unflushedIDs(); n != 30 {
		t.Errorf("%d ids unflushed after the restart, want the 30 of the replayed batch", n)
	}
}

// TestDurableIDsFailedSnapshot: ids a failed snapshot could not write stay
// visible and go with the next one.
func TestDurableIDsFailedSnapshot(t *testing.T) {
	d := newDurable(t, Config{DedupeWindow: time.Hour, DedupeMaxIDs: 10})
	first := workload("f", 50)
	d.mustConsume(first...)
	d.p.dmu.Lock()
	ids, _ := d.p.dd.takeUnflushed()
	d.p.dd.flushed(ids, false) // as if the write failed
	n := d.p.dd.unflushedN
	d.p.dmu.Unlock()
	if n != len(first) {
		t.Fatalf("%d ids unflushed after a failed snapshot, want %d", n, len(first))
	}
	for i, r := range d.mustConsume(first...) {
		if r.Outcome != Duplicate {
			t.Fatalf("event %d after a failed snapshot: %v, want duplicate", i, r.Outcome)
		}
	}
	if err := d.p.Snapshot(); err != nil {
		t.Fatal(err)
	}
	// The log entries are gone: only the id runs can know them now.
	d.crash()
	for i, r := range d.mustConsume(first...) {
		if r.Outcome != Duplicate {
			t.Fatalf("event %d after the next snapshot and a crash: %v, want duplicate", i, r.Outcome)
		}
	}
}

// TestDurableStoresEncoded: a batch handed over with its wire encoding is
// stored as it is when all its events are new, and encoded again (its new
// events only) when some are duplicates; both replay to the same ledger.
func TestDurableStoresEncoded(t *testing.T) {
	d := newDurable(t, Config{DedupeWindow: time.Hour})
	begin := func(evs []*pb.Event) []Result {
		t.Helper()
		enc, err := proto.Marshal(&pb.RecordRequest{Events: evs})
		if err != nil {
			t.Fatal(err)
		}
		res := make([]Result, len(evs))
		if err := d.p.Begin(context.Background(), evs, enc, time.Now(), res).Wait(); err != nil {
			t.Fatal(err)
		}
		return res
	}
	first := workload("enc", 40)
	begin(first)
	mixed := append(workload("enc2", 20), first[:10]...) // 10 duplicates
	dups := 0
	for _, r := range begin(mixed) {
		if r.Outcome == Duplicate {
			dups++
		}
	}
	if dups != 10 {
		t.Fatalf("%d duplicates in the mixed batch, want 10", dups)
	}
	want, _ := d.p.Usage("conv-1")
	d.crash() // no snapshot: the ledger comes back from the two log entries
	got, ok := d.p.Usage("conv-1")
	if !ok || !proto.Equal(got, want) {
		t.Errorf("after replay: %v, want %v", got, want)
	}
	for i, r := range d.mustConsume(append(first, mixed...)...) {
		if r.Outcome != Duplicate {
			t.Fatalf("event %d resent after the replay: %v, want duplicate", i, r.Outcome)
		}
	}
}

// TestDurableReplayKeepsPrices: the price table changes (a hot reload)
// between the apply of calls sent without a cost and a kill -9; the replay
// of their log entries applies the prices they were applied with, so the
// computed cost, cache savings, unpriced calls and budget crossings
// acknowledged before the crash are those after it.
func TestDurableReplayKeepsPrices(t *testing.T) {
	// Table A prices models "a" and "ab"; table B prices "ab" ten times
	// dearer, and "b".
	var tableB atomic.Bool
	pricer := PricerFunc(func(_, model string, _ time.Time, u pricing.Usage) (float64, float64, bool) {
		rate, priced := 1e-4, model == "a" || model == "ab"
		if tableB.Load() {
			rate, priced = 1e-3, model == "b" || model == "ab"
		}
		if !priced {
			return 0, 0, false
		}
		return rate * float64(u.Prompt), rate / 10 * float64(u.CacheRead), true
	})
	d := newDurable(t, Config{DedupeWindow: time.Hour})
	d.pricer = pricer
	d.p.pricer = pricer
	call := func(id, model string, cost *float64) *pb.Event {
		return llm(id, "bill", func(c *pb.LLMCall) { c.RequestModel, c.ResponseModel, c.CostUsd = model, model, cost })
	}
	begin := func(evs ...*pb.Event) { // stored as its wire bytes when every event is new
		t.Helper()
		enc, err := proto.Marshal(&pb.RecordRequest{Events: evs})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.p.Begin(context.Background(), evs, enc, time.Now(), make([]Result, len(evs))).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	// $1 budget; under table A each call of "ab" costs $0.1 (1000 prompt
	// tokens), under B $1.
	d.mustConsume(created("c", "bill", usd(1)), call("1", "ab", nil), call("2", "a", nil))
	if err := d.p.Snapshot(); err != nil { // what follows is replayed
		t.Fatal(err)
	}
	first := []*pb.Event{call("3", "ab", nil), call("4", "b", nil), call("5", "ab", usd(0.01))}
	begin(first...)
	// With duplicates: the new events are encoded again.
	begin(append([]*pb.Event{call("6", "ab", nil), call("7", "a", nil)}, first...)...)
	d.mustConsume(call("8", "ab", nil), call("9", "b", nil), first[0])

	want := d.produce()
	wantUsage, ok := d.p.Usage("bill")
	if !ok {
		t.Fatal("conversation not found")
	}
	// Table A: the 6 calls of "a" and "ab" sent without a cost at $0.1
	// each, the 2 of "b" unpriced.
	if wantUsage.ComputedCostUsd < 0.59 || wantUsage.ComputedCostUsd > 0.61 || wantUsage.UnpricedCalls != 2 ||
		wantUsage.BudgetExceeded {
		t.Fatalf("before the crash: computed $%v, %d unpriced, exceeded %v; want $0.6, 2, false",
			wantUsage.ComputedCostUsd, wantUsage.UnpricedCalls, wantUsage.BudgetExceeded)
	}

	tableB.Store(true) // the table is reloaded, then the process is killed
	d.crash()
	got, ok := d.p.Usage("bill")
	if !ok || !proto.Equal(got, wantUsage) {
		t.Errorf("after the crash:\n%v\nwant (as acknowledged before it)\n%v", got, wantUsage)
	}
	// Duplicates are not in the log (see the README): leave them out.
	metricdatatest.AssertEqual(t, dropDuplicates(dropGauges(want)), dropDuplicates(dropGauges(d.produce())),
		metricdatatest.IgnoreTimestamp())

	// New calls meet the new table.
	d.mustConsume(call("10", "b", nil))
	if u, _ := d.p.Usage("bill"); u.UnpricedCalls != 2 || !u.BudgetExceeded {
		t.Errorf("a call after the reload: %d unpriced, exceeded %v; want 2, true", u.UnpricedCalls, u.BudgetExceeded)
	}
}

// dropDuplicates leaves the duplicate events' counts out of sm.
func dropDuplicates(sm metricdata.ScopeMetrics) metricdata.ScopeMetrics {
	out := sm
	out.Metrics = nil
	for _, m := range sm.Metrics {
		if sum, ok := m.Data.(metricdata.Sum[int64]); ok {
			var dps []metricdata.DataPoint[int64]
			for _, dp := range sum.DataPoints {
				if v, ok := dp.Attributes.Value("outcome"); !ok || v.AsString() != "duplicate" {
					dps = append(dps, dp)
				}
			}
			sum.DataPoints = dps
			m.Data = sum
		}
		out.Metrics = append(out.Metrics, m)
	}
	return out
}

// TestDurableIDBacklogRefuses: while snapshots cannot write the ids (the
// backlog at its bound), new batches are refused as storage-full and apply
// nothing; once a snapshot succeeds they are accepted again.
func TestDurableIDBacklogRefuses(t *testing.T) {
	d := newDurable(t, Config{DedupeWindow: time.Hour})
	d.p.dmu.Lock()
	d.p.dd.unflushedN = idBacklogMax // as if snapshots had failed that long
	d.p.dmu.Unlock()
	evs := workload("backlog", 10)
	if _, err := d.consume(evs...); !errors.Is(err, ErrStorageFull) {
		t.Fatalf("Consume with the id backlog full: %v, want ErrStorageFull", err)
	}
	if _, ok := d.p.Usage("conv-1"); ok {
		t.Error("a conversation of the refused batch is in the ledger")
	}
	d.p.dmu.Lock()
	d.p.dd.unflushedN = 0 // a snapshot wrote them
	d.p.dmu.Unlock()
	for i, r := range d.mustConsume(evs...) {
		if r.Outcome != Accepted {
			t.Fatalf("event %d after the backlog cleared: %v, want accepted", i, r.Outcome)
		}
	}
}

// unflushedIDs is the number of committed ids the next snapshot stores.
func (p *Processor) unflushedIDs() int {
	p.dmu.Lock()
	defer p.dmu.Unlock()
	if p.dd == nil {
		return 0
	}
	return p.dd.unflushedN
}

// TestDurableBeginPanicEndsTheBatch: a batch whose background write or
// apply panics ends with ErrPanic instead of taking the process down, and
// the batches after it still get their turn.
func TestDurableBeginPanicEndsTheBatch(t *testing.T) {
	d := newDurable(t, Config{DedupeWindow: time.Hour})
	d.pricer = PricerFunc(func(provider, _ string, _ time.Time, _ pricing.Usage) (float64, float64, bool) {
		if provider == "explodes" {
			panic("pricer bug")
		}
		return 0, 0, false
	})
	d.crash() // reopen with that pricer
	bad := llm("boom", "panics", func(c *pb.LLMCall) { c.Provider, c.CostUsd = "explodes", nil })
	res := make([]Result, 1)
	if err := d.p.Begin(context.Background(), []*pb.Event{bad}, nil, time.Now(), res).Wait(); !errors.Is(err, ErrPanic) {
		t.Fatalf("Begin of a batch whose pricer panics: %v, want ErrPanic", err)
	}
	for i, r := range d.mustConsume(workload("after", 10)...) {
		if r.Outcome != Accepted {
			t.Fatalf("event %d after the panicked batch: %v, want accepted", i, r.Outcome)
		}
	}
}

// TestDurableApplyPanicReleasesLock: a stored batch whose apply panics
// (here a results slice too short for it, a caller's bug) ends with
// ErrPanic and leaves the processor usable: the lock is released, the
// batches after it are applied, collection goes on, and its ids count as
// stored (it is in the log), so a resend is a duplicate.
func TestDurableApplyPanicReleasesLock(t *testing.T) {
	d := newDurable(t, Config{DedupeWindow: time.Hour})
	bad := []*pb.Event{llm("p-0", "panics", nil), llm("p-1", "panics", nil)}
	if err := d.p.Begin(context.Background(), bad, nil, time.Now(), make([]Result, 1)).Wait(); !errors.Is(err, ErrPanic) {
		t.Fatalf("Begin of a batch whose apply panics: %v, want ErrPanic", err)
	}
	type outcome struct {
		res []Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := d.consume(workload("after-panic", 10)...)
		if err == nil {
			_, err = d.p.Produce(context.Background())
		}
		done <- outcome{res, err}
	}()
	select {
	case o := <-done:
		if o.err != nil {
			t.Fatalf("after the panicked batch: %v", o.err)
		}
		for i, r := range o.res {
			if r.Outcome != Accepted {
				t.Errorf("event %d after the panicked batch: %v, want accepted", i, r.Outcome)
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a batch after the panicked one did not end within 10s: the lock is still held")
	}
	for i, r := range d.mustConsume(bad...) {
		if r.Outcome != Duplicate {
			t.Errorf("event %d of the panicked batch resent: %v, want a duplicate (it is stored)", i, r.Outcome)
		}
	}
}

// TestDurableShutdownWaitsForBegun: Shutdown returns only once every batch
// begun before it was written and applied, and its last snapshot has them.
func TestDurableShutdownWaitsForBegun(t *testing.T) {
	d := newDurable(t, Config{DedupeWindow: time.Hour})
	if err := d.p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	var pending []*Pending
	for i := range 8 {
		evs := []*pb.Event{llm(fmt.Sprintf("sd-%d", i), "shutdown", func(c *pb.LLMCall) { c.CostUsd = usd(0.5) })}
		pending = append(pending, d.p.Begin(context.Background(), evs, nil, time.Now(), make([]Result, 1)))
	}
	if err := d.p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i, pd := range pending {
		select {
		case <-pd.Done():
			if err := pd.Wait(); err != nil {
				t.Errorf("batch %d: %v", i, err)
			}
		default:
			t.Fatalf("batch %d still running after Shutdown returned", i)
		}
	}
	d.crash() // no log replay needed: the last snapshot holds them all
	if u, ok := d.p.Usage("shutdown"); !ok || u.GetCalls() != 8 {
		t.Errorf("after the restart: %v, %v; want the 8 calls", u, ok)
	}
}

// TestIDFilterFPRate: a generation's filter filled to its capacity rules
// out all but about 1% of the ids it does not hold (each false positive
// costs a map and perhaps a disk lookup), and never an id it holds; filled
// to filterOverfill times that, still most of them.
func TestIDFilterFPRate(t *testing.T) {
	const capacity = 200000
	m := newMemGen(0, capacity)
	rng := rand.New(rand.NewPCG(1, 2))
	held := make([]uint64, capacity)
	for i := range held {
		held[i] = rng.Uint64()
		m.filterAdd(held[i], capacity)
	}
	for _, h := range held {
		if !m.filterHas(h) {
			t.Fatalf("filter lost id %x", h)
		}
	}
	const probes = 200000
	fp := 0
	for range probes {
		if m.filterHas(rng.Uint64()) {
			fp++
		}
	}
	rate := float64(fp) / probes
	t.Logf("false positives at capacity: %.2f%% (%d of %d)", 100*rate, fp, probes)
	if rate > 0.015 {
		t.Errorf("false positive rate %.2f%%, want <= 1.5%%", 100*rate)
	}
	// Filled to filterOverfill times its capacity, it still rules out
	// most ids it does not hold, and loses none it holds.
	for range (filterOverfill - 1) * capacity {
		h := rng.Uint64()
		held = append(held, h)
		m.filterAdd(h, capacity)
	}
	if !m.usable {
		t.Fatalf("filter unusable at %d ids, %d times its capacity", m.filterN, filterOverfill)
	}
	for _, h := range held {
		if !m.filterHas(h) {
			t.Fatalf("overfilled filter lost id %x", h)
		}
	}
	fp = 0
	for range probes {
		if m.filterHas(rng.Uint64()) {
			fp++
		}
	}
	rate = float64(fp) / probes
	t.Logf("false positives at %d times capacity: %.1f%%", filterOverfill, 100*rate)
	if rate > 0.4 {
		t.Errorf("false positive rate at %d times capacity %.1f%%, want <= 40%%", filterOverfill, 100*rate)
	}
	m.filterAdd(rng.Uint64(), capacity) // past that: no longer used
	if !m.filterHas(rng.Uint64()) {
		t.Error("a saturated filter ruled an id out")
	}
}

// TestIDSet: the committed ids past the memory maps are found, others are
// not, and a set holds an id in at most 16 bytes (the README's Memory with
// storage), room for the next ids after a reset included.
func TestIDSet(t *testing.T) {
	const n = idFlushEvery
	rng := rand.New(rand.NewPCG(1, 2))
	in := make([]uint64, n)
	for i := range in {
		in[i] = rng.Uint64()
	}
	var a, b idSet
	for _, h := range in[:n/2] {
		a.add(h)
	}
	for _, h := range in[n/2:] {
		b.add(h)
	}
	a.addAll(&b)
	if a.len() != n {
		t.Fatalf("%d ids held, want %d", a.len(), n)
	}
	for i, h := range in {
		if !a.has(h) {
			t.Fatalf("id %d added, not found", i)
		}
	}
	for range 1000 {
		if h := rng.Uint64(); a.has(h) {
			t.Fatalf("%x found, never added", h)
		}
	}
	bytesPerID := func(s *idSet) float64 {
		total := 0
		for _, l := range s.lists {
			total += 8 * cap(l)
		}
		return float64(total+int(unsafe.Sizeof(*s))) / n
	}
	if got := bytesPerID(&a); got > 16 {
		t.Errorf("%.1f bytes an id, more than the 16 the README states", got)
	}
	before := bytesPerID(&a)
	a.reset()
	if a.len() != 0 || a.has(in[0]) {
		t.Fatalf("after reset: %d ids held, first one found: %v", a.len(), a.has(in[0]))
	}
	for _, h := range in {
		a.add(h)
	}
	if got := bytesPerID(&a); got != before {
		t.Errorf("refilled after a reset: %.1f bytes an id, want the same room as before (%.1f)", got, before)
	}
	t.Logf("%d ids: %.1f bytes an id", n, before)
}
