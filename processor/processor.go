// Package processor de-duplicates validated events and aggregates them into
// the catalogue's OpenTelemetry instruments.
//
// The processor owns the aggregation state of every event-derived series:
// counters, gauges and explicit-bucket histograms per cached attribute set,
// under one mutex taken once per batch. The OpenTelemetry SDK collects it
// through the metric.Producer interface (Produce), and keeps doing what it
// does well: readers, temporality, the Prometheus and OTLP exporters and
// their name translation.
//
// Why not one synchronous SDK instrument call per measurement: from v1.45 on
// the SDK normalises the attribute set on every call (opentelemetry-go
// #8471), and an LLM call feeds five histograms. BenchmarkSDKHistograms
// records just those five on SDK instruments with cached attribute sets;
// it takes several times what BenchmarkConsume takes for all of an event's
// work, which is a map lookup and a few additions per instrument and no
// allocation once a series exists.
package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/agentmeter/agentmeter/catalog"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
	"github.com/agentmeter/agentmeter/storage"
)

// Outcome is what became of one event.
type Outcome uint8

// Outcomes.
const (
	// Accepted: applied.
	Accepted Outcome = iota
	// Duplicate: its event id was seen within the dedupe window; not applied.
	Duplicate
	// Rejected: valid on its own but not in the state it arrived in (such
	// as a second "created" for a live conversation); not applied.
	Rejected
)

// Result is the outcome of one event; Field and Reason are set when Rejected.
type Result struct {
	Outcome Outcome
	Field   string
	Reason  string
}

// Consumer takes validated events. It is the seam between the receiver and
// the processor.
//
// Ownership: events and results belong to the caller. Consume reads events
// only during the call and keeps no reference to them or to any string in
// them beyond the call, except by copying.
type Consumer interface {
	// Consume applies events in index order, as received at now, and sets
	// results[i] to the outcome of events[i]. len(results) >= len(events).
	//
	// It returns an error when the batch could not be stored (durable mode
	// only): then none of its events was applied, results are undefined,
	// and the whole batch may be retried. ErrStorageFull marks a full disk.
	Consume(ctx context.Context, events []*pb.Event, now time.Time, results []Result) error
	// Refused counts an event the caller refused without handing it to
	// Consume (it failed validation): the processor keeps, and persists,
	// the count of every event's outcome (agentmeter.receiver.events).
	Refused(ev *pb.Event)

	// Begin is Consume in two steps, for a caller with several batches in
	// flight (a stream's pipeline): it classifies the events now, and the
	// returned Pending ends when they were applied, with Consume's error.
	// Batches begun one after the other are applied in that order. events
	// and results belong to the batch until its Pending ended.
	//
	// encoded, when not nil, is events encoded as a RecordRequest (the
	// bytes they were decoded from, with nothing else): durable mode then
	// stores it as it is when every event is new, instead of encoding the
	// events again. It too belongs to the batch until its Pending ended.
	Begin(ctx context.Context, events []*pb.Event, encoded []byte, now time.Time, results []Result) *Pending
}

// Pending is a batch that Begin started.
type Pending struct {
	done <-chan struct{}
	err  error
}

// Done is closed when the batch was applied or failed.
func (b *Pending) Done() <-chan struct{} { return b.done }

// Wait blocks until the batch was applied or failed, and returns what
// Consume would have.
func (b *Pending) Wait() error {
	<-b.done
	return b.err
}

// closedChan is the done channel of batches that end within Begin.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// EndsWhen is a Pending that ends, with no error, when done is closed:
// Begin of a consumer that applies a batch later.
func EndsWhen(done <-chan struct{}) *Pending { return &Pending{done: done} }

// Ended is a Pending that has already ended with err: Begin of a consumer
// that applies a batch before it returns.
func Ended(err error) *Pending { return &Pending{done: closedChan, err: err} }

// ErrStorageFull is returned by Consume when the disk has no room for the
// batch; retrying later can help.
var ErrStorageFull = storage.ErrDiskFull

// Config bounds the processor's memory.
type Config struct {
	// DedupeWindow is how long an event id is remembered; 0 disables
	// de-duplication.
	DedupeWindow time.Duration
	// DedupeMaxIDs bounds the ids remembered; the oldest go first.
	DedupeMaxIDs int
	// DedupeFilterBytes (durable mode) is the memory of the bloom filter of
	// each of the two dedupe generations: an id it does not hold needs no
	// disk lookup. At least 20 × DedupeMaxIDs/2 ids' worth (1.25 bytes an
	// id, 1% false positives) is used whatever it says.
	DedupeFilterBytes int
	// IdleExpiry is how long a conversation with no event stays tracked.
	IdleExpiry time.Duration
	// MaxTracked bounds the tracked conversations; the least recently
	// active go first.
	MaxTracked int
	// MaxSeries bounds the LLM-call attribute sets; calls beyond it are
	// folded into one series marked otel.metric.overflow=true. 0 = 2000.
	MaxSeries int
	// MaxAgents bounds the distinct agent names of the status series;
	// beyond it the name becomes "_other". 0 = 100.
	MaxAgents int
	// ClosedRetention is how long a closed conversation stays queryable.
	ClosedRetention time.Duration
	// DefaultMaxBudgetUSD is the budget of a conversation whose created
	// event names none; nil = no budget.
	DefaultMaxBudgetUSD *float64
	// Retention is how long a stored conversation is kept after its last
	// event (durable mode); 0 = forever.
	Retention time.Duration
	// SnapshotInterval is the longest time between two snapshots of the
	// state (durable mode); 0 = 10s.
	SnapshotInterval time.Duration
}

// Deps are the processor's collaborators.
type Deps struct {
	Logger *slog.Logger
	// Pricer prices calls sent without a cost; nil = none are priced.
	Pricer Pricer
	// Store makes the state durable: New restores it from there, and
	// Consume returns once a batch is stored. nil = memory only.
	Store *storage.Store
}

// Processor de-duplicates and aggregates events. Safe for concurrent use.
type Processor struct {
	cfg    Config
	log    *slog.Logger
	pricer Pricer
	start  time.Time // start of the cumulative series

	// mu guards everything below. Consume holds it for one whole batch, so
	// a batch is applied atomically with respect to collection.
	mu            sync.Mutex
	dedupe        *dedupe
	llm           map[llmKey]*llmSeries
	overflow      *llmSeries
	overflowCalls int64
	convs         *conversations
	status        statusTable
	life          lifecycle
	saturations   int64
	// accepted counts the applied events by payload type; acceptedStart
	// is the start time of those series (see tally.go).
	accepted      [numPayloadTypes]int64
	acceptedStart time.Time
	eventSets     *eventSets

	unlogged unlogged

	durableState

	stop     chan struct{}
	done     chan struct{}
	started  bool
	shutdown bool
}

// New creates the processor and its instruments on deps.Meter.
func New(cfg Config, deps Deps) (*Processor, error) {
	if cfg.MaxSeries <= 0 {
		cfg.MaxSeries = 2000
	}
	if cfg.MaxAgents <= 0 {
		cfg.MaxAgents = 100
	}
	if cfg.MaxTracked <= 0 {
		return nil, errors.New("processor: MaxTracked must be > 0")
	}
	if cfg.IdleExpiry <= 0 {
		return nil, errors.New("processor: IdleExpiry must be > 0")
	}
	p := &Processor{
		cfg:    cfg,
		log:    deps.Logger,
		start:  time.Now(),
		dedupe: newDedupe(cfg.DedupeWindow, cfg.DedupeMaxIDs),
		llm:    make(map[llmKey]*llmSeries),
		convs:  newConversations(cfg.MaxTracked),
		status: newStatusTable(cfg.MaxAgents),
		life:   newLifecycle(catalog.SessionStartDuration.Buckets, catalog.ConversationCost.Buckets, catalog.ConversationTokens.Buckets),
		pricer: deps.Pricer,
		stop:   make(chan struct{}),
		done:   make(chan struct{}),

		eventSets: newEventSets(),
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.acceptedStart, p.unlogged.start = p.start, p.start
	if deps.Store != nil {
		now := time.Now().UnixNano()
		p.store = deps.Store
		p.start = deps.Store.Start()
		// Until a snapshot says otherwise: the accepted events are all in
		// the log since the store's creation; the unlogged counts start now.
		p.acceptedStart, p.unlogged.start = p.start, time.Unix(0, now)
		p.dedupe = nil
		dd, err := newDurableDedupe(cfg.DedupeWindow, cfg.DedupeMaxIDs, cfg.DedupeFilterBytes, deps.Store, now)
		if err != nil {
			return nil, fmt.Errorf("restore dedupe ids from storage: %w", err)
		}
		p.dd = dd
		p.turnWait = make(map[uint64]chan struct{})
		p.entryBufs.New = func() any { return new(entryBufs) }
		p.evicted = make(map[string]*conversation)
		p.snapshotEvery = snapshotEvents
		p.snapshotNow = make(chan struct{}, 1)
		p.snapshotDone = make(chan struct{})
		if err := p.restore(now); err != nil {
			return nil, fmt.Errorf("restore state from storage: %w", err)
		}
		if p.unlogged.resumed {
			// The final snapshot of a clean shutdown was restored: replace
			// it at once, so that a crash from here on does not restore
			// its unlogged counts under their start time again.
			if err := p.Snapshot(); err != nil {
				p.log.Warn("write storage snapshot at start; duplicate, rejection and eviction counts start again at zero", "err", err)
				p.resetUnlogged(time.Unix(0, now))
			}
		}
	}
	return p, nil
}

// snapshotEvents is the number of events applied after which a snapshot is
// taken before its interval is over, bounding the replay at a restart.
const snapshotEvents = 200_000

// Start runs the idle-expiry sweep until Shutdown.
func (p *Processor) Start(_ context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started || p.shutdown {
		return errors.New("processor: already started or shut down")
	}
	p.started = true
	// Sweep often enough for both expiries to be late by a tenth at most.
	period := p.cfg.IdleExpiry
	if r := p.cfg.ClosedRetention; r > 0 && r < period {
		period = r
	}
	interval := min(max(period/10, 100*time.Millisecond), 10*time.Second)
	go p.sweepLoop(interval)
	if p.store != nil {
		snap := p.cfg.SnapshotInterval
		if snap <= 0 {
			snap = 10 * time.Second
		}
		go p.snapshotLoop(snap)
	}
	return nil
}

func (p *Processor) sweepLoop(interval time.Duration) {
	defer close(p.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-t.C:
			p.Sweep(now)
		}
	}
}

// Sweep forgets the conversations idle for longer than IdleExpiry at now.
// The background loop calls it; tests call it with their own clock.
func (p *Processor) Sweep(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.convs.expireIdle(now.UnixNano()-int64(p.cfg.IdleExpiry), p.forget)
	p.convs.expireClosed(now.UnixNano()-int64(p.cfg.ClosedRetention), p.forget)
}

// Shutdown stops the sweep. Safe without Start, idempotent. The totals stay
// readable for the final export.
func (p *Processor) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	if p.shutdown {
		p.mu.Unlock()
		return nil
	}
	p.shutdown = true
	started := p.started
	p.mu.Unlock()
	if p.store != nil {
		p.dmu.Lock()
		p.stopped = true
		p.dmu.Unlock()
		// The batches already reserved are written and applied before the
		// last snapshot (and before the store is closed).
		ended := make(chan struct{})
		go func() {
			p.batches.Wait()
			close(ended)
		}()
		select {
		case <-ended:
		case <-ctx.Done():
			return fmt.Errorf("processor shutdown: batches in flight: %w", ctx.Err())
		}
	}
	if !started {
		return nil
	}
	close(p.stop)
	for _, done := range []chan struct{}{p.done, p.snapshotDone} {
		if done == nil {
			continue
		}
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("processor shutdown: %w", ctx.Err())
		}
	}
	// A last snapshot makes the next start quick, and, with the unlogged
	// counts frozen, holds them all.
	p.freeze()
	if err := p.Snapshot(); err != nil {
		return fmt.Errorf("processor shutdown: %w", err)
	}
	return nil
}

// Consume implements Consumer.
func (p *Processor) Consume(ctx context.Context, events []*pb.Event, now time.Time, results []Result) error {
	if p.store != nil {
		if err := p.consumeDurable(events, now, results); err != nil {
			return err
		}
	} else {
		p.consumeMemory(events, now, results)
	}
	p.countUnlogged(events, results)
	return nil
}

// Begin implements Consumer. In memory mode the batch is applied before it
// returns; in durable mode its ids are reserved in the order of the calls
// and it is written and applied in the background, so that the batches of
// one stream share fsyncs.
func (p *Processor) Begin(ctx context.Context, events []*pb.Event, encoded []byte, now time.Time, results []Result) *Pending {
	if p.store != nil {
		return p.beginDurable(events, encoded, now, results)
	}
	p.consumeMemory(events, now, results)
	p.countUnlogged(events, results)
	return Ended(nil)
}

// consumeMemory is Consume in memory mode.
func (p *Processor) consumeMemory(events []*pb.Event, now time.Time, results []Result) {
	nowNano := now.UnixNano()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dedupe != nil {
		p.dedupe.expire(nowNano)
	}
	for i, ev := range events {
		if p.dedupe != nil && p.dedupe.duplicate(ev.GetEventId(), nowNano) {
			results[i] = Result{Outcome: Duplicate}
			continue
		}
		results[i] = p.apply(ev, nowNano, nil)
	}
}

// apply aggregates one new event. pr is the price of an LLM call as durable
// mode stored it with the event; nil prices it now (memory mode, and log
// entries written before prices were stored). p.mu is held.
func (p *Processor) apply(ev *pb.Event, now int64, pr *callPrice) Result {
	var c *conversation
	if id := ev.GetConversationId(); id != "" {
		c = p.track(id, now)
	}
	var res Result
	typ := typeNone
	switch payload := ev.GetPayload().(type) {
	case *pb.Event_LlmCall:
		typ = typeLLMCall
		var price callPrice
		if pr != nil {
			price = *pr
		} else {
			price = p.priceCall(payload.LlmCall, eventTime(ev, now))
		}
		p.applyLLMCall(c, ev.GetAgent(), payload.LlmCall, price)
	case *pb.Event_AgentStatus:
		typ = typeAgentStatus
		if c != nil {
			p.applyStatus(c, ev.GetAgent(), payload.AgentStatus.GetState())
		}
	case *pb.Event_Conversation:
		typ = typeConversation
		if limit := payload.Conversation.GetLimit(); limit != nil {
			p.life.limit, p.life.hasLimit = limit.GetMaxConcurrentConversations(), true
		} else if c != nil {
			res = p.applyConversation(c, payload.Conversation, now)
		}
	case *pb.Event_RuntimeFault:
		typ = typeRuntimeFault
		p.life.faults[payload.RuntimeFault.GetKind()]++
		if c != nil {
			c.faults++
		}
	}
	if res.Outcome == Accepted {
		p.accepted[typ]++
		if c != nil {
			c.noteEvent(ev, now)
			c.changed()
		}
	}
	if c != nil {
		c.dirty = true
		c.version++
	}
	return res
}

// eventTime is the time an event says it happened, else its receipt time
// (now, in Unix nanoseconds): the time its call is priced at.
func eventTime(ev *pb.Event, now int64) time.Time {
	if ts := ev.GetTime(); ts != nil {
		return ts.AsTime()
	}
	return time.Unix(0, now)
}

// track returns the ledger entry of conversation id, tracking it when new
// (an event for a conversation never seen created is not an error: the
// sidecar may have restarted). p.mu is held.
func (p *Processor) track(id string, now int64) *conversation {
	if c, ok := p.convs.byID[id]; ok {
		c.lastSeen = now
		p.convs.lru.MoveToFront(c.elem)
		return c
	}
	if c := p.lookup(id, now); c != nil { // tracked again, in front
		return c
	}
	c := p.convs.touch(id, now, p.forget)
	if c.firstEvent == 0 { // new
		if b := p.cfg.DefaultMaxBudgetUSD; b != nil {
			c.budget, c.hasBudget = *b, true
		}
	}
	return c
}

// noteEvent records an applied event's agent and time (receipt time when
// the event has none). p.mu is held.
func (c *conversation) noteEvent(ev *pb.Event, now int64) {
	if c.agent == "" && ev.GetAgent() != "" {
		c.agent = clone(ev.GetAgent())
	}
	t := now
	if ts := ev.GetTime(); ts != nil {
		t = ts.AsTime().UnixNano()
	}
	if c.firstEvent == 0 || t < c.firstEvent {
		c.firstEvent = t
	}
	if t > c.lastEvent {
		c.lastEvent = t
	}
}

// forget is called for every conversation dropped from tracking. p.mu is held.
func (p *Processor) forget(c *conversation, reason evictReason) {
	if c.closed {
		p.life.closedTracked--
	} else if c.state != pb.AgentState_AGENT_STATE_UNSPECIFIED {
		p.status.conversations[c.statusKey]--
	}
	if !p.unlogged.frozen {
		p.convs.evicted[reason]++
	}
	if p.store != nil {
		p.evicted[c.id] = c // until the next snapshot has written it
	}
}

// stateNames are the label values of AgentState: the lowercase OpenHands names.
var stateNames = func() []string {
	names := make([]string, len(pb.AgentState_name))
	for v, n := range pb.AgentState_name {
		names[v] = strings.ToLower(strings.TrimPrefix(n, "AGENT_STATE_"))
	}
	return names
}()

// StateName is the label value of s ("running", "awaiting_user_input", ...).
func StateName(s pb.AgentState) string {
	if int(s) < 0 || int(s) >= len(stateNames) {
		return "unknown"
	}
	return stateNames[s]
}
