// Package scenario drives an agentmeter sidecar the way a small OpenHands
// agent server does, so that every number agentmeter knows moves: a few
// concurrent agents take conversations through their lifecycle (created,
// session started, running, awaiting the user, rate limited, finished or
// failed), make agent and condenser LLM calls on several models with cache
// reads and writes, streaming time to first token, failures by error type,
// reported and computed costs and an unpriced self-hosted model; budgets are
// crossed, the sandbox runtime faults now and then, and conversations over
// the server's concurrency limit are evicted.
//
// It is what the dashboard tests and `make demo` run. Unlike the load
// package it does not measure throughput: it paces its agents in real time
// (Config.Pace between steps) so that rates and histograms look like a live
// server's, and it stops by itself after Config.Duration.
package scenario

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentmeter/agentmeter/cmd/loadgen/load"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// Config is one scenario run.
type Config struct {
	// Target is host:port of the IngestService; loopback only.
	Target string
	// Agents is the number of concurrent agents (1-64).
	Agents int
	// Duration is how long the agents work (> 0); a conversation open at the
	// end stays open, as on a live server.
	Duration time.Duration
	// Pace is the wall time between two steps of one agent (>= 0).
	Pace time.Duration
	// Limit is the agent server's max_concurrent_conversations (>= 1):
	// starting one more conversation evicts the oldest open one.
	Limit int
	// Seed makes the run repeatable (the same events in the same order per agent).
	Seed uint64
	// Logger receives a line per agent failure; nil = discard.
	Logger *slog.Logger
}

// Default returns the defaults of `loadgen --scenario agents`.
func Default() Config {
	return Config{Target: "localhost:4320", Agents: 4, Duration: 30 * time.Second, Pace: 40 * time.Millisecond, Limit: 6, Seed: 1}
}

// Validate reports every invalid field.
func (c Config) Validate() error {
	var errs []error
	if err := load.CheckLoopback(c.Target); err != nil {
		errs = append(errs, err)
	}
	if c.Agents < 1 || c.Agents > 64 {
		errs = append(errs, fmt.Errorf("agents %d must be in [1, 64]", c.Agents))
	}
	if c.Duration <= 0 {
		errs = append(errs, fmt.Errorf("duration %s must be > 0: a scenario is bounded", c.Duration))
	}
	if c.Pace < 0 {
		errs = append(errs, fmt.Errorf("pace %s must be >= 0", c.Pace))
	}
	if c.Limit < 1 {
		errs = append(errs, fmt.Errorf("limit %d must be >= 1", c.Limit))
	}
	return errors.Join(errs...)
}

// Result is what a run sent and what the sidecar answered.
type Result struct {
	Events        int64 `json:"events"`
	Requests      int64 `json:"requests"`
	Accepted      int64 `json:"accepted"`
	Duplicates    int64 `json:"duplicates"`
	Rejected      int64 `json:"rejected"`
	Conversations int64 `json:"conversations"`
	Evicted       int64 `json:"evicted"`
	Calls         int64 `json:"calls"`
	FailedCalls   int64 `json:"failed_calls"`
	Faults        int64 `json:"faults"`
	// Tokens by gen_ai.token.type as sent (input includes cache tokens).
	Tokens map[string]int64 `json:"tokens"`
	// Models are the request models called, with their call counts.
	Models map[string]int64 `json:"models"`
	// Agents are the agent names used, with their conversation counts.
	Agents map[string]int64 `json:"agents"`
}

// model is one LLM an agent calls.
type model struct {
	provider, name string
	window         int64
	// cacheWrites: the provider bills cache writes (Anthropic); the others
	// only read from their cache.
	cacheWrites bool
	// reportsCost: the client reports the cost (as litellm does); otherwise
	// the sidecar prices it from its table, or counts it unpriced.
	reportsCost bool
}

// The models of the scenario: the agents' main models, the condensers'
// cheaper ones, and a self-hosted model that no price table knows.
var (
	agentModels = []model{
		{provider: "anthropic", name: "claude-sonnet-4-5-20250929", window: 200_000, cacheWrites: true},
		{provider: "openai", name: "gpt-5", window: 400_000, reportsCost: true},
		{provider: "gcp.gemini", name: "gemini-2.5-pro", window: 1_048_576},
	}
	condenserModels = []model{
		{provider: "anthropic", name: "claude-haiku-4-5-20251001", window: 200_000, cacheWrites: true},
		{provider: "openai", name: "gpt-4o-mini", window: 128_000, reportsCost: true},
	}
	selfHosted = model{provider: "hosted_vllm", name: "qwen3-coder-30b", window: 131_072}
	agentNames = []string{"CodeActAgent", "CodeActAgent", "BrowsingAgent", "ReadOnlyAgent"}
	triggers   = []pb.ConversationTrigger{
		pb.ConversationTrigger_CONVERSATION_TRIGGER_GUI, pb.ConversationTrigger_CONVERSATION_TRIGGER_GUI,
		pb.ConversationTrigger_CONVERSATION_TRIGGER_API, pb.ConversationTrigger_CONVERSATION_TRIGGER_RESOLVER,
		pb.ConversationTrigger_CONVERSATION_TRIGGER_SLACK,
	}
	errorTypes = []string{"RateLimitError", "Timeout", "APIConnectionError", "ContextWindowExceededError"}
	faultKinds = []pb.RuntimeFaultKind{
		pb.RuntimeFaultKind_RUNTIME_FAULT_KIND_COMMAND_TIMEOUT_SOFT, pb.RuntimeFaultKind_RUNTIME_FAULT_KIND_COMMAND_TIMEOUT_SOFT,
		pb.RuntimeFaultKind_RUNTIME_FAULT_KIND_COMMAND_TIMEOUT_HARD, pb.RuntimeFaultKind_RUNTIME_FAULT_KIND_OOM_KILLED,
		pb.RuntimeFaultKind_RUNTIME_FAULT_KIND_RUNTIME_DISCONNECTED,
	}
)

// Models returns the request model names the scenario calls.
func Models() []string {
	var names []string
	for _, m := range append(append(append([]model{}, agentModels...), condenserModels...), selfHosted) {
		names = append(names, m.name)
	}
	return names
}

// conversation is one open conversation of the server.
type conversation struct {
	id      string
	evicted bool // set under server.mu when the server evicted it
}

// server is the agent server's side: its open conversations, oldest first,
// and the concurrency limit. mu guards open, the conversations' evicted
// flags and the result; sending happens outside it.
type server struct {
	cfg    Config
	client pb.IngestServiceClient
	mu     sync.Mutex
	open   []*conversation
	seq    int
	res    Result
	prefix string
}

// Run drives the sidecar at cfg.Target until cfg.Duration passes or ctx
// ends. It returns an error when a request failed or an event was rejected:
// every event of the scenario is valid.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	conn, err := grpc.NewClient(cfg.Target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return Result{}, fmt.Errorf("dial %s: %w", cfg.Target, err)
	}
	defer func() { _ = conn.Close() }()
	s := &server{
		cfg:    cfg,
		client: pb.NewIngestServiceClient(conn),
		prefix: fmt.Sprintf("scn-%x", rand.Uint64()),
		res:    Result{Tokens: map[string]int64{}, Models: map[string]int64{}, Agents: map[string]int64{}},
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()

	// The server reports its limit first, as the agent server does at start.
	if err := s.send(ctx, limitEvent(s.nextID(), int64(cfg.Limit))); err != nil {
		return s.result(), err
	}
	errs := make([]error, cfg.Agents)
	var wg sync.WaitGroup
	for i := range cfg.Agents {
		wg.Go(func() {
			a := &agent{s: s, name: agentNames[i%len(agentNames)], rng: rand.New(rand.NewPCG(cfg.Seed, uint64(i)))}
			errs[i] = a.run(ctx)
			if errs[i] != nil {
				log.Error("agent stopped", "agent", a.name, "index", i, "err", errs[i])
			}
		})
	}
	wg.Wait()
	return s.result(), errors.Join(errs...)
}

func (s *server) result() Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.res
	r.Tokens, r.Models, r.Agents = clone(r.Tokens), clone(r.Models), clone(r.Agents)
	return r
}

func clone(m map[string]int64) map[string]int64 {
	c := make(map[string]int64, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func (s *server) nextID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	return fmt.Sprintf("%s-%d", s.prefix, s.seq)
}

// record sends one request. The end of the run does not cut it off (its
// answer is awaited up to requestTimeout), so that the result counts
// exactly what the sidecar acknowledged.
func (s *server) record(ctx context.Context, events []*pb.Event) (*pb.RecordResponse, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), requestTimeout)
	defer cancel()
	return s.client.Record(ctx, &pb.RecordRequest{Events: events}, grpc.WaitForReady(true))
}

// requestTimeout bounds one request, its connection included.
const requestTimeout = 10 * time.Second

// send records events in one request and checks the answer.
func (s *server) send(ctx context.Context, events ...*pb.Event) error {
	resp, err := s.record(ctx, events)
	if err != nil {
		return fmt.Errorf("record %d events: %w", len(events), err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.res.Requests++
	s.res.Events += int64(len(events))
	s.res.Accepted += int64(resp.GetAccepted())
	s.res.Duplicates += int64(resp.GetDuplicates())
	s.res.Rejected += int64(len(resp.GetRejected()))
	for _, ev := range events {
		s.count(ev)
	}
	if r := resp.GetRejected(); len(r) > 0 {
		return fmt.Errorf("the sidecar rejected a scenario event: %s: %s", r[0].GetField(), r[0].GetReason())
	}
	return nil
}

// resend records events that were acknowledged before: every one must come
// back a duplicate, and none is counted again.
func (s *server) resend(ctx context.Context, events ...*pb.Event) error {
	resp, err := s.record(ctx, events)
	if err != nil {
		return fmt.Errorf("resend %d events: %w", len(events), err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.res.Requests++
	s.res.Events += int64(len(events))
	s.res.Duplicates += int64(resp.GetDuplicates())
	s.res.Accepted += int64(resp.GetAccepted())
	s.res.Rejected += int64(len(resp.GetRejected()))
	if int(resp.GetDuplicates()) != len(events) {
		return fmt.Errorf("resent %d acknowledged events, the sidecar counted %d as duplicates", len(events), resp.GetDuplicates())
	}
	return nil
}

// count adds an acknowledged event to the result; s.mu is held.
func (s *server) count(ev *pb.Event) {
	if c := ev.GetLlmCall(); c != nil {
		s.res.Calls++
		if c.GetErrorType() != "" {
			s.res.FailedCalls++
		}
		s.res.Models[c.GetRequestModel()]++
		s.res.Tokens["input"] += c.GetPromptTokens()
		s.res.Tokens["output"] += c.GetCompletionTokens()
		s.res.Tokens["cache_read"] += c.GetCacheReadTokens()
		s.res.Tokens["cache_write"] += c.GetCacheWriteTokens() + c.GetCacheWrite_1HTokens()
		s.res.Tokens["reasoning"] += c.GetReasoningTokens()
	}
	if ev.GetRuntimeFault() != nil {
		s.res.Faults++
	}
	if ev.GetConversation().GetCreated() != nil {
		s.res.Conversations++
		s.res.Agents[ev.GetAgent()]++
	}
	if ev.GetConversation().GetClosed().GetReason() == pb.CloseReason_CLOSE_REASON_EVICTED {
		s.res.Evicted++
	}
}

// admit opens c, and returns the conversation the limit evicts, if any.
func (s *server) admit(c *conversation) *conversation {
	s.mu.Lock()
	defer s.mu.Unlock()
	var evicted *conversation
	if len(s.open) >= s.cfg.Limit {
		evicted, s.open = s.open[0], s.open[1:]
		evicted.evicted = true
	}
	s.open = append(s.open, c)
	return evicted
}

// release removes c from the open conversations; false if it was evicted.
func (s *server) release(c *conversation) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, o := range s.open {
		if o == c {
			s.open = append(s.open[:i], s.open[i+1:]...)
			return true
		}
	}
	return false
}

func (s *server) isEvicted(c *conversation) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return c.evicted
}

// agent is one agent loop; its rng is its own (not shared).
type agent struct {
	s    *server
	name string
	rng  *rand.Rand
}

// step sends events and waits the pace; false when the run is over. Now
// and then it sends the same request twice, as a client does that retries
// after a lost response: the sidecar counts the second as duplicates.
func (a *agent) step(ctx context.Context, events ...*pb.Event) (bool, error) {
	if err := a.s.send(ctx, events...); err != nil {
		return false, err
	}
	if a.rng.IntN(40) == 0 {
		if err := a.s.resend(ctx, events...); err != nil {
			return false, err
		}
	}
	select {
	case <-ctx.Done():
		return false, nil
	case <-time.After(a.s.cfg.Pace):
		return true, nil
	}
}

func (a *agent) run(ctx context.Context) error {
	for ctx.Err() == nil {
		if err := a.conversation(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (a *agent) event(convID string) *pb.Event {
	return &pb.Event{EventId: a.s.nextID(), Time: timestamppb.Now(), ConversationId: convID, Agent: a.name}
}

func (a *agent) status(convID string, st pb.AgentState) *pb.Event {
	e := a.event(convID)
	e.Payload = &pb.Event_AgentStatus{AgentStatus: &pb.AgentStatus{State: st}}
	return e
}

func (a *agent) lifecycle(convID string, ce *pb.ConversationEvent) *pb.Event {
	e := a.event(convID)
	e.Payload = &pb.Event_Conversation{Conversation: ce}
	return e
}

func (a *agent) closed(convID string, r pb.CloseReason) *pb.Event {
	return a.lifecycle(convID, &pb.ConversationEvent{Kind: &pb.ConversationEvent_Closed{Closed: &pb.ConversationClosed{Reason: r}}})
}

// conversation takes one conversation from creation to its end.
func (a *agent) conversation(ctx context.Context) error {
	c := &conversation{id: a.s.nextID()}
	created := &pb.ConversationCreated{Trigger: triggers[a.rng.IntN(len(triggers))]}
	if a.rng.IntN(2) == 0 {
		// A small budget that a long conversation crosses (50/80/100 %).
		created.MaxBudgetUsd = proto.Float64(0.25 + float64(a.rng.IntN(8))*0.25)
	}
	events := []*pb.Event{a.lifecycle(c.id, &pb.ConversationEvent{Kind: &pb.ConversationEvent_Created{Created: created}})}
	if old := a.s.admit(c); old != nil {
		events = append(events, a.closed(old.id, pb.CloseReason_CLOSE_REASON_EVICTED))
	}
	events = append(events, a.status(c.id, pb.AgentState_AGENT_STATE_LOADING))
	if ok, err := a.step(ctx, events...); !ok {
		return err
	}

	started := a.rng.Float64() > 0.1
	session := a.lifecycle(c.id, &pb.ConversationEvent{Kind: &pb.ConversationEvent_SessionStarted{
		SessionStarted: &pb.SessionStarted{Success: started, DurationSeconds: 0.3 + a.rng.ExpFloat64()*2}}})
	if !started {
		events := []*pb.Event{session, a.status(c.id, pb.AgentState_AGENT_STATE_ERROR)}
		if a.s.release(c) { // else the server evicted it meanwhile, and closed it
			events = append(events, a.closed(c.id, pb.CloseReason_CLOSE_REASON_ERROR))
		}
		_, err := a.step(ctx, events...)
		return err
	}
	if ok, err := a.step(ctx, session, a.status(c.id, pb.AgentState_AGENT_STATE_RUNNING)); !ok {
		return err
	}

	main := agentModels[a.rng.IntN(len(agentModels))]
	turns := 4 + a.rng.IntN(12)
	prompt := int64(4000 + a.rng.IntN(8000))
	for turn := range turns {
		if a.s.isEvicted(c) {
			return nil // closed by the server; the agent moves on
		}
		var events []*pb.Event
		call, failed := a.call(c.id, main, "agent", prompt, turn)
		events = append(events, call)
		prompt += int64(1500 + a.rng.IntN(4000)) // the context grows every turn
		switch {
		case failed == "RateLimitError":
			events = append(events, a.status(c.id, pb.AgentState_AGENT_STATE_RATE_LIMITED), a.status(c.id, pb.AgentState_AGENT_STATE_RUNNING))
		case turn%4 == 3:
			// The condenser summarises the history on a cheaper model.
			cond, _ := a.call(c.id, condenserModels[a.rng.IntN(len(condenserModels))], "condenser", prompt, turn)
			events = append(events, cond)
			prompt /= 3
		case a.rng.IntN(8) == 0:
			// A sub-task on the self-hosted model: no price, no reported cost.
			sub, _ := a.call(c.id, selfHosted, "agent", 6000, turn)
			events = append(events, sub)
		case a.rng.IntN(6) == 0:
			events = append(events, a.status(c.id, pb.AgentState_AGENT_STATE_AWAITING_USER_INPUT), a.status(c.id, pb.AgentState_AGENT_STATE_RUNNING))
		}
		if a.rng.IntN(10) == 0 {
			f := a.event(c.id)
			kind := faultKinds[a.rng.IntN(len(faultKinds))]
			code := int32(0)
			if kind == pb.RuntimeFaultKind_RUNTIME_FAULT_KIND_OOM_KILLED {
				code = 137
			}
			f.Payload = &pb.Event_RuntimeFault{RuntimeFault: &pb.RuntimeFault{Kind: kind, ExitCode: code}}
			events = append(events, f)
		}
		if ok, err := a.step(ctx, events...); !ok {
			return err
		}
	}

	if a.rng.IntN(4) == 0 {
		// The user walks away: the conversation waits for input, open,
		// until the concurrency limit evicts it.
		_, err := a.step(ctx, a.status(c.id, pb.AgentState_AGENT_STATE_AWAITING_USER_INPUT))
		return err
	}
	if !a.s.release(c) {
		return nil
	}
	end, reason := pb.AgentState_AGENT_STATE_FINISHED, pb.CloseReason_CLOSE_REASON_FINISHED
	switch r := a.rng.IntN(10); {
	case r == 0:
		end, reason = pb.AgentState_AGENT_STATE_ERROR, pb.CloseReason_CLOSE_REASON_ERROR
	case r <= 2:
		end, reason = pb.AgentState_AGENT_STATE_STOPPED, pb.CloseReason_CLOSE_REASON_USER
	}
	_, err := a.step(ctx, a.status(c.id, end), a.closed(c.id, reason))
	return err
}

// call is one LLM call of service ("agent", "condenser") on m with a prompt
// of about prompt tokens; it returns the event and its error type ("" = ok).
func (a *agent) call(convID string, m model, service string, prompt int64, turn int) (*pb.Event, string) {
	c := &pb.LLMCall{
		Provider: m.provider, RequestModel: m.name, ResponseModel: m.name, LlmService: service,
		ResponseId: fmt.Sprintf("resp-%d", a.rng.Uint64()), ContextWindow: m.window,
	}
	prompt = min(prompt, m.window*9/10)
	c.PromptTokens = prompt
	// Every turn after the first reads the stable prefix from the cache.
	if turn > 0 {
		c.CacheReadTokens = prompt * int64(60+a.rng.IntN(30)) / 100
	}
	if m.cacheWrites {
		c.CacheWriteTokens = (prompt - c.CacheReadTokens) / 2
		if a.rng.IntN(5) == 0 {
			c.CacheWrite_1HTokens = c.CacheWriteTokens / 4
			c.CacheWriteTokens -= c.CacheWrite_1HTokens
		}
	}
	// Latency grows with the output; most calls stream.
	c.CompletionTokens = int64(150 + a.rng.IntN(1800))
	if m.name == "gpt-5" || m.name == "gemini-2.5-pro" {
		c.ReasoningTokens = c.CompletionTokens * int64(a.rng.IntN(60)) / 100
	}
	c.LatencySeconds = 0.4 + float64(c.CompletionTokens)/80 + a.rng.ExpFloat64()*0.8
	if a.rng.IntN(5) != 0 {
		c.TimeToFirstTokenSeconds = math.Min(0.15+a.rng.ExpFloat64()*0.6, c.LatencySeconds*0.8)
	}
	var failed string
	if a.rng.IntN(12) == 0 {
		failed = errorTypes[a.rng.IntN(len(errorTypes))]
		c.ErrorType = failed
		c.CompletionTokens, c.ReasoningTokens, c.TimeToFirstTokenSeconds = 0, 0, 0
		c.CacheReadTokens, c.CacheWriteTokens, c.CacheWrite_1HTokens = 0, 0, 0
		c.LatencySeconds = math.Min(c.LatencySeconds, 0.2+a.rng.ExpFloat64()*3)
	}
	if m.reportsCost && failed == "" {
		// What litellm would report for gpt-5 and gpt-4o-mini list prices.
		in, out, cached := 1.25, 10.0, 0.125
		if m.name == "gpt-4o-mini" {
			in, out, cached = 0.15, 0.6, 0.075
		}
		cost := (float64(c.PromptTokens-c.CacheReadTokens)*in + float64(c.CacheReadTokens)*cached + float64(c.CompletionTokens)*out) / 1e6
		c.CostUsd = proto.Float64(cost)
	}
	e := a.event(convID)
	e.Payload = &pb.Event_LlmCall{LlmCall: c}
	return e, failed
}

func limitEvent(id string, limit int64) *pb.Event {
	return &pb.Event{EventId: id, Time: timestamppb.Now(), Payload: &pb.Event_Conversation{Conversation: &pb.ConversationEvent{
		Kind: &pb.ConversationEvent_Limit{Limit: &pb.ConcurrencyLimit{MaxConcurrentConversations: limit}}}}}
}
