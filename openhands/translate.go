package openhands

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/agentmeter/agentmeter/catalog"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// Agent is the gen_ai.agent.name of every event from the feed.
const Agent = "OpenHands"

// Bounds of the translator's memory.
const (
	maxUsageIDs      = 64     // usage buckets per conversation
	maxResponseIDs   = 100000 // response ids whose duration was observed, per conversation
	maxReasonBytes   = 1000   // agent status reason
	maxLatency       = 86400.0
	defaultMaxConvs  = 10000
	costGrowthEpsUSD = 1e-12
)

// Kinds of events the feed sends; any other counts as "other".
var knownKinds = map[string]bool{
	"ConversationStateUpdateEvent": true, "ConversationErrorEvent": true, "ObservationEvent": true,
	"ActionEvent": true, "MessageEvent": true, "AgentErrorEvent": true, "PauseEvent": true,
	"InterruptEvent": true, "UserRejectObservation": true, "StreamingDeltaEvent": true,
	"LLMCompletionLogEvent": true, "SystemPromptEvent": true, "CondensationRequest": true,
	"Condensation": true, "CondensationSummaryEvent": true, "TokenEvent": true,
	KindConversationInfo: true,
}

// KindConversationInfo is the kind counted for a POST {path}/conversations.
const KindConversationInfo = "ConversationInfo"

// kindLabel is the self-metric's kind of an event: bounded.
func kindLabel(kind string) string {
	if knownKinds[kind] {
		return kind
	}
	return "other"
}

// statusOf maps an execution_status to agentmeter's AgentState, as
// OpenHands' front end does (use-agent-state.ts).
var statusOf = map[string]pb.AgentState{
	"idle":                     pb.AgentState_AGENT_STATE_AWAITING_USER_INPUT,
	"running":                  pb.AgentState_AGENT_STATE_RUNNING,
	"paused":                   pb.AgentState_AGENT_STATE_PAUSED,
	"waiting_for_confirmation": pb.AgentState_AGENT_STATE_AWAITING_USER_CONFIRMATION,
	"finished":                 pb.AgentState_AGENT_STATE_FINISHED,
	"error":                    pb.AgentState_AGENT_STATE_ERROR,
	"stuck":                    pb.AgentState_AGENT_STATE_ERROR,
	"deleting":                 pb.AgentState_AGENT_STATE_STOPPED,
}

// bucket is the highest cumulative usage seen of one usage_id.
type bucket struct {
	prompt, completion, cacheRead, cacheWrite, reasoning int64
	cost                                                 float64
}

// convState is what the translator remembers of one conversation.
type convState struct {
	usage        map[string]*bucket
	latencies    map[string]struct{} // response ids whose duration was observed
	sawFullState bool
	created      bool
	tick         uint64 // last use, for eviction
}

// Duration is a call's latency learnt after its usage was applied.
type Duration struct {
	Call *pb.LLMCall // provider, request model, LatencySeconds
}

// Outcome of one feed event, for the self-metrics.
type Outcome struct {
	Kind    string // kindLabel
	Outcome string // catalog.OutcomeApplied / Ignored / Invalid
}

// translator turns feed events into agentmeter events. It is not safe for
// concurrent use: the Handler's mutex guards it.
type translator struct {
	convs    map[string]*convState
	maxConvs int
	tick     uint64
	// keep: the state is kept in a store, which must forget what t
	// forgets: the conversations evicted (dropped) and the response ids
	// cleared at the bound (forgotten), whatever becomes of the batch.
	keep      bool
	dropped   []string
	forgotten []stateRecord
}

func newTranslator(maxConvs int, keep bool) *translator {
	if maxConvs <= 0 {
		maxConvs = defaultMaxConvs
	}
	return &translator{convs: make(map[string]*convState), maxConvs: maxConvs, keep: keep}
}

// takeDropped returns the conversations evicted since the last call.
func (t *translator) takeDropped() []string {
	d := t.dropped
	t.dropped = nil
	return d
}

// takeForgotten returns the response ids cleared since the last call.
func (t *translator) takeForgotten() []stateRecord {
	f := t.forgotten
	t.forgotten = nil
	return f
}

// conv returns the state of conversation id, evicting the least recently
// used one at the bound.
func (t *translator) conv(id string) *convState {
	t.tick++
	if c, ok := t.convs[id]; ok {
		c.tick = t.tick
		return c
	}
	if len(t.convs) >= t.maxConvs {
		var oldest string
		var oldestTick uint64 = math.MaxUint64
		for k, c := range t.convs {
			if c.tick < oldestTick {
				oldest, oldestTick = k, c.tick
			}
		}
		delete(t.convs, oldest)
		if t.keep {
			t.dropped = append(t.dropped, oldest)
		}
	}
	c := &convState{usage: make(map[string]*bucket), latencies: make(map[string]struct{}), tick: t.tick}
	t.convs[id] = c
	return c
}

// convFor is conv for a batch: a conversation it creates is forgotten
// again on rollback.
func (t *translator) convFor(b *batch, id string) *convState {
	if _, ok := t.convs[id]; !ok {
		b.undo = append(b.undo, func() { delete(t.convs, id) })
	}
	return t.conv(id)
}

// batch is what one request translates into.
type batch struct {
	events    []*pb.Event
	durations []Duration
	outcomes  []Outcome
	problems  []string // why events were invalid, for the response
	// undo reverts the translator's state changes of this batch, last
	// first, when its events could not be applied.
	undo []func()
	// journal lists the state changes, for the store.
	journal []stateRecord
}

// rollback reverts b's state changes.
func (b *batch) rollback() {
	for i := len(b.undo) - 1; i >= 0; i-- {
		b.undo[i]()
	}
	b.undo, b.journal = nil, nil
}

func (b *batch) outcome(kind, outcome string) {
	b.outcomes = append(b.outcomes, Outcome{Kind: kindLabel(kind), Outcome: outcome})
}

func (b *batch) invalid(i int, kind, format string, args ...any) {
	b.outcome(kind, catalog.OutcomeInvalid)
	if len(b.problems) < 10 {
		b.problems = append(b.problems, fmt.Sprintf("event %d: ", i)+fmt.Sprintf(format, args...))
	}
}

// events translates the events of one POST {path}/events/{conv}: raw is
// the body's array, conv the normalised conversation id.
func (t *translator) events(conv string, raw []json.RawMessage) *batch {
	b := &batch{}
	cs := t.convFor(b, conv)
	for i, r := range raw {
		var ev event
		if err := json.Unmarshal(r, &ev); err != nil {
			b.invalid(i, "", "%v", err)
			continue
		}
		if ev.Kind == "" {
			b.invalid(i, "", "no \"kind\"")
			continue
		}
		n := len(b.events) + len(b.durations)
		if err := t.event(b, conv, cs, &ev); err != nil {
			b.invalid(i, ev.Kind, "%s: %v", ev.Kind, err)
			continue
		}
		if len(b.events)+len(b.durations) > n {
			b.outcome(ev.Kind, catalog.OutcomeApplied)
		} else {
			b.outcome(ev.Kind, catalog.OutcomeIgnored)
		}
	}
	return b
}

// event translates one feed event into b.
func (t *translator) event(b *batch, conv string, cs *convState, ev *event) error {
	switch ev.Kind {
	case "ConversationStateUpdateEvent":
		return t.stateUpdate(b, conv, cs, ev)
	case "ConversationErrorEvent":
		if ev.ID == "" {
			return fmt.Errorf("no id")
		}
		state := pb.AgentState_AGENT_STATE_ERROR
		if ev.Classification != nil && ev.Classification.Kind == "rate_limit" {
			state = pb.AgentState_AGENT_STATE_RATE_LIMITED
		}
		reason := ev.Code
		if ev.Detail != "" {
			reason += ": " + ev.Detail
		}
		b.events = append(b.events, statusEvent("oh-"+ev.ID, conv, state, reason))
	case "ObservationEvent":
		if kind, ok := timeout(ev.Observation); ok {
			if ev.ID == "" {
				return fmt.Errorf("no id")
			}
			b.events = append(b.events, &pb.Event{EventId: "oh-" + ev.ID, ConversationId: conv, Agent: Agent,
				Payload: &pb.Event_RuntimeFault{RuntimeFault: &pb.RuntimeFault{Kind: kind, ExitCode: -1}}})
		}
	case "LLMCompletionLogEvent":
		var log completionLog
		if ev.LogData == "" {
			return nil
		}
		if err := json.Unmarshal([]byte(ev.LogData), &log); err != nil {
			return fmt.Errorf("log_data: %w", err)
		}
		t.duration(b, conv, cs, ev.ModelName, log.Response.ID, log.LatencySec)
	}
	return nil
}

// stateUpdate translates a ConversationStateUpdateEvent.
func (t *translator) stateUpdate(b *batch, conv string, cs *convState, ev *event) error {
	if ev.ID == "" {
		return fmt.Errorf("no id")
	}
	switch ev.Key {
	case "execution_status":
		var s string
		if err := json.Unmarshal(ev.Value, &s); err != nil {
			return fmt.Errorf("execution_status value: %w", err)
		}
		state, ok := statusOf[s]
		if !ok {
			return fmt.Errorf("unknown execution_status %q", printable(s))
		}
		b.events = append(b.events, statusEvent("oh-"+ev.ID, conv, state, "execution_status "+s))
	case "stats":
		var st stats
		if err := json.Unmarshal(ev.Value, &st); err != nil {
			return fmt.Errorf("stats value: %w", err)
		}
		t.stats(b, conv, cs, &st, false)
	case "full_state":
		var fs conversationState
		if err := json.Unmarshal(ev.Value, &fs); err != nil {
			return fmt.Errorf("full_state value: %w", err)
		}
		if fs.Stats != nil {
			t.stats(b, conv, cs, fs.Stats, true)
		}
		if !cs.sawFullState {
			cs.sawFullState = true
			b.undo = append(b.undo, func() { cs.sawFullState = false })
			b.journal = append(b.journal, stateRecord{Conv: conv, FullState: true})
		}
		if state, ok := statusOf[fs.ExecutionStatus]; ok {
			b.events = append(b.events, statusEvent("oh-"+ev.ID+"-status", conv, state, "execution_status "+fs.ExecutionStatus))
		}
	}
	return nil
}

// info translates a ConversationInfo (POST {path}/conversations) of the
// conversation conv.
func (t *translator) info(conv string, ci *conversationInfo) *batch {
	b := &batch{}
	cs := t.convFor(b, conv)
	n := 0
	if ci.Stats != nil {
		t.stats(b, conv, cs, ci.Stats, true)
	}
	prefix := "oh-conv-" + conv
	if ci.ExecutionStatus == "deleting" {
		b.events = append(b.events,
			statusEvent(prefix+"-stopped", conv, pb.AgentState_AGENT_STATE_STOPPED, "execution_status deleting"),
			&pb.Event{EventId: prefix + "-closed", ConversationId: conv, Agent: Agent,
				Payload: &pb.Event_Conversation{Conversation: &pb.ConversationEvent{Kind: &pb.ConversationEvent_Closed{
					Closed: &pb.ConversationClosed{Reason: pb.CloseReason_CLOSE_REASON_DELETED}}}}})
	} else {
		if !cs.created {
			created := &pb.ConversationCreated{Trigger: pb.ConversationTrigger_CONVERSATION_TRIGGER_API}
			if ci.Stats != nil {
				for _, m := range ci.Stats.UsageToMetrics {
					if m.MaxBudgetPerTask != nil && *m.MaxBudgetPerTask > 0 {
						created.MaxBudgetUsd = m.MaxBudgetPerTask
						break
					}
				}
			}
			b.events = append(b.events, &pb.Event{EventId: prefix + "-created", ConversationId: conv, Agent: Agent,
				Payload: &pb.Event_Conversation{Conversation: &pb.ConversationEvent{Kind: &pb.ConversationEvent_Created{Created: created}}}})
			cs.created = true
			b.undo = append(b.undo, func() { cs.created = false })
			b.journal = append(b.journal, stateRecord{Conv: conv, Created: true})
		}
		state, ok := statusOf[ci.ExecutionStatus]
		if !cs.sawFullState {
			// Before the first full_state the agent is still loading.
			state, ok = pb.AgentState_AGENT_STATE_LOADING, true
		}
		if ok {
			b.events = append(b.events, statusEvent(prefix+"-status-"+hash(ci.ExecutionStatus, ci.UpdatedAt, state.String()), conv, state,
				"execution_status "+printable(ci.ExecutionStatus)))
		}
	}
	if len(b.events)+len(b.durations) > n {
		b.outcome(KindConversationInfo, catalog.OutcomeApplied)
	} else {
		b.outcome(KindConversationInfo, catalog.OutcomeIgnored)
	}
	return b
}

// stats applies a cumulative snapshot: for each usage_id, the increase over
// the highest values seen becomes one LLM call; with latencies (full_state,
// ConversationInfo), each new response id's duration.
func (t *translator) stats(b *batch, conv string, cs *convState, st *stats, latencies bool) {
	for usageID, m := range st.UsageToMetrics {
		if ev := t.snapshot(b, conv, cs, usageID, &m); ev != nil {
			b.events = append(b.events, ev)
		}
		if latencies {
			for _, rl := range m.ResponseLatencies {
				model := rl.Model
				if model == "" {
					model = m.ModelName
				}
				t.duration(b, conv, cs, model, rl.ResponseID, rl.Latency)
			}
		}
	}
}

// snapshot returns the LLM call of a usage bucket's increase, or nil.
func (t *translator) snapshot(ba *batch, conv string, cs *convState, usageID string, m *metricsSnapshot) *pb.Event {
	var tu tokenUsage
	if m.AccumulatedTokenUsage != nil {
		tu = *m.AccumulatedTokenUsage
	}
	b, ok := cs.usage[usageID]
	if !ok {
		if len(cs.usage) >= maxUsageIDs {
			return nil
		}
		b = &bucket{}
		cs.usage[usageID] = b
		ba.undo = append(ba.undo, func() { delete(cs.usage, usageID) })
	}
	old := *b
	grow := func(seen *int64, now int64) int64 {
		if now > *seen {
			d := now - *seen
			*seen = now
			return d
		}
		return 0
	}
	call := &pb.LLMCall{
		LlmService:       usageID,
		PromptTokens:     grow(&b.prompt, tu.PromptTokens),
		CompletionTokens: grow(&b.completion, tu.CompletionTokens),
		CacheReadTokens:  grow(&b.cacheRead, tu.CacheReadTokens),
		CacheWriteTokens: grow(&b.cacheWrite, tu.CacheWriteTokens),
		ReasoningTokens:  grow(&b.reasoning, tu.ReasoningTokens),
		ContextWindow:    max(tu.ContextWindow, 0),
	}
	tokensGrew := call.PromptTokens+call.CompletionTokens+call.CacheReadTokens+call.CacheWriteTokens+call.ReasoningTokens > 0
	var cost float64
	costGrew := false
	if c := m.AccumulatedCost; !math.IsNaN(c) && !math.IsInf(c, 0) && c > b.cost+costGrowthEpsUSD {
		cost, costGrew = c-b.cost, true
		b.cost = c
	}
	if !tokensGrew && !costGrew {
		return nil
	}
	ba.undo = append(ba.undo, func() { *b = old })
	ba.journal = append(ba.journal, stateRecord{Conv: conv, Usage: usageID, Prompt: b.prompt, Completion: b.completion,
		CacheRead: b.cacheRead, CacheWrite: b.cacheWrite, Reasoning: b.reasoning, Cost: b.cost})
	// A bucket whose cost did not grow while its tokens did is one
	// OpenHands could not price: leave the cost unset for the table.
	if costGrew {
		call.CostUsd = &cost
	}
	name := m.ModelName
	if name == "" {
		name = tu.Model
	}
	call.Provider, call.RequestModel = splitModel(name)
	// The id names the cumulative values reached: a repeated snapshot, a
	// retried batch or a replay after a restart (with durable dedupe)
	// yields the same id.
	id := "oh-llm-" + hash(conv, usageID,
		strconv.FormatInt(b.prompt, 10), strconv.FormatInt(b.completion, 10),
		strconv.FormatInt(b.cacheRead, 10), strconv.FormatInt(b.cacheWrite, 10),
		strconv.FormatInt(b.reasoning, 10), strconv.FormatFloat(b.cost, 'g', -1, 64))
	return &pb.Event{EventId: id, ConversationId: conv, Agent: Agent, Payload: &pb.Event_LlmCall{LlmCall: call}}
}

// duration records the latency of response id once per conversation.
func (t *translator) duration(b *batch, conv string, cs *convState, model, responseID string, latency float64) {
	if responseID == "" || !(latency > 0) || latency > maxLatency {
		return
	}
	if _, seen := cs.latencies[responseID]; seen {
		return
	}
	if len(cs.latencies) >= maxResponseIDs {
		if t.keep {
			for r := range cs.latencies {
				t.forgotten = append(t.forgotten, stateRecord{Conv: conv, Response: r})
			}
		}
		clear(cs.latencies)
	}
	cs.latencies[responseID] = struct{}{}
	b.undo = append(b.undo, func() { delete(cs.latencies, responseID) })
	b.journal = append(b.journal, stateRecord{Conv: conv, Response: responseID})
	provider, requestModel := splitModel(model)
	b.durations = append(b.durations, Duration{Call: &pb.LLMCall{Provider: provider, RequestModel: requestModel, LatencySeconds: latency}})
}

// timeout reports the runtime fault of a terminal observation that timed
// out (exit code -1), told apart by its suffix.
func timeout(o *observation) (pb.RuntimeFaultKind, bool) {
	if o == nil || o.Kind != "TerminalObservation" {
		return 0, false
	}
	code := o.ExitCode
	if code == nil && o.Metadata != nil {
		code = o.Metadata.ExitCode
	}
	if code == nil || *code != -1 || o.Metadata == nil {
		return 0, false
	}
	switch s := o.Metadata.Suffix; {
	case strings.Contains(s, "no new output after"):
		return pb.RuntimeFaultKind_RUNTIME_FAULT_KIND_COMMAND_TIMEOUT_SOFT, true
	case strings.Contains(s, "timed out after"):
		return pb.RuntimeFaultKind_RUNTIME_FAULT_KIND_COMMAND_TIMEOUT_HARD, true
	}
	return 0, false
}

func statusEvent(id, conv string, state pb.AgentState, reason string) *pb.Event {
	return &pb.Event{EventId: id, ConversationId: conv, Agent: Agent,
		Payload: &pb.Event_AgentStatus{AgentStatus: &pb.AgentStatus{State: state, Reason: printable(reason)}}}
}

// hash is a short stable digest of parts.
func hash(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// printable makes s a valid status reason: UTF-8, at most maxReasonBytes.
func printable(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) > maxReasonBytes {
		s = s[:maxReasonBytes]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return s
}
