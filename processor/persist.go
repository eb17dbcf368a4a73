package processor

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/agentmeter/agentmeter/catalog"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// The persisted forms of the processor's state (see durable.go). They are
// gob-encoded: a field added later decodes as its zero value from an older
// snapshot, and a field removed is ignored.

// stateVersion is written in every snapshot; a snapshot of another version
// is refused rather than misread.
const stateVersion = 1

type histState struct {
	Counts             []uint64
	Count              uint64
	Sum, Min, Max      float64
	HasValues, Omitted bool
}

func saveHist(h *histogram) histState {
	return histState{Counts: h.counts, Count: h.count, Sum: h.sum, Min: h.min, Max: h.max, HasValues: h.count > 0}
}

// restore copies s into h; a histogram of other buckets (the catalogue
// changed) is an error.
func (s histState) restore(h *histogram) error {
	if len(s.Counts) != len(h.counts) {
		return fmt.Errorf("stored histogram has %d buckets, this version has %d", len(s.Counts), len(h.counts))
	}
	copy(h.counts, s.Counts)
	h.count, h.sum = s.Count, s.Sum
	if s.HasValues {
		h.min, h.max = s.Min, s.Max
	}
	return nil
}

type seriesState struct {
	Operation, Provider, RequestModel, ResponseModel, Agent string

	Tokens       [numTokenTypes]int64
	Cost         [numCostSources]float64
	CostSeen     [numCostSources]bool
	CacheSavings float64
	Priced       bool
	Unpriced     int64
	TokenUsage   [2]histState
	TTFT         histState
	CtxUtil      histState
	Duration     map[string]histState
}

func saveSeries(k llmKey, s *llmSeries) seriesState {
	st := seriesState{
		Operation: k.operation, Provider: k.provider, RequestModel: k.requestModel,
		ResponseModel: k.responseModel, Agent: k.agent,
		Tokens: s.tokens, Cost: s.cost, CostSeen: s.costSeen, CacheSavings: s.cacheSavings,
		Priced: s.priced, Unpriced: s.unpriced,
		TokenUsage: [2]histState{saveHist(s.tokenUsage[0]), saveHist(s.tokenUsage[1])},
		TTFT:       saveHist(s.ttft), CtxUtil: saveHist(s.ctxUtil),
		Duration: make(map[string]histState, len(s.duration)),
	}
	for e, h := range s.duration {
		st.Duration[e] = saveHist(h)
	}
	return st
}

func (st seriesState) restore(s *llmSeries) error {
	s.tokens, s.cost, s.costSeen = st.Tokens, st.Cost, st.CostSeen
	s.cacheSavings, s.priced, s.unpriced = st.CacheSavings, st.Priced, st.Unpriced
	errs := []error{st.TokenUsage[0].restore(s.tokenUsage[0]), st.TokenUsage[1].restore(s.tokenUsage[1]),
		st.TTFT.restore(s.ttft), st.CtxUtil.restore(s.ctxUtil)}
	for e, h := range st.Duration {
		errs = append(errs, h.restore(s.durationHist(e)))
	}
	return errors.Join(errs...)
}

type statusCount struct {
	Agent string
	State pb.AgentState
	N     int64
}

type aggregateState struct {
	Version       int
	Series        []seriesState
	Overflow      *seriesState
	OverflowCalls int64
	Agents        []string
	Transitions   []statusCount

	Created      []int64
	SessionStart [2]histState
	Closed       []int64
	ConvCost     histState
	ConvTokens   histState
	Faults       []int64
	Crossings    [len(budgetThresholds)]int64
	Limit        int64
	HasLimit     bool

	// Evicted is restored only with Ingest.Final (see tally.go).
	Evicted     [numEvictReasons]int64
	Saturations int64
	// Tracked are the ids of the conversations in memory, most recently
	// active first; their records are stored apart.
	Tracked []string

	// Ingest counts every event's outcome; nil in a snapshot of a version
	// that did not count them.
	Ingest *ingestState
}

// ingestState is the persisted form of agentmeter.receiver.events (see
// tally.go). Times are Unix nanoseconds.
type ingestState struct {
	AcceptedStart int64
	Accepted      [numPayloadTypes]int64
	// Final: written by a clean shutdown, with the unlogged counts frozen;
	// only then are the unlogged counts below (and Evicted) restored.
	Final               bool
	UnloggedStart       int64
	Duplicate, Rejected [numPayloadTypes]int64
}

// saveAggregate encodes everything but the conversations. p.mu is held.
func (p *Processor) saveAggregate() ([]byte, error) {
	st := aggregateState{
		Version:       stateVersion,
		OverflowCalls: p.overflowCalls,
		Created:       p.life.created,
		SessionStart:  [2]histState{saveHist(p.life.sessionStart[0]), saveHist(p.life.sessionStart[1])},
		Closed:        p.life.closed,
		ConvCost:      saveHist(p.life.convCost),
		ConvTokens:    saveHist(p.life.convTokens),
		Faults:        p.life.faults,
		Crossings:     p.life.crossings,
		Limit:         p.life.limit,
		HasLimit:      p.life.hasLimit,
		Evicted:       p.convs.evicted,
		Saturations:   p.saturations,
	}
	p.unlogged.mu.Lock()
	st.Ingest = &ingestState{
		AcceptedStart: p.acceptedStart.UnixNano(), Accepted: p.accepted,
		Final: p.unlogged.frozen, UnloggedStart: p.unlogged.start.UnixNano(),
		Duplicate: p.unlogged.duplicate, Rejected: p.unlogged.rejected,
	}
	p.unlogged.mu.Unlock()
	for k, s := range p.llm {
		st.Series = append(st.Series, saveSeries(k, s))
	}
	if p.overflow != nil {
		o := saveSeries(llmKey{}, p.overflow)
		st.Overflow = &o
	}
	for name := range p.status.agents {
		st.Agents = append(st.Agents, name)
	}
	for k, n := range p.status.transitions {
		st.Transitions = append(st.Transitions, statusCount{Agent: k.agent, State: k.state, N: n})
	}
	for e := p.convs.lru.Front(); e != nil; e = e.Next() {
		st.Tracked = append(st.Tracked, e.Value.(*conversation).id)
	}
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(&st); err != nil {
		return nil, fmt.Errorf("encode processor snapshot: %w", err)
	}
	return buf.Bytes(), nil
}

// restoreAggregate decodes a snapshot into a new processor; loadConv reads
// the record of a tracked conversation.
func (p *Processor) restoreAggregate(b []byte, loadConv func(id string) (*conversation, error)) error {
	var st aggregateState
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&st); err != nil {
		return fmt.Errorf("decode processor snapshot: %w", err)
	}
	if st.Version != stateVersion {
		return fmt.Errorf("processor snapshot has version %d, this collector reads %d", st.Version, stateVersion)
	}
	var errs []error
	for _, ss := range st.Series {
		k := llmKey{operation: ss.Operation, provider: ss.Provider, requestModel: ss.RequestModel,
			responseModel: ss.ResponseModel, agent: ss.Agent}
		s := newSeriesFor(k)
		errs = append(errs, ss.restore(s))
		p.llm[k] = s
	}
	if st.Overflow != nil {
		p.overflow = newLLMSeries(catalog.AttrOverflow.Bool(true))
		errs = append(errs, st.Overflow.restore(p.overflow))
	}
	p.overflowCalls = st.OverflowCalls
	for _, a := range st.Agents {
		p.status.agents[a] = a
	}
	for _, t := range st.Transitions {
		p.status.transitions[p.status.key(t.Agent, t.State)] = t.N
	}
	copy(p.life.created, st.Created)
	copy(p.life.closed, st.Closed)
	copy(p.life.faults, st.Faults)
	errs = append(errs, st.SessionStart[0].restore(p.life.sessionStart[0]), st.SessionStart[1].restore(p.life.sessionStart[1]),
		st.ConvCost.restore(p.life.convCost), st.ConvTokens.restore(p.life.convTokens))
	p.life.crossings, p.life.limit, p.life.hasLimit = st.Crossings, st.Limit, st.HasLimit
	p.saturations = st.Saturations
	p.restoreIngest(st.Ingest, st.Evicted)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("restore processor snapshot: %w", err)
	}
	// Back to front, so that the most recently active ends up in front.
	var closed []*conversation
	for _, id := range slices.Backward(st.Tracked) {
		c, err := loadConv(id)
		if err != nil {
			return err
		}
		if c == nil {
			continue // deleted by retention meanwhile
		}
		p.insert(c)
		if c.closed {
			closed = append(closed, c)
		}
	}
	slices.SortStableFunc(closed, func(a, b *conversation) int { return cmp.Compare(a.closedAt, b.closedAt) })
	p.convs.closed = append(p.convs.closed, closed...)
	return nil
}

// restoreIngest restores the event outcome counts of a snapshot: the
// accepted ones always (the log replay adds those after it), the unlogged
// ones and evictions only from the final snapshot of a clean shutdown.
func (p *Processor) restoreIngest(in *ingestState, evicted [numEvictReasons]int64) {
	if in == nil {
		// Written before events were counted: they are counted from now,
		// under a new start time.
		p.acceptedStart = p.unlogged.start
		return
	}
	p.accepted, p.acceptedStart = in.Accepted, time.Unix(0, in.AcceptedStart)
	if !in.Final {
		return
	}
	u := &p.unlogged
	u.start, u.duplicate, u.rejected, u.resumed = time.Unix(0, in.UnloggedStart), in.Duplicate, in.Rejected, true
	p.convs.evicted = evicted
}

type perTurnState struct {
	Service string
	Tokens  int64
}

type conversationState struct {
	ID, Agent             string
	State                 pb.AgentState
	StatusAgent           string
	LastSeen, TrackedAt   int64
	FirstEvent, LastEvent int64
	Cost                  [numCostSources]float64
	Unpriced              int64
	Tokens                [numLedgerTokens]int64
	ContextWindow         int64
	ContextUtil           float64
	PerTurn               []perTurnState
	Calls, Failed, Faults int64
	Created               bool
	Trigger               pb.ConversationTrigger
	Budget                float64
	HasBudget             bool
	Crossed               uint8
	Closed                bool
	CloseReason           pb.CloseReason
	ClosedAt              int64
}

// encodeConversation is a conversation's stored record: its last-seen time
// (8 bytes, read by the retention pass without decoding) and its state.
func encodeConversation(c *conversation) ([]byte, error) {
	st := conversationState{
		ID: c.id, Agent: c.agent, State: c.state, StatusAgent: c.statusKey.agent,
		LastSeen: c.lastSeen, TrackedAt: c.trackedAt, FirstEvent: c.firstEvent, LastEvent: c.lastEvent,
		Cost: c.cost, Unpriced: c.unpriced, Tokens: c.tokens, ContextWindow: c.contextWindow,
		ContextUtil: c.contextUtil, Calls: c.calls, Failed: c.failed, Faults: c.faults,
		Created: c.created, Trigger: c.trigger, Budget: c.budget, HasBudget: c.hasBudget,
		Crossed: c.crossed, Closed: c.closed, CloseReason: c.closeReason, ClosedAt: c.closedAt,
	}
	for _, pt := range c.perTurn {
		st.PerTurn = append(st.PerTurn, perTurnState{Service: pt.service, Tokens: pt.tokens})
	}
	buf := bytes.NewBuffer(binary.BigEndian.AppendUint64(make([]byte, 0, 512), uint64(c.lastSeen)))
	if err := gob.NewEncoder(buf).Encode(&st); err != nil {
		return nil, fmt.Errorf("encode conversation %q: %w", c.id, err)
	}
	return buf.Bytes(), nil
}

// recordLastSeen is the last-seen time of a stored record.
func recordLastSeen(rec []byte) (int64, bool) {
	if len(rec) < 8 {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(rec)), true
}

// decodeConversation rebuilds a conversation from its record; its status
// key is resolved in p's status table. p.mu is held (or p is being built).
func (p *Processor) decodeConversation(rec []byte) (*conversation, error) {
	if len(rec) < 8 {
		return nil, errors.New("stored conversation record is too short")
	}
	var st conversationState
	if err := gob.NewDecoder(bytes.NewReader(rec[8:])).Decode(&st); err != nil {
		return nil, fmt.Errorf("decode stored conversation: %w", err)
	}
	c := &conversation{
		id: st.ID, agent: st.Agent, state: st.State,
		lastSeen: st.LastSeen, trackedAt: st.TrackedAt, firstEvent: st.FirstEvent, lastEvent: st.LastEvent,
		cost: st.Cost, unpriced: st.Unpriced, tokens: st.Tokens, contextWindow: st.ContextWindow,
		contextUtil: st.ContextUtil, calls: st.Calls, failed: st.Failed, faults: st.Faults,
		created: st.Created, trigger: st.Trigger, budget: st.Budget, hasBudget: st.HasBudget,
		crossed: st.Crossed, closed: st.Closed, closeReason: st.CloseReason, closedAt: st.ClosedAt,
	}
	for _, pt := range st.PerTurn {
		c.perTurn = append(c.perTurn, perTurn{service: pt.Service, tokens: pt.Tokens})
	}
	if c.state != pb.AgentState_AGENT_STATE_UNSPECIFIED {
		c.statusKey = p.status.key(st.StatusAgent, c.state)
	}
	return c, nil
}
