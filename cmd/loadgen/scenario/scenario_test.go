package scenario

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentmeter/agentmeter/internal/ingesttest"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// sidecar is a fake IngestService that de-duplicates by event id like
// agentmeter and keeps what the scenario sent, so that the test can check
// that every kind of event the dashboards need was there. The end-to-end
// dashboard test (e2e/dashboards_test.go) runs the scenario against the
// real binary.
type sidecar struct {
	mu     sync.Mutex
	seen   map[string]bool
	kinds  map[string]int
	closed map[string]int // conversation id -> closes
	reject string         // reject events of this payload kind
}

func (s *sidecar) answer(req *pb.RecordRequest) *pb.RecordResponse {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &pb.RecordResponse{}
	for i, ev := range req.GetEvents() {
		if s.seen[ev.GetEventId()] {
			resp.Duplicates++
			continue
		}
		kind := kindOf(ev)
		if kind == s.reject {
			resp.Rejected = append(resp.Rejected, &pb.Rejection{Index: uint32(i), EventId: ev.GetEventId(), Field: kind, Reason: "test"})
			continue
		}
		s.seen[ev.GetEventId()] = true
		s.kinds[kind]++
		if ev.GetConversation().GetClosed() != nil {
			s.closed[ev.GetConversationId()]++
		}
		resp.Accepted++
	}
	return resp
}

func kindOf(ev *pb.Event) string {
	switch {
	case ev.GetLlmCall() != nil && ev.GetLlmCall().GetErrorType() != "":
		return "llm_call_failed"
	case ev.GetLlmCall() != nil && ev.GetLlmCall().GetLlmService() == "condenser":
		return "llm_call_condenser"
	case ev.GetLlmCall() != nil && ev.GetLlmCall().GetCostUsd() > 0:
		return "llm_call_reported_cost"
	case ev.GetLlmCall() != nil && ev.GetLlmCall().GetCacheWriteTokens() > 0:
		return "llm_call_cache_write"
	case ev.GetLlmCall() != nil:
		return "llm_call"
	case ev.GetAgentStatus() != nil:
		return "status_" + strings.ToLower(strings.TrimPrefix(ev.GetAgentStatus().GetState().String(), "AGENT_STATE_"))
	case ev.GetRuntimeFault() != nil:
		return "runtime_fault"
	case ev.GetConversation().GetLimit() != nil:
		return "limit"
	case ev.GetConversation().GetCreated() != nil && ev.GetConversation().GetCreated().MaxBudgetUsd != nil:
		return "created_with_budget"
	case ev.GetConversation().GetCreated() != nil:
		return "created"
	case ev.GetConversation().GetSessionStarted() != nil:
		return "session_started"
	case ev.GetConversation().GetClosed() != nil:
		return "closed_" + strings.ToLower(strings.TrimPrefix(ev.GetConversation().GetClosed().GetReason().String(), "CLOSE_REASON_"))
	}
	return "other"
}

func newSidecar() *sidecar {
	return &sidecar{seen: map[string]bool{}, kinds: map[string]int{}, closed: map[string]int{}}
}

func TestRunSendsEveryKind(t *testing.T) {
	s := newSidecar()
	cfg := Default()
	cfg.Target = ingesttest.Serve(t, s.answer)
	cfg.Duration, cfg.Pace = 3*time.Second, 2*time.Millisecond
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, kind := range []string{
		"llm_call", "llm_call_failed", "llm_call_condenser", "llm_call_reported_cost", "llm_call_cache_write",
		"status_loading", "status_running", "status_awaiting_user_input", "status_rate_limited", "status_error", "status_finished", "status_stopped",
		"runtime_fault", "limit", "created", "created_with_budget", "session_started",
		"closed_finished", "closed_error", "closed_user", "closed_evicted",
	} {
		if s.kinds[kind] == 0 {
			t.Errorf("no %s event in %v", kind, s.kinds)
		}
	}
	for id, n := range s.closed {
		if n != 1 {
			t.Errorf("conversation %s closed %d times", id, n)
		}
	}
	for _, m := range Models() {
		if res.Models[m] == 0 {
			t.Errorf("model %s never called: %v", m, res.Models)
		}
	}
	if res.Duplicates == 0 || res.Rejected != 0 || res.Accepted+res.Duplicates != res.Events {
		t.Errorf("result %+v: want some duplicates (retries), no rejection, every event answered", res)
	}
	if int(res.Accepted) != len(s.seen) {
		t.Errorf("result counts %d accepted, the sidecar %d", res.Accepted, len(s.seen))
	}
	if res.Evicted == 0 || int(res.Evicted) != s.kinds["closed_evicted"] {
		t.Errorf("evicted %d, sidecar saw %d", res.Evicted, s.kinds["closed_evicted"])
	}
}

// TestRunFailsOnRejection: every scenario event is valid, so a rejection
// means the sidecar and the scenario disagree, and the run says so.
func TestRunFailsOnRejection(t *testing.T) {
	s := newSidecar()
	s.reject = "runtime_fault"
	cfg := Default()
	cfg.Target = ingesttest.Serve(t, s.answer)
	cfg.Duration, cfg.Pace = 5*time.Second, time.Millisecond
	_, err := Run(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "rejected") {
		t.Fatalf("err = %v, want a rejection", err)
	}
}

func TestValidate(t *testing.T) {
	err := Config{Target: "192.0.2.1:1", Agents: 0, Duration: 0, Pace: -1, Limit: 0}.Validate()
	for _, want := range []string{"loopback", "agents 0", "duration 0s", "pace -1ns", "limit 0"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
	if err := Default().Validate(); err != nil {
		t.Errorf("Default().Validate() = %v", err)
	}
}
