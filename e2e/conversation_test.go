package e2e

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// This file tests conversations end to end: the ledger behind UsageService
// (GetUsage, WatchUsage, ListUsage) and the lifecycle series (created,
// session starts, closes, budgets, runtime faults), through the real binary.
// Every expected value is worked out here, by a small model of the ledger fed
// the same events, never by the collector's own packages.

// convConfig is the conversations section of a collector config.
type convConfig struct {
	IdleExpiry      time.Duration
	ClosedRetention time.Duration
	DefaultBudget   float64 // USD; 0 = no default budget
}

func convConfigYAML(cc convConfig, grpcAddr, httpAddr string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `receiver:
  grpc:
    endpoint: %q
  dedupe_window: 10m
http:
  endpoint: %q
exporters:
  prometheus:
    enabled: true
    path: /metrics
  otlp:
    enabled: false
conversations:
  idle_expiry: %s
  closed_retention: %s
`, grpcAddr, httpAddr, cc.IdleExpiry, cc.ClosedRetention)
	if cc.DefaultBudget > 0 {
		fmt.Fprintf(&b, "  default_max_budget_usd: %v\n", cc.DefaultBudget)
	}
	b.WriteString(`shutdown:
  grace_period: 10s
log:
  level: debug
  format: text
`)
	return b.String()
}

// startConvCollector is startCollector with a conversations section that
// options cannot express (closed_retention, default_max_budget_usd).
func startConvCollector(t *testing.T, cc convConfig) (*collector, pb.UsageServiceClient) {
	t.Helper()
	needBinary(t)
	o := options{GracePeriod: 10 * time.Second}.withDefaults()
	dir := t.TempDir()
	for attempt := 1; ; attempt++ {
		grpcAddr, httpAddr := freePair(t)
		cfg := convConfigYAML(cc, grpcAddr, httpAddr)
		path := filepath.Join(dir, fmt.Sprintf("config-%d.yaml", attempt))
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatalf("write config: %v", err)
		}
		c := launch(t, o, path, grpcAddr, httpAddr)
		err := c.waitReady(readyTimeout)
		if err == nil {
			return c, pb.NewUsageServiceClient(c.conn)
		}
		if c.hasExited() && strings.Contains(c.stderr.String(), "address already in use") && attempt < 3 {
			t.Logf("collector could not listen (attempt %d), retrying on other ports", attempt)
			continue
		}
		t.Fatalf("collector not ready: %v\nconfig:\n%s", err, cfg)
	}
}

// ---------------------------------------------------------------- prices

// convPrice is a list price in USD per million tokens.
type convPrice struct{ input, output, cacheRead, cacheWrite, cacheWrite1h float64 }

// convBuiltinVersion is the version of the built-in price table the prices
// below were copied from (the LiteLLM snapshot in pricing/snapshot). The replay checks it
// on agentmeter_pricing_table_info, so that a new table fails with a clear
// message instead of a cost mismatch.
const convBuiltinVersion = "litellm-1.110.2"

// convPrices are the published prices of the priced models of the replay,
// by the response model the calls report, copied by hand from the table.
// All prompts stay under Sonnet's 200k long-context tier.
var convPrices = map[string]convPrice{
	"claude-sonnet-4-5-20250929": {input: 3.00, output: 15.00, cacheRead: 0.30, cacheWrite: 3.75, cacheWrite1h: 6.00},
	"claude-haiku-4-5-20251001":  {input: 1.00, output: 5.00, cacheRead: 0.10, cacheWrite: 1.25, cacheWrite1h: 2.00},
	// OpenAI bills no cache writes: cache_write falls back to input.
	"gpt-4o-2024-08-06": {input: 2.50, output: 10.00, cacheRead: 1.25, cacheWrite: 2.50, cacheWrite1h: 2.50},
}

// convAliases are the request models of the replay that the table lists as
// aliases: a call without a response model (a failed one) is priced by its
// request model.
var convAliases = map[string]string{
	"claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
	"claude-haiku-4-5":  "claude-haiku-4-5-20251001",
	"gpt-4o":            "gpt-4o-2024-08-06",
}

// ---------------------------------------------------------------- model

// convLLM is one LLM call of the replay.
type convLLM struct {
	service                    string // llm_service; "" counts as agent
	provider, model, respModel string
	prompt, completion         int64
	cacheRead, cacheWrite      int64
	write1h, reasoning         int64
	contextWindow              int64
	latency                    float64
	cost                       *float64 // reported cost; nil = let the sidecar price it
	errorType                  string
}

// convLedger is the model of one conversation's ledger entry.
type convLedger struct {
	id, agent          string
	reported, computed float64
	unpriced           int64
	tokens             pb.TokenUsage
	contextWindow      int64
	perTurn            map[string]int64
	contextUtil        float64
	calls, failed      int64
	state              pb.AgentState
	first, last        time.Time
	budget             *float64
	crossed            [3]bool
	closed             bool
	closeReason        pb.CloseReason
	trigger            pb.ConversationTrigger
	faults             int64
}

var convThresholds = [3]struct {
	frac  float64
	label string
}{{0.5, "50"}, {0.8, "80"}, {1, "100"}}

func (l *convLedger) cost() float64 { return l.reported + l.computed }

func (l *convLedger) proto() *pb.ConversationUsage {
	u := &pb.ConversationUsage{
		ConversationId:     l.id,
		Agent:              l.agent,
		CostUsd:            l.cost(),
		ReportedCostUsd:    l.reported,
		ComputedCostUsd:    l.computed,
		UnpricedCalls:      l.unpriced,
		Tokens:             proto.Clone(&l.tokens).(*pb.TokenUsage),
		ContextWindow:      l.contextWindow,
		ContextUtilization: l.contextUtil,
		Calls:              l.calls,
		FailedCalls:        l.failed,
		State:              l.state,
		FirstEventTime:     timestamppb.New(l.first),
		LastEventTime:      timestamppb.New(l.last),
		Closed:             l.closed,
		CloseReason:        l.closeReason,
		Trigger:            l.trigger,
		RuntimeFaults:      l.faults,
	}
	for s, n := range l.perTurn {
		u.PerTurnTokens = append(u.PerTurnTokens, &pb.PerTurnTokens{LlmService: s, Tokens: n})
	}
	if l.budget != nil {
		b, rem := *l.budget, *l.budget-l.cost()
		u.MaxBudgetUsd, u.RemainingUsd = &b, &rem
		u.BudgetExceeded = l.cost() >= *l.budget
	}
	return u
}

// convDiff lists the fields of got that differ from want: floats to 1e-9
// USD, per-turn tokens as a set.
func convDiff(got, want *pb.ConversationUsage) []string {
	var d []string
	eq := func(field string, g, w any) {
		if g != w {
			d = append(d, fmt.Sprintf("%s = %v, want %v", field, g, w))
		}
	}
	feq := func(field string, g, w float64) {
		if !near(g, w) {
			d = append(d, fmt.Sprintf("%s = %.12f, want %.12f", field, g, w))
		}
	}
	optf := func(field string, g, w *float64) {
		switch {
		case (g == nil) != (w == nil):
			d = append(d, fmt.Sprintf("%s present = %v, want %v", field, g != nil, w != nil))
		case g != nil:
			feq(field, *g, *w)
		}
	}
	eq("conversation_id", got.GetConversationId(), want.GetConversationId())
	eq("agent", got.GetAgent(), want.GetAgent())
	feq("cost_usd", got.GetCostUsd(), want.GetCostUsd())
	feq("reported_cost_usd", got.GetReportedCostUsd(), want.GetReportedCostUsd())
	feq("computed_cost_usd", got.GetComputedCostUsd(), want.GetComputedCostUsd())
	eq("unpriced_calls", got.GetUnpricedCalls(), want.GetUnpricedCalls())
	if !proto.Equal(got.GetTokens(), want.GetTokens()) {
		d = append(d, fmt.Sprintf("tokens = {%v}, want {%v}", got.GetTokens(), want.GetTokens()))
	}
	eq("context_window", got.GetContextWindow(), want.GetContextWindow())
	perTurn := func(u *pb.ConversationUsage) map[string]int64 {
		m := map[string]int64{}
		for _, p := range u.GetPerTurnTokens() {
			m[p.GetLlmService()] = p.GetTokens()
		}
		return m
	}
	if g, w := perTurn(got), perTurn(want); len(g) != len(got.GetPerTurnTokens()) || fmt.Sprint(g) != fmt.Sprint(w) {
		d = append(d, fmt.Sprintf("per_turn_tokens = %v, want %v", got.GetPerTurnTokens(), w))
	}
	feq("context_utilization", got.GetContextUtilization(), want.GetContextUtilization())
	eq("calls", got.GetCalls(), want.GetCalls())
	eq("failed_calls", got.GetFailedCalls(), want.GetFailedCalls())
	eq("state", got.GetState(), want.GetState())
	eq("first_event_time", got.GetFirstEventTime().AsTime(), want.GetFirstEventTime().AsTime())
	eq("last_event_time", got.GetLastEventTime().AsTime(), want.GetLastEventTime().AsTime())
	optf("max_budget_usd", got.MaxBudgetUsd, want.MaxBudgetUsd)
	optf("remaining_usd", got.RemainingUsd, want.RemainingUsd)
	eq("budget_exceeded", got.GetBudgetExceeded(), want.GetBudgetExceeded())
	eq("closed", got.GetClosed(), want.GetClosed())
	eq("close_reason", got.GetCloseReason(), want.GetCloseReason())
	eq("trigger", got.GetTrigger(), want.GetTrigger())
	eq("runtime_faults", got.GetRuntimeFaults(), want.GetRuntimeFaults())
	return d
}

// convTotals are the expected process-wide series.
type convTotals struct {
	tokens        map[string]float64 // by gen_ai_token_type
	reported      float64
	computed      float64
	savings       float64
	unpriced      map[string]float64 // by request model
	created       map[string]float64 // by trigger label
	sessionStarts map[bool][]float64
	closed        map[string]float64 // by reason label
	closedCost    []float64
	closedTokens  []float64
	faults        map[string]float64 // by kind label
	crossings     map[string]float64 // by threshold label
	transitions   map[string]float64 // by agent_state label (one agent)
	limit         float64
	failedByType  map[string]float64
}

// convReplay builds batches of events and applies each event to the model
// as it goes.
type convReplay struct {
	t       *testing.T
	clock   time.Time // event time of the next event
	seq     int
	batch   []*pb.Event
	ledgers map[string]*convLedger
	order   []string // conversation ids in the order first tracked
	tot     convTotals
	defBud  float64
}

func newConvReplay(t *testing.T, start time.Time, defaultBudget float64) *convReplay {
	return &convReplay{
		t: t, clock: start, ledgers: map[string]*convLedger{}, defBud: defaultBudget,
		tot: convTotals{
			tokens: map[string]float64{}, unpriced: map[string]float64{}, created: map[string]float64{},
			sessionStarts: map[bool][]float64{}, closed: map[string]float64{}, faults: map[string]float64{},
			crossings: map[string]float64{}, transitions: map[string]float64{}, failedByType: map[string]float64{},
		},
	}
}

// event appends an event for conversation conv (none when "") dated a few
// seconds after the previous one, and returns the conversation's model.
func (r *convReplay) event(conv string, step time.Duration, payload func(*pb.Event)) *convLedger {
	r.seq++
	r.clock = r.clock.Add(step)
	ev := &pb.Event{
		EventId:        fmt.Sprintf("replay-%03d", r.seq),
		Time:           timestamppb.New(r.clock),
		ConversationId: conv,
		Agent:          codeAct,
	}
	payload(ev)
	r.batch = append(r.batch, ev)
	if conv == "" {
		return nil
	}
	l, ok := r.ledgers[conv]
	if !ok {
		// An event for a conversation never created starts tracking it,
		// with the configured default budget.
		l = &convLedger{id: conv, agent: codeAct, perTurn: map[string]int64{}, first: r.clock}
		if r.defBud > 0 {
			b := r.defBud
			l.budget = &b
		}
		r.ledgers[conv] = l
		r.order = append(r.order, conv)
	}
	l.last = r.clock
	return l
}

func convEnumLabel(name, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(name, prefix))
}

func (r *convReplay) created(conv string, trigger pb.ConversationTrigger, budget *float64) {
	l := r.event(conv, 2*time.Second, func(ev *pb.Event) {
		ev.Payload = &pb.Event_Conversation{Conversation: &pb.ConversationEvent{Kind: &pb.ConversationEvent_Created{
			Created: &pb.ConversationCreated{MaxBudgetUsd: budget, Trigger: trigger}}}}
	})
	l.trigger = trigger
	if budget != nil {
		b := *budget
		l.budget = &b
	}
	r.tot.created[convEnumLabel(trigger.String(), "CONVERSATION_TRIGGER_")]++
	r.checkBudget(l)
}

func (r *convReplay) sessionStarted(conv string, success bool, seconds float64) {
	r.event(conv, time.Duration(seconds*float64(time.Second)), func(ev *pb.Event) {
		ev.Payload = &pb.Event_Conversation{Conversation: &pb.ConversationEvent{Kind: &pb.ConversationEvent_SessionStarted{
			SessionStarted: &pb.SessionStarted{Success: success, DurationSeconds: seconds}}}}
	})
	r.tot.sessionStarts[success] = append(r.tot.sessionStarts[success], seconds)
}

func (r *convReplay) status(conv string, state pb.AgentState) {
	l := r.event(conv, time.Second, func(ev *pb.Event) {
		ev.Payload = &pb.Event_AgentStatus{AgentStatus: &pb.AgentStatus{State: state}}
	})
	if l.state != state {
		r.tot.transitions[convEnumLabel(state.String(), "AGENT_STATE_")]++
		l.state = state
	}
}

func (r *convReplay) fault(conv string, kind pb.RuntimeFaultKind, exitCode int32) {
	l := r.event(conv, 3*time.Second, func(ev *pb.Event) {
		ev.Payload = &pb.Event_RuntimeFault{RuntimeFault: &pb.RuntimeFault{Kind: kind, ExitCode: exitCode}}
	})
	l.faults++
	r.tot.faults[convEnumLabel(kind.String(), "RUNTIME_FAULT_KIND_")]++
}

func (r *convReplay) limit(n int64) {
	r.event("", time.Second, func(ev *pb.Event) {
		ev.Agent = ""
		ev.Payload = &pb.Event_Conversation{Conversation: &pb.ConversationEvent{Kind: &pb.ConversationEvent_Limit{
			Limit: &pb.ConcurrencyLimit{MaxConcurrentConversations: n}}}}
	})
	r.tot.limit = float64(n)
}

func (r *convReplay) closed(conv string, reason pb.CloseReason) {
	l := r.event(conv, time.Second, func(ev *pb.Event) {
		ev.Payload = &pb.Event_Conversation{Conversation: &pb.ConversationEvent{Kind: &pb.ConversationEvent_Closed{
			Closed: &pb.ConversationClosed{Reason: reason}}}}
	})
	l.closed, l.closeReason = true, reason
	r.tot.closed[convEnumLabel(reason.String(), "CLOSE_REASON_")]++
	r.tot.closedCost = append(r.tot.closedCost, l.cost())
	r.tot.closedTokens = append(r.tot.closedTokens, float64(l.tokens.Input+l.tokens.Output))
}

func (r *convReplay) llm(conv string, c convLLM) {
	l := r.event(conv, time.Duration(c.latency*float64(time.Second))+time.Second, func(ev *pb.Event) {
		ev.Payload = &pb.Event_LlmCall{LlmCall: &pb.LLMCall{
			Provider: c.provider, RequestModel: c.model, ResponseModel: c.respModel,
			ResponseId: fmt.Sprintf("msg_%03d", r.seq+1), LlmService: c.service,
			PromptTokens: c.prompt, CompletionTokens: c.completion,
			CacheReadTokens: c.cacheRead, CacheWriteTokens: c.cacheWrite, CacheWrite_1HTokens: c.write1h,
			ReasoningTokens: c.reasoning, ContextWindow: c.contextWindow,
			LatencySeconds: c.latency, CostUsd: c.cost, ErrorType: c.errorType,
		}}
	})
	l.calls++
	if c.errorType != "" {
		l.failed++
		r.tot.failedByType[c.errorType]++
	}
	l.tokens.Input += c.prompt
	l.tokens.Output += c.completion
	l.tokens.CacheRead += c.cacheRead
	l.tokens.CacheWrite += c.cacheWrite
	l.tokens.CacheWrite_1H += c.write1h
	l.tokens.Reasoning += c.reasoning
	r.tot.tokens["input"] += float64(c.prompt)
	r.tot.tokens["output"] += float64(c.completion)
	r.tot.tokens["cache_read"] += float64(c.cacheRead)
	r.tot.tokens["cache_write"] += float64(c.cacheWrite + c.write1h)
	r.tot.tokens["reasoning"] += float64(c.reasoning)
	l.contextWindow = max(l.contextWindow, c.contextWindow)
	service := c.service
	if service == "" {
		service = "agent"
	}
	if c.errorType == "" {
		l.perTurn[service] = c.prompt + c.completion
		if service == "agent" && c.contextWindow > 0 {
			l.contextUtil = float64(c.prompt) / float64(c.contextWindow)
		}
	}

	// The price: uncached input, cache reads, 5-minute and 1-hour cache
	// writes, and output, at the list price per million tokens.
	p, priced := convPrices[c.respModel]
	if !priced {
		p, priced = convPrices[convAliases[c.model]]
	}
	if priced {
		uncached := c.prompt - c.cacheRead - c.cacheWrite - c.write1h
		r.tot.savings += float64(c.cacheRead) * (p.input - p.cacheRead) / 1e6
		if c.cost == nil {
			computed := (float64(uncached)*p.input + float64(c.cacheRead)*p.cacheRead +
				float64(c.cacheWrite)*p.cacheWrite + float64(c.write1h)*p.cacheWrite1h +
				float64(c.completion)*p.output) / 1e6
			l.computed += computed
			r.tot.computed += computed
		}
	}
	switch {
	case c.cost != nil:
		l.reported += *c.cost
		r.tot.reported += *c.cost
	case !priced:
		l.unpriced++
		r.tot.unpriced[c.model]++
	}
	r.checkBudget(l)
}

func (r *convReplay) checkBudget(l *convLedger) {
	if l.budget == nil {
		return
	}
	for i, th := range convThresholds {
		if !l.crossed[i] && l.cost() >= th.frac**l.budget {
			l.crossed[i] = true
			r.tot.crossings[th.label]++
		}
	}
}

// flush sends the batch with Record and requires every event accepted.
func (r *convReplay) flush(c *collector) {
	r.t.Helper()
	n := len(r.batch)
	resp := c.record(r.batch...)
	r.batch = nil
	if resp.GetAccepted() != uint32(n) || resp.GetDuplicates() != 0 || len(resp.GetRejected()) != 0 {
		r.t.Fatalf("Record(%d replay events): accepted %d, duplicates %d, rejected %v; want all accepted",
			n, resp.GetAccepted(), resp.GetDuplicates(), resp.GetRejected())
	}
}

// ---------------------------------------------------------------- replay

// convWatch collects a WatchUsage stream.
type convWatch struct {
	updates chan *pb.ConversationUsage
	done    chan error // the stream's end: nil for a clean end (io.EOF)
}

func startConvWatch(t *testing.T, usage pb.UsageServiceClient, id string) *convWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := usage.WatchUsage(ctx, &pb.WatchUsageRequest{ConversationId: id})
	if err != nil {
		t.Fatalf("WatchUsage(%s): %v", id, err)
	}
	w := &convWatch{updates: make(chan *pb.ConversationUsage, 1024), done: make(chan error, 1)}
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				w.done <- err
				return
			}
			w.updates <- resp.GetUsage()
		}
	}()
	return w
}

// await reads updates until one matches want, failing after timeout or on an
// update that matches neither want nor an earlier snapshot (the entry of an
// earlier batch, which a coalesced stream may still be delivering).
func (w *convWatch) await(t *testing.T, what string, want *pb.ConversationUsage, earlier []*pb.ConversationUsage, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case u := <-w.updates:
			if len(convDiff(u, want)) == 0 {
				return
			}
			if !slices.ContainsFunc(earlier, func(e *pb.ConversationUsage) bool { return len(convDiff(u, e)) == 0 }) {
				t.Fatalf("WatchUsage %s: an update that is no batch's state: %v; differs from the expected one in %v",
					what, u, convDiff(u, want))
			}
		case err := <-w.done:
			t.Fatalf("WatchUsage %s: the stream ended (%v) before the expected update", what, err)
		case <-deadline:
			t.Fatalf("WatchUsage %s: no update matching the expected entry within %v", what, timeout)
		}
	}
}

// TestConversationReplay replays an OpenHands CodeActAgent session, and the
// user's other conversations that get it evicted, and compares GetUsage,
// WatchUsage, ListUsage, /metrics and PromQL with totals worked out here.
func TestConversationReplay(t *testing.T) {
	t.Parallel()
	const defaultBudget = 2.0
	c, usage := startConvCollector(t, convConfig{IdleExpiry: time.Hour, ClosedRetention: 5 * time.Minute, DefaultBudget: defaultBudget})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const (
		mainConv = "5f2c9a0e7b1d4c3a9e8f6d2b1a0c4e7f" // OpenHands conversation ids are 32 hex digits
		second   = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
		third    = "0c1d2e3f405162738495a6b7c8d9eaf1"
		fourth   = "e0f1a2b3c4d5e6f708192a3b4c5d6e7f"
		resumed  = "7d6c5b4a39281706f5e4d3c2b1a09f8e" // tracked from an LLM call: the sidecar restarted mid-conversation
		budget   = 0.50
	)
	const (
		loading  = pb.AgentState_AGENT_STATE_LOADING
		running  = pb.AgentState_AGENT_STATE_RUNNING
		awaiting = pb.AgentState_AGENT_STATE_AWAITING_USER_INPUT
	)
	sonnet := func(prompt, read, write, write1h, completion, reasoning int64, cost *float64) convLLM {
		return convLLM{provider: "anthropic", model: "claude-sonnet-4-5", respModel: "claude-sonnet-4-5-20250929",
			prompt: prompt, cacheRead: read, cacheWrite: write, write1h: write1h, completion: completion, reasoning: reasoning,
			contextWindow: 200000, latency: 2 + float64(completion)/400, cost: cost}
	}
	agent := func(l convLLM) convLLM { l.service = "agent"; return l }
	condenser := func(prompt, completion int64, cost *float64) convLLM {
		return convLLM{service: "condenser", provider: "anthropic", model: "claude-haiku-4-5", respModel: "claude-haiku-4-5-20251001",
			prompt: prompt, completion: completion, contextWindow: 200000, latency: 6.5, cost: cost}
	}
	draftModel := "conv-e2e-unpriced-model" // no price in any table

	r := newConvReplay(t, time.Now().Add(-30*time.Minute).Truncate(time.Millisecond), defaultBudget)
	var snapshots []*pb.ConversationUsage // the main conversation after each batch
	var watch *convWatch
	var costSoFar []float64 // main conversation cost after each batch
	// after checks the main conversation after a batch: GetUsage against the
	// model, the watch stream's update, and the budget crossings so far.
	after := func(what string) {
		t.Helper()
		want := r.ledgers[mainConv].proto()
		got, err := usage.GetUsage(ctx, &pb.GetUsageRequest{ConversationId: mainConv})
		if err != nil {
			t.Fatalf("%s: GetUsage: %v", what, err)
		}
		for _, d := range convDiff(got.GetUsage(), want) {
			t.Errorf("%s: GetUsage: %s", what, d)
		}
		if watch != nil {
			watch.await(t, what, want, snapshots, 15*time.Second)
		}
		snapshots = append(snapshots, want)
		costSoFar = append(costSoFar, want.GetCostUsd())
		fams, _ := c.scrape()
		for _, th := range convThresholds {
			sel := labels{"threshold": th.label}
			if got, _ := fams.value("agentmeter_budget_threshold_crossings_total", sel); got != r.tot.crossings[th.label] {
				t.Errorf("%s: agentmeter_budget_threshold_crossings_total%v = %v, want %v (cost %.6f of %.2f)",
					what, sel, got, r.tot.crossings[th.label], r.ledgers[mainConv].cost(), budget)
			}
		}
	}

	// 1. The agent server reports its limit; the user opens a conversation
	// from the GUI with a $0.50 budget; the runtime starts.
	r.limit(3)
	r.created(mainConv, pb.ConversationTrigger_CONVERSATION_TRIGGER_GUI, proto.Float64(budget))
	r.sessionStarted(mainConv, true, 6.8)
	r.status(mainConv, loading)
	r.flush(c)
	watch = startConvWatch(t, usage, mainConv)
	after("batch 1 (created)")

	// 2. The agent runs; the first call writes the system prompt and tools
	// to the cache. litellm knew no price, so the sidecar prices it.
	r.status(mainConv, running)
	r.llm(mainConv, sonnet(9000, 0, 8200, 0, 450, 0, nil))
	r.flush(c)
	after("batch 2 (first call)")

	// 3. Growing prompts: each reads the previous prefix from the cache and
	// writes the new turn; one cost reported by litellm.
	r.llm(mainConv, agent(sonnet(14000, 8200, 5200, 0, 900, 0, nil)))
	r.llm(mainConv, sonnet(21000, 13400, 7000, 0, 1200, 300, proto.Float64(0.0501)))
	r.llm(mainConv, agent(sonnet(28500, 20400, 7500, 0, 1500, 0, nil)))
	r.flush(c)
	after("batch 3 (growing prompts)")

	// 4. The condenser summarises the history on a cheaper model, priced by
	// the sidecar. The cost is now just under 50% of the budget.
	r.llm(mainConv, condenser(45000, 3640, nil))
	r.flush(c)
	after("batch 4 (condenser)")

	// 5. The next agent call is rate limited; its retry succeeds on the
	// condensed prompt, whose system prompt is still cached: a small call
	// that takes the cost just over 50%.
	r.llm(mainConv, convLLM{provider: "anthropic", model: "claude-sonnet-4-5", latency: 0.4, errorType: "RateLimitError"})
	r.llm(mainConv, sonnet(9500, 8200, 0, 0, 120, 0, nil))
	r.flush(c)
	after("batch 5 (failed call, retry)")

	// 6. The agent asks the user; the user answers; a command of the agent
	// hits the hard timeout (interrupted with Ctrl+C: exit code -1).
	r.status(mainConv, awaiting)
	r.status(mainConv, running)
	r.llm(mainConv, sonnet(15000, 8200, 6200, 0, 1100, 0, nil))
	r.fault(mainConv, pb.RuntimeFaultKind_RUNTIME_FAULT_KIND_COMMAND_TIMEOUT_HARD, -1)
	r.llm(mainConv, agent(sonnet(21000, 14400, 6000, 0, 1300, 0, nil)))
	r.flush(c)
	after("batch 6 (awaiting input, hard timeout)")

	// 7. A memory hog is OOM-killed (exit code 3, as the OpenHands stress
	// test expects); a 1-hour cache write; a draft editor on a model with no
	// price and a 1M context window. Just under 80%.
	r.fault(mainConv, pb.RuntimeFaultKind_RUNTIME_FAULT_KIND_OOM_KILLED, 3)
	r.llm(mainConv, sonnet(27000, 20400, 4000, 2000, 920, 0, nil))
	r.llm(mainConv, convLLM{service: "draft_editor", provider: "e2e-provider", model: draftModel, respModel: draftModel,
		prompt: 5000, completion: 3000, contextWindow: 1 << 20, latency: 9})
	r.flush(c)
	after("batch 7 (OOM kill, unpriced call)")

	// 8. A short step, all but 300 prompt tokens cached: just over 80%.
	r.llm(mainConv, sonnet(27300, 27000, 0, 0, 60, 0, nil))
	r.flush(c)
	after("batch 8 (80%)")

	// 9. A call whose cost litellm reported; extended thinking. Just under
	// 100%.
	r.llm(mainConv, sonnet(33600, 27300, 6000, 0, 130, 0, proto.Float64(0.0335)))
	r.llm(mainConv, agent(sonnet(40000, 33600, 5800, 0, 1500, 800, nil)))
	r.flush(c)
	after("batch 9 (extended thinking)")

	// 10. Another short step: just over the budget.
	r.llm(mainConv, sonnet(40300, 40000, 0, 0, 80, 0, nil))
	r.flush(c)
	after("batch 10 (100%)")

	// 11. The condenser again, its cost reported; the agent waits for the
	// user.
	r.llm(mainConv, condenser(40000, 3000, proto.Float64(0.055)))
	r.status(mainConv, awaiting)
	r.flush(c)
	after("batch 11 (awaiting input)")

	// The data must take each threshold from just under (within 1%) to just
	// over (within 4%) in one batch, so that a threshold off by a few
	// percent, or counted late, fails the checks above.
	for _, th := range convThresholds {
		at := th.frac * budget
		i := slices.IndexFunc(costSoFar, func(v float64) bool { return v >= at })
		if i < 1 || costSoFar[i-1] < 0.99*at || costSoFar[i] > 1.04*at {
			t.Fatalf("replay data: main conversation cost after each batch %v does not cross %s%% of %.2f closely", costSoFar, th.label, budget)
		}
	}

	// ListUsage by state while the main conversation waits for input.
	checkConvList(ctx, t, usage, "before close", awaiting, []string{mainConv})

	// 12. The user opens three more conversations; a fourth is tracked from
	// an LLM call only (never created: the sidecar restarted). The third new
	// one goes over max_concurrent_conversations=3: OpenHands closes the
	// oldest, the main one.
	r.created(second, pb.ConversationTrigger_CONVERSATION_TRIGGER_GUI, nil)
	r.sessionStarted(second, true, 4.1)
	r.status(second, running)
	r.llm(second, sonnet(8000, 0, 7600, 0, 300, 0, proto.Float64(0.0339)))
	r.created(third, pb.ConversationTrigger_CONVERSATION_TRIGGER_API, nil)
	r.sessionStarted(third, false, 30)
	r.sessionStarted(third, true, 12.5)
	r.status(third, running)
	r.llm(resumed, convLLM{provider: "openai", model: "gpt-4o", respModel: "gpt-4o-2024-08-06",
		prompt: 3000, cacheRead: 1024, completion: 200, contextWindow: 128000, latency: 1.2})
	r.created(fourth, pb.ConversationTrigger_CONVERSATION_TRIGGER_SLACK, nil)
	r.closed(mainConv, pb.CloseReason_CLOSE_REASON_EVICTED)
	r.status(fourth, loading)
	r.status(fourth, running)
	r.flush(c)
	after("batch 12 (evicted)")

	// The watch ends cleanly after the closed entry.
	select {
	case err := <-watch.done:
		if err != nil {
			t.Errorf("WatchUsage ended with %v after the conversation closed, want a clean end", err)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("WatchUsage still open 15s after the conversation closed")
	}

	// Every conversation's entry; the closed one stays queryable.
	for _, id := range r.order {
		got, err := usage.GetUsage(ctx, &pb.GetUsageRequest{ConversationId: id})
		if err != nil {
			t.Errorf("GetUsage(%s): %v", id, err)
			continue
		}
		for _, d := range convDiff(got.GetUsage(), r.ledgers[id].proto()) {
			t.Errorf("final GetUsage(%s): %s", id, d)
		}
	}
	checkConvList(ctx, t, usage, "after close", running, []string{second, third, fourth})
	checkConvPages(ctx, t, usage, r.order)

	fams, text := c.scrape()
	checkConvMetrics(t, fams, r)
	if promtool, err := exec.LookPath("promtool"); err == nil {
		check := exec.Command(promtool, "check", "metrics")
		check.Stdin = strings.NewReader(text)
		if out, err := check.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	}
	checkConvPromQL(t, c, r, mainConv)
	c.stop()
}

// checkConvList checks ListUsage filtered by state: exactly the entries in
// state, and every id of want among them.
func checkConvList(ctx context.Context, t *testing.T, usage pb.UsageServiceClient, what string, state pb.AgentState, want []string) {
	t.Helper()
	resp, err := usage.ListUsage(ctx, &pb.ListUsageRequest{State: state})
	if err != nil {
		t.Fatalf("%s: ListUsage(state %v): %v", what, state, err)
	}
	var got []string
	for _, u := range resp.GetUsage() {
		if u.GetState() != state {
			t.Errorf("%s: ListUsage(state %v) returned %s in state %v", what, state, u.GetConversationId(), u.GetState())
		}
		if !u.GetClosed() {
			got = append(got, u.GetConversationId())
		}
	}
	slices.Sort(got)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Errorf("%s: ListUsage(state %v) open conversations = %v, want %v", what, state, got, want)
	}
	if resp.GetNextPageToken() != "" {
		t.Errorf("%s: ListUsage(state %v) next_page_token = %q on the only page", what, state, resp.GetNextPageToken())
	}
}

// checkConvPages pages through ListUsage two at a time: every tracked
// conversation once, newest first (the first tracked comes last).
func checkConvPages(ctx context.Context, t *testing.T, usage pb.UsageServiceClient, tracked []string) {
	t.Helper()
	var got []string
	token := ""
	for page := 0; ; page++ {
		if page > len(tracked) {
			t.Fatalf("ListUsage: more than %d pages of 2 for %d conversations", page, len(tracked))
		}
		resp, err := usage.ListUsage(ctx, &pb.ListUsageRequest{PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatalf("ListUsage(page %d): %v", page, err)
		}
		if n := len(resp.GetUsage()); n > 2 || (n < 2 && resp.GetNextPageToken() != "") {
			t.Errorf("ListUsage(page %d): %d entries with next_page_token %q", page, n, resp.GetNextPageToken())
		}
		for _, u := range resp.GetUsage() {
			got = append(got, u.GetConversationId())
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if len(got) == 0 || got[len(got)-1] != tracked[0] {
		t.Errorf("ListUsage pages = %v, want the first tracked %s last (newest first)", got, tracked[0])
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(tracked))
	if !slices.Equal(got, want) {
		t.Errorf("ListUsage pages hold %v, want each of %v once", got, want)
	}
}

// checkConvMetrics compares the scrape with the replay's totals.
func checkConvMetrics(t *testing.T, fams families, r *convReplay) {
	t.Helper()
	tot := r.tot
	if _, n := fams.value("agentmeter_pricing_table_info", labels{"version": convBuiltinVersion}); n != 1 {
		t.Fatalf("agentmeter_pricing_table_info{version=%q} absent (have %v): the built-in price table changed; "+
			"update convPrices and convBuiltinVersion from the snapshot in pricing/snapshot",
			convBuiltinVersion, fams["agentmeter_pricing_table_info"].GetMetric())
	}
	exact := func(name string, sel labels, want float64) {
		t.Helper()
		if got, _ := fams.value(name, sel); !near(got, want) {
			t.Errorf("%s%v = %.12f, want %.12f", name, sel, got, want)
		}
	}
	for typ, want := range tot.tokens {
		exact("agentmeter_llm_tokens_total", labels{"gen_ai_token_type": typ}, want)
	}
	exact("agentmeter_llm_cost_usd_total", labels{"cost_source": "reported"}, tot.reported)
	exact("agentmeter_llm_cost_usd_total", labels{"cost_source": "computed"}, tot.computed)
	exact("agentmeter_llm_cost_usd_total", labels{}, tot.reported+tot.computed)
	exact("agentmeter_llm_cache_savings_usd_total", labels{}, tot.savings)
	for model, want := range tot.unpriced {
		exact("agentmeter_llm_unpriced_calls_total", labels{"gen_ai_request_model": model}, want)
	}
	var unpriced float64
	for _, n := range tot.unpriced {
		unpriced += n
	}
	exact("agentmeter_llm_unpriced_calls_total", labels{}, unpriced)

	// Lifecycle counters: each label value, and no other.
	for _, tc := range []struct {
		name, label string
		want        map[string]float64
	}{
		{"agentmeter_conversations_created_total", "trigger", tot.created},
		{"agentmeter_conversations_closed_total", "reason", tot.closed},
		{"agentmeter_runtime_faults_total", "kind", tot.faults},
		{"agentmeter_budget_threshold_crossings_total", "threshold", tot.crossings},
		{"agentmeter_agent_status_transitions_total", "agent_state", tot.transitions},
	} {
		var sum float64
		for v, want := range tc.want {
			exact(tc.name, labels{tc.label: v}, want)
			sum += want
		}
		exact(tc.name, labels{}, sum)
	}
	exact("agentmeter_conversations_limit", labels{}, tot.limit)

	var open, closedTracked float64
	inState := map[string]float64{}
	for _, l := range r.ledgers {
		if l.closed {
			closedTracked++
			continue
		}
		open++
		if l.state != pb.AgentState_AGENT_STATE_UNSPECIFIED {
			inState[convEnumLabel(l.state.String(), "AGENT_STATE_")]++
		}
	}
	exact("agentmeter_conversations_active", labels{}, open)
	for _, st := range []string{"loading", "running", "awaiting_user_input"} {
		exact("agentmeter_agent_conversations", labels{"gen_ai_agent_name": codeAct, "agent_state": st}, inState[st])
	}

	// Histograms: count and sum, and one bucket each.
	hist := func(name string, sel labels, values []float64, le float64) {
		t.Helper()
		var sum float64
		var in uint64
		for _, v := range values {
			sum += v
			if v <= le {
				in++
			}
		}
		count, gotSum, bucket, _ := fams.hist(name, sel, le)
		if count != uint64(len(values)) || !near(gotSum, sum) || bucket != in {
			t.Errorf("%s%v: count %d sum %.12f bucket le=%v %d; want %d, %.12f, %d",
				name, sel, count, gotSum, le, bucket, len(values), sum, in)
		}
	}
	hist("agentmeter_agent_session_start_duration_seconds", labels{"success": "true"}, tot.sessionStarts[true], 10)
	hist("agentmeter_agent_session_start_duration_seconds", labels{"success": "false"}, tot.sessionStarts[false], 10)
	hist("agentmeter_conversation_cost_usd", labels{}, tot.closedCost, 0.5)
	hist("agentmeter_conversation_tokens", labels{}, tot.closedTokens, 262144)
	for errType, want := range tot.failedByType {
		count, _, _, _ := fams.hist("gen_ai_client_operation_duration_seconds", labels{"error_type": errType}, 0)
		if float64(count) != want {
			t.Errorf("gen_ai_client_operation_duration_seconds{error_type=%q} count %d, want %v", errType, count, want)
		}
	}
}

// checkConvPromQL runs a real Prometheus against the collector and compares
// the cost, token and lifecycle totals it queries with the replay's.
func checkConvPromQL(t *testing.T, c *collector, r *convReplay, closedID string) {
	t.Helper()
	query := startPrometheus(t, "agentmeter-conversations", c.httpAddr, "/metrics")
	await := func(q string, want float64) {
		t.Helper()
		eventually(t, 60*time.Second, fmt.Sprintf("%s = %.12f", q, want), func() (bool, string) {
			vs, err := query(q)
			if err != nil {
				return false, err.Error()
			}
			if len(vs) != 1 {
				return false, fmt.Sprintf("%d samples: %v", len(vs), vs)
			}
			return near(vs[0], want), strconv.FormatFloat(vs[0], 'f', -1, 64)
		})
	}
	m := r.ledgers[closedID]
	await(`sum(agentmeter_llm_cost_usd_total)`, r.tot.reported+r.tot.computed)
	await(`sum(agentmeter_llm_cost_usd_total{cost_source="computed"})`, r.tot.computed)
	await(`sum(agentmeter_llm_tokens_total{gen_ai_token_type="input"})`, r.tot.tokens["input"])
	await(`sum(agentmeter_llm_tokens_total{gen_ai_token_type="output"})`, r.tot.tokens["output"])
	await(`sum(agentmeter_llm_tokens_total{gen_ai_token_type="cache_read"})`, r.tot.tokens["cache_read"])
	await(`sum(agentmeter_budget_threshold_crossings_total)`, 3)
	await(`sum(agentmeter_conversations_closed_total{reason="evicted"})`, 1)
	await(`sum(agentmeter_conversation_cost_usd_sum)`, m.cost())
	await(`sum(agentmeter_conversation_tokens_sum)`, float64(m.tokens.Input+m.tokens.Output))
}

// ---------------------------------------------------------------- bad input

// TestConversationBadInput sends garbage in each lifecycle field in one
// batch with valid events: every bad event is named by index and field, the
// valid ones are applied, and nothing of the bad ones shows.
func TestConversationBadInput(t *testing.T) {
	t.Parallel()
	c, usage := startConvCollector(t, convConfig{IdleExpiry: time.Hour, ClosedRetention: 5 * time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	now := time.Now().Truncate(time.Millisecond)

	const good, exact, other = "conv-bad-input-good", "conv-bad-input-exact", "conv-bad-input-other"
	conv := func(id, convID string, at time.Duration, ce *pb.ConversationEvent) *pb.Event {
		return &pb.Event{EventId: id, ConversationId: convID, Agent: codeAct, Time: timestamppb.New(now.Add(at)),
			Payload: &pb.Event_Conversation{Conversation: ce}}
	}
	created := func(budget *float64, trigger pb.ConversationTrigger) *pb.ConversationEvent {
		return &pb.ConversationEvent{Kind: &pb.ConversationEvent_Created{Created: &pb.ConversationCreated{MaxBudgetUsd: budget, Trigger: trigger}}}
	}
	session := func(ok bool, d float64) *pb.ConversationEvent {
		return &pb.ConversationEvent{Kind: &pb.ConversationEvent_SessionStarted{SessionStarted: &pb.SessionStarted{Success: ok, DurationSeconds: d}}}
	}
	closed := func(reason pb.CloseReason) *pb.ConversationEvent {
		return &pb.ConversationEvent{Kind: &pb.ConversationEvent_Closed{Closed: &pb.ConversationClosed{Reason: reason}}}
	}
	fault := func(id string, at time.Duration, kind pb.RuntimeFaultKind) *pb.Event {
		return &pb.Event{EventId: id, ConversationId: good, Agent: codeAct, Time: timestamppb.New(now.Add(at)),
			Payload: &pb.Event_RuntimeFault{RuntimeFault: &pb.RuntimeFault{Kind: kind, ExitCode: 137}}}
	}
	const gui = pb.ConversationTrigger_CONVERSATION_TRIGGER_GUI
	batch := []*pb.Event{
		0:  conv("bi-created", good, -60*time.Second, created(proto.Float64(1), pb.ConversationTrigger_CONVERSATION_TRIGGER_RESOLVER)),
		1:  conv("bi-budget-negative", other, -59*time.Second, created(proto.Float64(-1), gui)),
		2:  conv("bi-budget-nan", other, -58*time.Second, created(proto.Float64(math.NaN()), gui)),
		3:  conv("bi-budget-zero", other, -57*time.Second, created(proto.Float64(0), gui)),
		4:  conv("bi-budget-inf", other, -56*time.Second, created(proto.Float64(math.Inf(1)), gui)),
		5:  conv("bi-trigger", other, -55*time.Second, created(nil, pb.ConversationTrigger(42))),
		6:  conv("bi-session-negative", good, -54*time.Second, session(true, -2)),
		7:  conv("bi-session-nan", good, -53*time.Second, session(false, math.NaN())),
		8:  conv("bi-session", good, -52*time.Second, session(true, 3.5)),
		9:  fault("bi-fault-kind", -51*time.Second, pb.RuntimeFaultKind(77)),
		10: fault("bi-fault-unspecified", -50*time.Second, pb.RuntimeFaultKind_RUNTIME_FAULT_KIND_UNSPECIFIED),
		11: fault("bi-fault", -49*time.Second, pb.RuntimeFaultKind_RUNTIME_FAULT_KIND_COMMAND_TIMEOUT_SOFT),
		12: call{id: "bi-call", conv: good, agent: codeAct, provider: "openai", model: "conv-bad-input-model",
			respModel: "conv-bad-input-model", prompt: 1000, completion: 100, latency: 1, cost: proto.Float64(0.5),
			at: now.Add(-48 * time.Second)}.event(),
		13: conv("bi-created-again", good, -47*time.Second, created(proto.Float64(5), gui)),
		14: conv("bi-close-reason", good, -46*time.Second, closed(pb.CloseReason(99))),
		15: conv("bi-close-unspecified", good, -45*time.Second, closed(pb.CloseReason_CLOSE_REASON_UNSPECIFIED)),
		16: conv("bi-closed", good, -44*time.Second, closed(pb.CloseReason_CLOSE_REASON_FINISHED)),
		17: conv("bi-closed-again", good, -43*time.Second, closed(pb.CloseReason_CLOSE_REASON_USER)),
		18: conv("bi-limit-zero", "", -42*time.Second, &pb.ConversationEvent{Kind: &pb.ConversationEvent_Limit{Limit: &pb.ConcurrencyLimit{}}}),
		19: conv("bi-no-kind", good, -41*time.Second, &pb.ConversationEvent{}),
		20: conv("bi-no-conversation", "", -40*time.Second, created(nil, gui)),
		// Valid, after the garbage: a budget spent to the cent.
		21: conv("bi-exact-created", exact, -39*time.Second, created(proto.Float64(0.25), pb.ConversationTrigger_CONVERSATION_TRIGGER_API)),
		22: call{id: "bi-exact-call", conv: exact, agent: codeAct, provider: "openai", model: "conv-bad-input-model",
			respModel: "conv-bad-input-model", prompt: 2000, completion: 200, latency: 1, cost: proto.Float64(0.25),
			at: now.Add(-38 * time.Second)}.event(),
	}
	want := &pb.RecordResponse{Accepted: 7, Rejected: []*pb.Rejection{
		{Index: 1, EventId: "bi-budget-negative", Field: "conversation.created.max_budget_usd"},
		{Index: 2, EventId: "bi-budget-nan", Field: "conversation.created.max_budget_usd"},
		{Index: 3, EventId: "bi-budget-zero", Field: "conversation.created.max_budget_usd"},
		{Index: 4, EventId: "bi-budget-inf", Field: "conversation.created.max_budget_usd"},
		{Index: 5, EventId: "bi-trigger", Field: "conversation.created.trigger"},
		{Index: 6, EventId: "bi-session-negative", Field: "conversation.session_started.duration_seconds"},
		{Index: 7, EventId: "bi-session-nan", Field: "conversation.session_started.duration_seconds"},
		{Index: 9, EventId: "bi-fault-kind", Field: "runtime_fault.kind"},
		{Index: 10, EventId: "bi-fault-unspecified", Field: "runtime_fault.kind"},
		{Index: 13, EventId: "bi-created-again", Field: "conversation.created"},
		{Index: 14, EventId: "bi-close-reason", Field: "conversation.closed.reason"},
		{Index: 15, EventId: "bi-close-unspecified", Field: "conversation.closed.reason"},
		{Index: 17, EventId: "bi-closed-again", Field: "conversation.closed"},
		{Index: 18, EventId: "bi-limit-zero", Field: "conversation.limit.max_concurrent_conversations"},
		{Index: 19, EventId: "bi-no-kind", Field: "conversation.kind"},
		{Index: 20, EventId: "bi-no-conversation", Field: "conversation_id"},
	}}
	checkResponse(t, "Record(bad lifecycle batch)", c.record(batch...), want)

	// The valid events applied, the bad ones not: the budget of the first
	// created (not the rejected second's), the one fault, the first close.
	// The cost is exactly half the budget: the 50% threshold is crossed.
	got, err := usage.GetUsage(ctx, &pb.GetUsageRequest{ConversationId: good})
	if err != nil {
		t.Fatalf("GetUsage(%s): %v", good, err)
	}
	wantUsage := &pb.ConversationUsage{
		ConversationId: good, Agent: codeAct,
		CostUsd: 0.5, ReportedCostUsd: 0.5,
		Tokens:         &pb.TokenUsage{Input: 1000, Output: 100},
		PerTurnTokens:  []*pb.PerTurnTokens{{LlmService: "agent", Tokens: 1100}},
		Calls:          1,
		FirstEventTime: timestamppb.New(now.Add(-60 * time.Second)),
		// The last applied event is the first close; the rejected second
		// close, dated after it, is not applied and must not move the entry.
		LastEventTime: timestamppb.New(now.Add(-44 * time.Second)),
		MaxBudgetUsd:  proto.Float64(1), RemainingUsd: proto.Float64(0.5),
		Closed: true, CloseReason: pb.CloseReason_CLOSE_REASON_FINISHED,
		Trigger:       pb.ConversationTrigger_CONVERSATION_TRIGGER_RESOLVER,
		RuntimeFaults: 1,
	}
	for _, d := range convDiff(got.GetUsage(), wantUsage) {
		t.Errorf("GetUsage(%s): %s", good, d)
	}
	// Spent to the cent: exceeded (cost >= budget), nothing remaining.
	gotExact, err := usage.GetUsage(ctx, &pb.GetUsageRequest{ConversationId: exact})
	if err != nil {
		t.Fatalf("GetUsage(%s): %v", exact, err)
	}
	if u := gotExact.GetUsage(); !u.GetBudgetExceeded() || u.RemainingUsd == nil || u.GetRemainingUsd() != 0 || u.GetCostUsd() != 0.25 {
		t.Errorf("GetUsage(%s) after spending its $0.25 budget: cost %v, remaining %v, exceeded %v; want 0.25, 0, true",
			exact, u.GetCostUsd(), u.RemainingUsd, u.GetBudgetExceeded())
	}
	// Events rejected by the validator never track their conversation.
	if _, err := usage.GetUsage(ctx, &pb.GetUsageRequest{ConversationId: other}); status.Code(err) != codes.NotFound {
		t.Errorf("GetUsage(%s), whose every event was rejected: %v, want NotFound", other, err)
	}

	fams, _ := c.scrape()
	for _, tc := range []struct {
		name string
		sel  labels
		want float64
	}{
		{"agentmeter_conversations_created_total", labels{"trigger": "resolver"}, 1},
		{"agentmeter_conversations_created_total", labels{"trigger": "api"}, 1},
		{"agentmeter_conversations_created_total", labels{}, 2},
		{"agentmeter_conversations_closed_total", labels{"reason": "finished"}, 1},
		{"agentmeter_conversations_closed_total", labels{}, 1},
		{"agentmeter_runtime_faults_total", labels{"kind": "command_timeout_soft"}, 1},
		{"agentmeter_runtime_faults_total", labels{}, 1},
		{"agentmeter_budget_threshold_crossings_total", labels{"threshold": "50"}, 2},
		{"agentmeter_budget_threshold_crossings_total", labels{"threshold": "80"}, 1},
		{"agentmeter_budget_threshold_crossings_total", labels{"threshold": "100"}, 1},
		{"agentmeter_conversations_active", labels{}, 1},
		{"agentmeter_receiver_events_total", labels{"event_type": "conversation", "outcome": "accepted"}, 4},
		{"agentmeter_receiver_events_total", labels{"event_type": "conversation", "outcome": "rejected"}, 14},
		{"agentmeter_receiver_events_total", labels{"event_type": "runtime_fault", "outcome": "accepted"}, 1},
		{"agentmeter_receiver_events_total", labels{"event_type": "runtime_fault", "outcome": "rejected"}, 2},
		{"agentmeter_receiver_events_total", labels{"event_type": "llm_call", "outcome": "accepted"}, 2},
	} {
		if got, _ := fams.value(tc.name, tc.sel); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.sel, got, tc.want)
		}
	}
	if _, n := fams.value("agentmeter_conversations_limit", labels{}); n != 0 {
		t.Errorf("agentmeter_conversations_limit present after only a rejected limit event")
	}
	if count, sum, _, _ := fams.hist("agentmeter_agent_session_start_duration_seconds", labels{"success": "true"}, 0); count != 1 || sum != 3.5 {
		t.Errorf("agentmeter_agent_session_start_duration_seconds{success=\"true\"}: count %d sum %v, want 1 and 3.5", count, sum)
	}
	if count, _, _, _ := fams.hist("agentmeter_agent_session_start_duration_seconds", labels{"success": "false"}, 0); count != 0 {
		t.Errorf("agentmeter_agent_session_start_duration_seconds{success=\"false\"}: count %d, want 0 (its only event was rejected)", count)
	}
	if count, sum, _, _ := fams.hist("agentmeter_conversation_cost_usd", labels{}, 0); count != 1 || sum != 0.5 {
		t.Errorf("agentmeter_conversation_cost_usd: count %d sum %v, want 1 and 0.5 (the second close is rejected)", count, sum)
	}
	c.stop()
}

// ---------------------------------------------------------------- errors

// TestUsageAPIErrors checks the UsageService's error codes, and that a
// closed conversation is forgotten once conversations.closed_retention is
// over, not before.
func TestUsageAPIErrors(t *testing.T) {
	t.Parallel()
	const retention = time.Second
	// idle_expiry sets the sweep interval (a tenth of it, 100ms to 10s): 10s
	// sweeps every second, and idles nothing out within this test.
	c, usage := startConvCollector(t, convConfig{IdleExpiry: 10 * time.Second, ClosedRetention: retention})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	code := func(what string, err error, want codes.Code) {
		t.Helper()
		if status.Code(err) != want {
			t.Errorf("%s: %v, want %v", what, err, want)
		}
	}
	_, err := usage.GetUsage(ctx, &pb.GetUsageRequest{ConversationId: "conv-never-seen"})
	code("GetUsage(unknown id)", err, codes.NotFound)
	_, err = usage.GetUsage(ctx, &pb.GetUsageRequest{})
	code("GetUsage(empty id)", err, codes.InvalidArgument)
	_, err = usage.GetUsage(ctx, &pb.GetUsageRequest{ConversationId: strings.Repeat("x", 257)})
	code("GetUsage(257-byte id)", err, codes.InvalidArgument)
	for _, token := range []string{
		"garbage page token!",                                 // not base64
		base64.RawURLEncoding.EncodeToString([]byte("nope")),  // no separator
		base64.RawURLEncoding.EncodeToString([]byte("x/abc")), // not a time
	} {
		_, err = usage.ListUsage(ctx, &pb.ListUsageRequest{PageToken: token})
		code(fmt.Sprintf("ListUsage(page_token %q)", token), err, codes.InvalidArgument)
	}
	_, err = usage.ListUsage(ctx, &pb.ListUsageRequest{State: pb.AgentState(99)})
	code("ListUsage(state 99)", err, codes.InvalidArgument)
	for _, tc := range []struct {
		id   string
		want codes.Code
	}{{"conv-never-seen", codes.NotFound}, {"", codes.InvalidArgument}} {
		stream, err := usage.WatchUsage(ctx, &pb.WatchUsageRequest{ConversationId: tc.id})
		if err == nil {
			_, err = stream.Recv()
		}
		code(fmt.Sprintf("WatchUsage(%q)", tc.id), err, tc.want)
	}
	// Refusals are counted per service: the usage API's own, none of them
	// as ingest refusals.
	fams, _ := c.scrape()
	const usageService = "agentmeter.v1.UsageService"
	for code, want := range map[string]float64{"NotFound": 2, "InvalidArgument": 7} {
		if v, _ := fams.value("agentmeter_grpc_requests_refused_total", labels{"grpc_service": usageService, "grpc_code": code}); v != want {
			t.Errorf("refused{grpc_service=%q, grpc_code=%q} = %v, want %v", usageService, code, v, want)
		}
	}
	if v, n := fams.value("agentmeter_grpc_requests_refused_total", labels{"grpc_service": ingestService}); n != 0 {
		t.Errorf("usage API errors counted as %v ingest refusals", v)
	}

	// A closed conversation: queryable until closed_retention is over, then
	// NOT_FOUND, counted as evicted for reason closed.
	const id = "conv-retention"
	c.record(&pb.Event{EventId: "ret-created", ConversationId: id, Agent: codeAct,
		Payload: &pb.Event_Conversation{Conversation: &pb.ConversationEvent{Kind: &pb.ConversationEvent_Created{
			Created: &pb.ConversationCreated{Trigger: pb.ConversationTrigger_CONVERSATION_TRIGGER_API}}}}})
	sent := time.Now()
	c.record(&pb.Event{EventId: "ret-closed", ConversationId: id, Agent: codeAct,
		Payload: &pb.Event_Conversation{Conversation: &pb.ConversationEvent{Kind: &pb.ConversationEvent_Closed{
			Closed: &pb.ConversationClosed{Reason: pb.CloseReason_CLOSE_REASON_FINISHED}}}}})
	resp, err := usage.GetUsage(ctx, &pb.GetUsageRequest{ConversationId: id})
	switch {
	case err == nil:
		if !resp.GetUsage().GetClosed() {
			t.Errorf("GetUsage(%s) right after close: closed = false", id)
		}
	case time.Since(sent) < retention:
		t.Errorf("GetUsage(%s) %v after close: %v, want the closed entry until closed_retention (%v)", id, time.Since(sent), err, retention)
	default:
		t.Logf("GetUsage right after close came %v late, after the retention; not checked", time.Since(sent))
	}
	var gone time.Duration
	eventually(t, 30*time.Second, fmt.Sprintf("GetUsage(%s) NotFound after closed_retention", id), func() (bool, string) {
		_, err := usage.GetUsage(ctx, &pb.GetUsageRequest{ConversationId: id})
		gone = time.Since(sent)
		return status.Code(err) == codes.NotFound, fmt.Sprint(err)
	})
	if gone < retention {
		t.Errorf("GetUsage(%s) NotFound %v after the close was sent, before closed_retention %v", id, gone, retention)
	}
	fams, _ = c.scrape()
	if got, _ := fams.value("agentmeter_processor_conversations_evicted_total", labels{"reason": "closed"}); got != 1 {
		t.Errorf("agentmeter_processor_conversations_evicted_total{reason=\"closed\"} = %v, want 1", got)
	}
	if got, _ := fams.value("agentmeter_conversations_closed_total", labels{"reason": "finished"}); got != 1 {
		t.Errorf("agentmeter_conversations_closed_total{reason=\"finished\"} = %v after the entry was forgotten, want 1", got)
	}
	stream, err := usage.WatchUsage(ctx, &pb.WatchUsageRequest{ConversationId: id})
	if err == nil {
		_, err = stream.Recv()
	}
	code("WatchUsage(forgotten conversation)", err, codes.NotFound)
	c.stop()
}
