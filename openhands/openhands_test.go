package openhands

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentmeter/agentmeter/processor"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
	"github.com/agentmeter/agentmeter/receiver"
)

// recorder is a Consumer and DurationObserver that keeps what it gets and
// de-duplicates ids as the processor does.
type recorder struct {
	mu        sync.Mutex
	seen      map[string]bool
	events    []*pb.Event
	durations []*pb.LLMCall
	fail      error // Consume's answer when set
}

func (r *recorder) Consume(_ context.Context, events []*pb.Event, _ time.Time, results []processor.Result) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	if r.seen == nil {
		r.seen = map[string]bool{}
	}
	for i, ev := range events {
		if r.seen[ev.GetEventId()] {
			results[i] = processor.Result{Outcome: processor.Duplicate}
			continue
		}
		r.seen[ev.GetEventId()] = true
		r.events = append(r.events, ev)
		results[i] = processor.Result{Outcome: processor.Accepted}
	}
	return nil
}

// Refused is not needed by these tests: they check what is consumed.
func (r *recorder) Refused(*pb.Event) {}

func (r *recorder) ObserveDuration(_ string, c *pb.LLMCall) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.durations = append(r.durations, c)
}

func (r *recorder) calls() []*pb.LLMCall {
	var out []*pb.LLMCall
	for _, ev := range r.events {
		if c := ev.GetLlmCall(); c != nil {
			out = append(out, c)
		}
	}
	return out
}

func sample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newTestHandler(t testing.TB, keys []string, draining <-chan struct{}) (*Handler, *recorder, http.Handler) {
	t.Helper()
	rec := &recorder{}
	h, err := New(Config{Path: "/openhands", APIKeys: keys, MaxBodyBytes: 1 << 20,
		Limits: receiver.Limits{MaxFutureSkew: time.Minute}},
		Deps{Consumer: rec, Durations: rec, Draining: draining})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for _, r := range h.Routes() {
		mux.Handle(r.Pattern, r.Handler)
	}
	return h, rec, mux
}

func post(t testing.TB, mux http.Handler, path, key, remote string, body []byte) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	if key != "" {
		req.Header.Set(SessionKeyHeader, key)
	}
	if remote != "" {
		req.RemoteAddr = remote
	}
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, req)
	return w
}

const conv = "0f4c3b2a7d1e4c5b9a8f2e6d1c0b9a87"

func TestSamplesTranslate(t *testing.T) {
	_, rec, mux := newTestHandler(t, []string{"k"}, nil)
	for _, name := range []string{"POST_events_batch1.json", "POST_events_batch1.json", "POST_events_batch2.json",
		"POST_events_batch3_timer_flush.json", "POST_events_batch3_timer_flush.json"} {
		if w := post(t, mux, "/openhands/events/"+conv, "k", "", sample(t, name)); w.Code != 200 {
			t.Fatalf("%s: %d %s", name, w.Code, w.Body)
		}
	}
	calls := rec.calls()
	if len(calls) != 2 {
		t.Fatalf("%d llm calls, want 2: %v", len(calls), calls)
	}
	want := []struct {
		prompt, completion, cacheRead, cacheWrite int64
		cost                                      float64
	}{
		{11873, 412, 0, 11850, 0.050562},
		{24434 - 11873, 600 - 412, 11850, 12540 - 11850, 0.059564000000000006 - 0.050562},
	}
	for i, c := range calls {
		w := want[i]
		if c.GetProvider() != "anthropic" || c.GetRequestModel() != "claude-sonnet-4-5-20250929" || c.GetLlmService() != "agent" ||
			c.GetPromptTokens() != w.prompt || c.GetCompletionTokens() != w.completion ||
			c.GetCacheReadTokens() != w.cacheRead || c.GetCacheWriteTokens() != w.cacheWrite ||
			c.CostUsd == nil || math.Abs(*c.CostUsd-w.cost) > 1e-12 || c.GetContextWindow() != 200000 || c.GetLatencySeconds() != 0 {
			t.Errorf("call %d = %v, want %+v", i, c, w)
		}
	}
	if len(rec.durations) != 2 || rec.durations[0].GetLatencySeconds()+rec.durations[1].GetLatencySeconds() != 6.21+3.87 {
		t.Errorf("durations = %v, want 6.21 and 3.87 once each", rec.durations)
	}
	var states []pb.AgentState
	for _, ev := range rec.events {
		if s := ev.GetAgentStatus(); s != nil {
			states = append(states, s.GetState())
		}
	}
	wantStates := []pb.AgentState{pb.AgentState_AGENT_STATE_AWAITING_USER_INPUT, pb.AgentState_AGENT_STATE_RUNNING,
		pb.AgentState_AGENT_STATE_FINISHED, pb.AgentState_AGENT_STATE_FINISHED}
	if !equalStates(states, wantStates) {
		t.Errorf("states = %v, want %v", states, wantStates)
	}
}

func equalStates(a, b []pb.AgentState) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestUnpricedBucketLeavesCostUnset(t *testing.T) {
	_, rec, mux := newTestHandler(t, []string{"k"}, nil)
	// Cost stays 0 while tokens grow: OpenHands could not price it.
	body := []byte(`[` + string(sample(t, "goal_events.jsonl")[0:0]) + `{"id":"e1","kind":"ConversationStateUpdateEvent","key":"stats","value":{"usage_to_metrics":{"default":{"model_name":"litellm_proxy/minimax-m2.7","accumulated_cost":0.0,"accumulated_token_usage":{"prompt_tokens":596,"completion_tokens":775}}}}}]`)
	post(t, mux, "/openhands/events/"+conv, "k", "", body)
	calls := rec.calls()
	if len(calls) != 1 || calls[0].CostUsd != nil || calls[0].GetProvider() != "" || calls[0].GetRequestModel() != "minimax-m2.7" || calls[0].GetLlmService() != "default" {
		t.Errorf("calls = %v, want one call of minimax-m2.7 without a cost", calls)
	}
}

func TestTimeoutsAndErrors(t *testing.T) {
	_, rec, mux := newTestHandler(t, []string{"k"}, nil)
	var batch []json.RawMessage
	for _, n := range []string{"observation_terminal_soft_timeout.json", "observation_terminal_hard_timeout.json", "observation_terminal_ok.json",
		"conversation_error.json", "conversation_error_budget.json", "agent_error.json", "streaming_delta.json", "user_reject.json"} {
		batch = append(batch, sample(t, filepath.Join("events", n)))
	}
	body, _ := json.Marshal(batch)
	w := post(t, mux, "/openhands/events/"+conv, "k", "", body)
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"applied":4`) || !strings.Contains(w.Body.String(), `"ignored":4`) {
		t.Fatalf("answer %d %s", w.Code, w.Body)
	}
	var faults []pb.RuntimeFaultKind
	var states []pb.AgentState
	for _, ev := range rec.events {
		if f := ev.GetRuntimeFault(); f != nil {
			faults = append(faults, f.GetKind())
		}
		if s := ev.GetAgentStatus(); s != nil {
			states = append(states, s.GetState())
		}
	}
	if len(faults) != 2 || faults[0] != pb.RuntimeFaultKind_RUNTIME_FAULT_KIND_COMMAND_TIMEOUT_SOFT || faults[1] != pb.RuntimeFaultKind_RUNTIME_FAULT_KIND_COMMAND_TIMEOUT_HARD {
		t.Errorf("faults = %v, want soft then hard", faults)
	}
	if !equalStates(states, []pb.AgentState{pb.AgentState_AGENT_STATE_RATE_LIMITED, pb.AgentState_AGENT_STATE_ERROR}) {
		t.Errorf("states = %v, want rate_limited then error", states)
	}
}

func TestConversationInfoLifecycle(t *testing.T) {
	_, rec, mux := newTestHandler(t, []string{"k"}, nil)
	for _, n := range []string{"POST_conversations_start.json", "POST_conversations_start.json", "POST_conversations_delete.json", "POST_conversations_delete.json"} {
		if w := post(t, mux, "/openhands/conversations", "k", "", sample(t, n)); w.Code != 200 {
			t.Fatalf("%s: %d %s", n, w.Code, w.Body)
		}
	}
	var kinds []string
	for _, ev := range rec.events {
		if ev.GetConversationId() != conv {
			t.Errorf("conversation id %q, want the dashed id normalised to %s", ev.GetConversationId(), conv)
		}
		switch {
		case ev.GetConversation().GetCreated() != nil:
			kinds = append(kinds, "created")
		case ev.GetConversation().GetClosed() != nil:
			kinds = append(kinds, "closed:"+ev.GetConversation().GetClosed().GetReason().String())
		case ev.GetAgentStatus() != nil:
			kinds = append(kinds, ev.GetAgentStatus().GetState().String())
		case ev.GetLlmCall() != nil:
			kinds = append(kinds, "llm")
		}
	}
	// The delete carries the stats of two calls: one llm event of their sum.
	want := "created AGENT_STATE_LOADING llm AGENT_STATE_STOPPED closed:CLOSE_REASON_DELETED"
	if got := strings.Join(kinds, " "); got != want {
		t.Errorf("events = %s\nwant     %s", got, want)
	}
	if len(rec.durations) != 2 {
		t.Errorf("%d durations from the delete's stats, want 2", len(rec.durations))
	}
}

func TestRefusals(t *testing.T) {
	draining := make(chan struct{})
	_, rec, mux := newTestHandler(t, nil, draining) // no keys: loopback only
	batch := sample(t, "POST_events_pause_batch.json")
	for _, tc := range []struct {
		name, path, remote string
		body               []byte
		code               int
		want               string
	}{
		{"remote peer without keys", "/openhands/events/" + conv, "10.0.0.7:4242", batch, 403, "only loopback"},
		{"loopback", "/openhands/events/" + conv, "127.0.0.1:4242", batch, 200, `"applied":1`},
		{"ipv6 loopback", "/openhands/events/" + conv, "[::1]:4242", batch, 200, `"ignored":1`},
		{"dashed id", "/openhands/events/0f4c3b2a-7d1e-4c5b-9a8f-2e6d1c0b9a87", "127.0.0.1:1", batch, 200, `"events":2`},
		{"bad id", "/openhands/events/xyz", "127.0.0.1:1", batch, 400, "not 32 hex"},
		{"null body", "/openhands/events/" + conv, "127.0.0.1:1", []byte("null"), 400, "got null"},
		{"string body", "/openhands/events/" + conv, "127.0.0.1:1", []byte(`"x"`), 400, "got a string"},
		{"info array", "/openhands/conversations", "127.0.0.1:1", []byte(`[]`), 400, "got an array"},
		{"too large", "/openhands/events/" + conv, "127.0.0.1:1", bytes.Repeat([]byte(" "), 2<<20), 413, "max_body_mib"},
	} {
		w := post(t, mux, tc.path, "", tc.remote, tc.body)
		if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.want) {
			t.Errorf("%s: %d %s, want %d %q", tc.name, w.Code, w.Body, tc.code, tc.want)
		}
	}
	if n := len(rec.events); n != 1 {
		t.Errorf("%d events applied, want 1 (the paused status, once)", n)
	}
	close(draining)
	if w := post(t, mux, "/openhands/events/"+conv, "", "127.0.0.1:1", batch); w.Code != 503 || w.Header().Get("Retry-After") == "" {
		t.Errorf("while draining: %d, want 503 with Retry-After", w.Code)
	}
}

func TestKeys(t *testing.T) {
	_, _, mux := newTestHandler(t, []string{"one", "two"}, nil)
	batch := sample(t, "POST_events_pause_batch.json")
	for key, code := range map[string]int{"": 401, "three": 401, "one": 200, "two": 200, "ONE": 401} {
		if w := post(t, mux, "/openhands/events/"+conv, key, "10.0.0.7:1", batch); w.Code != code {
			t.Errorf("key %q: %d, want %d", key, w.Code, code)
		}
	}
}

func TestNormalizeID(t *testing.T) {
	for in, want := range map[string]string{
		conv:                                   conv,
		strings.ToUpper(conv):                  conv,
		"0f4c3b2a-7d1e-4c5b-9a8f-2e6d1c0b9a87": conv,
		"0f4c3b2a7d1e4c5b9a8f2e6d1c0b9a8":      "",
		"0f4c3b2a-7d1e-4c5b-9a8f2e6d1c0b9a87-": "",
		"0f4c3b2a_7d1e_4c5b_9a8f_2e6d1c0b9a87": "",
		"gf4c3b2a7d1e4c5b9a8f2e6d1c0b9a87":     "",
	} {
		got, ok := NormalizeID(in)
		if got != want || ok != (want != "") {
			t.Errorf("NormalizeID(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestSplitModel(t *testing.T) {
	for in, want := range map[string][2]string{
		"litellm_proxy/anthropic/claude-sonnet-4-5": {"anthropic", "claude-sonnet-4-5"},
		"litellm_proxy/minimax-m2.7":                {"", "minimax-m2.7"},
		"bedrock/us.anthropic.claude-3":             {"aws.bedrock", "us.anthropic.claude-3"},
		"gpt-4o":                                    {"", "gpt-4o"},
		"openrouter/anthropic/claude":               {"openrouter", "anthropic/claude"},
	} {
		p, m := splitModel(in)
		if p != want[0] || m != want[1] {
			t.Errorf("splitModel(%q) = %q, %q; want %q, %q", in, p, m, want[0], want[1])
		}
	}
}

// FuzzWebhook feeds arbitrary bodies to both routes: never a panic, never a
// 5xx, and every event the translator makes passes the ingest's checks or
// is counted.
func FuzzWebhook(f *testing.F) {
	for _, n := range []string{"POST_events_batch1.json", "POST_events_batch2.json", "POST_events_error_batch.json",
		"POST_events_pause_batch.json", "POST_conversations_start.json"} {
		f.Add(sample(f, n))
	}
	f.Add([]byte(`[{"kind":"ConversationStateUpdateEvent","id":"x","key":"stats","value":{"usage_to_metrics":{"a":{"accumulated_cost":-1,"accumulated_token_usage":{"prompt_tokens":-5}}}}}]`))
	f.Add([]byte(`[{"kind":"ObservationEvent","id":"y","observation":{"kind":"TerminalObservation","exit_code":-1,"metadata":{"suffix":"timed out after 1s"}}}]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		_, _, mux := newTestHandler(t, []string{"k"}, nil)
		for _, path := range []string{"/openhands/events/" + conv, "/openhands/conversations"} {
			w := post(t, mux, path, "k", "", body)
			if w.Code >= 500 || (w.Code != 200 && w.Code != 400) {
				t.Fatalf("POST %s = %d %s", path, w.Code, w.Body)
			}
		}
	})
}

// A batch the processor could not apply (its storage failed) is answered
// 503 and leaves no trace: sent again, it is applied whole.
func TestConsumeFailureRollsBack(t *testing.T) {
	_, rec, mux := newTestHandler(t, []string{"k"}, nil)
	rec.fail = processor.ErrStorageFull
	batch := sample(t, "POST_events_batch1.json")
	if w := post(t, mux, "/openhands/events/"+conv, "k", "", batch); w.Code != 503 || w.Header().Get("Retry-After") == "" {
		t.Fatalf("with the storage failing: %d %s, want 503", w.Code, w.Body)
	}
	rec.fail = nil
	if w := post(t, mux, "/openhands/events/"+conv, "k", "", batch); w.Code != 200 {
		t.Fatalf("sent again: %d %s", w.Code, w.Body)
	}
	if calls := rec.calls(); len(calls) != 1 || calls[0].GetPromptTokens() != 11873 {
		t.Errorf("calls after the resend = %v, want the first call whole", calls)
	}
}

func (r *recorder) Begin(ctx context.Context, events []*pb.Event, _ []byte, now time.Time, results []processor.Result) *processor.Pending {
	return processor.Ended(r.Consume(ctx, events, now, results))
}
