package load

import (
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/agentmeter/agentmeter/internal/ingesttest"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

func TestIDsUniqueAcrossGoroutines(t *testing.T) {
	s, err := newIDs(0)
	if err != nil {
		t.Fatal(err)
	}
	const workers, perWorker, batch = 8, 200, 7
	got := make([][]string, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range perWorker {
				first, n := s.reserve(batch)
				for c := first; c < first+n; c++ {
					got[w] = append(got[w], s.id(c))
				}
			}
		})
	}
	wg.Wait()
	seen := make(map[string]bool)
	for _, ids := range got {
		for _, id := range ids {
			if seen[id] {
				t.Fatalf("id %q handed out twice", id)
			}
			seen[id] = true
			if len(id) != idLen || !strings.HasPrefix(id, string(s.prefix[:])) {
				t.Fatalf("id %q: want %d bytes with prefix %q", id, idLen, s.prefix)
			}
		}
	}
	if len(seen) != workers*perWorker*batch {
		t.Fatalf("got %d ids, want %d", len(seen), workers*perWorker*batch)
	}
}

func TestIDsPrefixDiffersPerRun(t *testing.T) {
	a, err := newIDs(0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := newIDs(0)
	if err != nil {
		t.Fatal(err)
	}
	if a.id(0) == b.id(0) {
		t.Fatalf("two runs share the id prefix %q", a.prefix)
	}
	// UUID shape: 8-4-4-4-12 with version 4.
	id := a.id(0xabc)
	parts := strings.Split(id, "-")
	if len(parts) != 5 || len(parts[0]) != 8 || len(parts[4]) != 12 || parts[2][0] != '4' {
		t.Fatalf("id %q is not UUID-shaped", id)
	}
	if !strings.HasSuffix(id, "000000000abc") {
		t.Fatalf("id %q does not end in the counter", id)
	}
}

func TestIDsReserveStopsAtLimit(t *testing.T) {
	s, err := newIDs(250)
	if err != nil {
		t.Fatal(err)
	}
	var total uint64
	for {
		_, n := s.reserve(100)
		if n == 0 {
			break
		}
		total += n
	}
	if total != 250 {
		t.Fatalf("reserved %d ids under a limit of 250", total)
	}
}

func TestPutVarint5(t *testing.T) {
	for _, v := range []uint64{0, 1, 127, 128, 1 << 28, 1_800_000_000, 1<<35 - 1} {
		var b [secondsLen]byte
		putVarint5(b[:], v)
		got, n := protowire.ConsumeVarint(b[:])
		if n != secondsLen || got != v {
			t.Errorf("putVarint5(%d) decodes to %d in %d bytes", v, got, n)
		}
	}
}

func TestTemplateFill(t *testing.T) {
	s, err := newIDs(0)
	if err != nil {
		t.Fatal(err)
	}
	const batch = 50
	sec := time.Now().Unix()
	tpls, err := buildTemplates(s, 3, batch, 7, 5, sec)
	if err != nil {
		t.Fatal(err)
	}
	var buf []byte
	for _, n := range []int{batch, 1, 23} {
		for ti := range tpls {
			first := uint64(1000 * (ti + 1))
			buf = tpls[ti].fill(buf, s, first, n, sec+42)
			var req pb.RecordRequest
			if err := proto.Unmarshal(buf, &req); err != nil {
				t.Fatalf("template %d, %d events: %v", ti, n, err)
			}
			if len(req.Events) != n {
				t.Fatalf("template %d: %d events, want %d", ti, len(req.Events), n)
			}
			for i, ev := range req.Events {
				if want := s.id(first + uint64(i)); ev.GetEventId() != want {
					t.Fatalf("event %d id %q, want %q", i, ev.GetEventId(), want)
				}
				if ev.GetTime().GetSeconds() != sec+42 {
					t.Fatalf("event %d time %d, want %d", i, ev.GetTime().GetSeconds(), sec+42)
				}
				checkRealistic(t, ev)
			}
		}
	}
}

// checkRealistic fails on an event a strict ingest would reject.
func checkRealistic(t *testing.T, ev *pb.Event) {
	t.Helper()
	if ev.GetConversationId() == "" || ev.GetAgent() != "CodeActAgent" {
		t.Fatalf("event %s: conversation %q agent %q", ev.GetEventId(), ev.GetConversationId(), ev.GetAgent())
	}
	switch p := ev.GetPayload().(type) {
	case *pb.Event_AgentStatus:
		if p.AgentStatus.GetState() == pb.AgentState_AGENT_STATE_UNSPECIFIED {
			t.Fatalf("event %s: unspecified state", ev.GetEventId())
		}
	case *pb.Event_LlmCall:
		c := p.LlmCall
		if c.GetRequestModel() == "" || c.GetProvider() == "" {
			t.Fatalf("event %s: no model or provider", ev.GetEventId())
		}
		if c.GetCacheReadTokens()+c.GetCacheWriteTokens()+c.GetCacheWrite_1HTokens() > c.GetPromptTokens() ||
			c.GetReasoningTokens() > c.GetCompletionTokens() ||
			c.GetTimeToFirstTokenSeconds() > c.GetLatencySeconds() || c.GetLatencySeconds() <= 0 ||
			(c.CostUsd != nil && c.GetCostUsd() < 0) {
			t.Fatalf("event %s: inconsistent call %v", ev.GetEventId(), c)
		}
	default:
		t.Fatalf("event %s: unexpected payload %T", ev.GetEventId(), p)
	}
}

func TestTemplatesMix(t *testing.T) {
	s, err := newIDs(0)
	if err != nil {
		t.Fatal(err)
	}
	tpls, err := buildTemplates(s, 10, 100, 100, 4, time.Now().Unix())
	if err != nil {
		t.Fatal(err)
	}
	convs, reqModels, status, calls := map[string]bool{}, map[string]bool{}, 0, 0
	for _, tpl := range tpls {
		var req pb.RecordRequest
		if err := proto.Unmarshal(tpl.b, &req); err != nil {
			t.Fatal(err)
		}
		for _, ev := range req.Events {
			convs[ev.GetConversationId()] = true
			if c := ev.GetLlmCall(); c != nil {
				reqModels[c.GetRequestModel()] = true
				calls++
			} else {
				status++
			}
		}
	}
	if len(convs) != 100 || len(reqModels) != 4 || status*20 != status+calls {
		t.Fatalf("conversations %d (want 100), models %d (want 4), status %d of %d (want 5%%)",
			len(convs), len(reqModels), status, status+calls)
	}
}

func TestCheckResponse(t *testing.T) {
	rej := []*pb.Rejection{{Index: 0}, {Index: 3}}
	tests := []struct {
		name string
		n    int
		resp *pb.RecordResponse
		ok   bool
	}{
		{"all accepted", 10, &pb.RecordResponse{Accepted: 10}, true},
		{"mixed", 10, &pb.RecordResponse{Accepted: 5, Duplicates: 3, Rejected: rej}, true},
		{"all duplicates", 4, &pb.RecordResponse{Duplicates: 4}, true},
		{"short", 10, &pb.RecordResponse{Accepted: 9}, false},
		{"over", 10, &pb.RecordResponse{Accepted: 10, Rejected: rej}, false},
		{"empty response", 1, &pb.RecordResponse{}, false},
		{"overflow does not wrap", 2, &pb.RecordResponse{Accepted: 1 << 31, Duplicates: 1 << 31}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := checkResponse(tt.n, tt.resp); (err == nil) != tt.ok {
				t.Fatalf("checkResponse(%d, %v) = %v, want ok=%v", tt.n, tt.resp, err, tt.ok)
			}
		})
	}
}

func TestTallyCounts(t *testing.T) {
	tl := &tally{start: time.Now(), log: discard()}
	tl.add(10, &pb.RecordResponse{Accepted: 7, Duplicates: 1, Rejected: []*pb.Rejection{{}, {}}})
	tl.add(10, &pb.RecordResponse{Accepted: 9}) // one event unaccounted for
	r := tl.result()
	want := Result{Events: 20, Requests: 2, Accepted: 16, Duplicates: 1, Rejected: 2, Errors: 1}
	r.Seconds, r.EventsPerSec = 0, 0
	if r != want {
		t.Fatalf("result %+v, want %+v", r, want)
	}
}

func TestCheckLoopback(t *testing.T) {
	tests := []struct {
		target string
		ok     bool
	}{
		{"localhost:4320", true},
		{"127.0.0.1:1", true},
		{"127.8.9.10:4320", true},
		{"[::1]:4320", true},
		{"10.0.0.1:4320", false},
		{"example.com:443", false},
		{"localhost.example.com:4320", false},
		{"0.0.0.0:4320", false},
		{"localhost", false},
		{"localhost:", false},
		{"dns:///localhost:4320", false},
	}
	for _, tt := range tests {
		if err := CheckLoopback(tt.target); (err == nil) != tt.ok {
			t.Errorf("CheckLoopback(%q) = %v, want ok=%v", tt.target, err, tt.ok)
		}
	}
}

func TestValidateListsEveryProblem(t *testing.T) {
	c := Default()
	c.Target, c.Batch, c.Mode, c.Duration = "10.1.1.1:1", 0, "both", 0
	err := c.Validate()
	for _, want := range []string{"loopback", "batch", "mode", "bounded"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default() is invalid: %v", err)
	}
}

// recorder is an IngestService that de-duplicates by event_id like agentmeter
// does, and optionally miscounts.
type recorder struct {
	miscount bool

	mu   sync.Mutex // guards seen
	seen map[string]bool
}

func (s *recorder) answer(req *pb.RecordRequest) *pb.RecordResponse {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &pb.RecordResponse{}
	for _, ev := range req.GetEvents() {
		if s.seen[ev.GetEventId()] {
			resp.Duplicates++
		} else {
			s.seen[ev.GetEventId()] = true
			resp.Accepted++
		}
	}
	if s.miscount {
		resp.Accepted++
	}
	return resp
}

// startRecorder serves s on a loopback port for the test's lifetime.
func startRecorder(t *testing.T, s *recorder) string {
	t.Helper()
	s.seen = make(map[string]bool)
	return ingesttest.Serve(t, s.answer)
}

func TestRunNeverRepeatsAnID(t *testing.T) {
	for _, mode := range []Mode{ModeStream, ModeUnary} {
		t.Run(string(mode), func(t *testing.T) {
			target := startRecorder(t, &recorder{})
			c := Default()
			c.Target, c.Mode, c.Batch, c.Streams, c.Window = target, mode, 7, 3, 5
			c.Duration, c.Events, c.Progress, c.Timeout = 0, 5_000, 0, time.Minute
			r, err := Run(t.Context(), c)
			if err != nil {
				t.Fatal(err)
			}
			want := Result{Events: 5_000, Requests: 5_000/7 + 1, Accepted: 5_000}
			r.Seconds, r.EventsPerSec = 0, 0
			if r != want {
				t.Fatalf("result %+v, want %+v", r, want)
			}
		})
	}
}

func TestRunCountsMiscountsAsErrors(t *testing.T) {
	target := startRecorder(t, &recorder{miscount: true})
	c := Default()
	c.Target, c.Batch, c.Duration, c.Events, c.Progress = target, 10, 0, 100, 0
	r, err := Run(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	if r.Errors != 10 || r.Requests != 10 {
		t.Fatalf("result %+v, want 10 requests, each an error", r)
	}
}

func TestRunStopsAfterDuration(t *testing.T) {
	target := startRecorder(t, &recorder{})
	c := Default()
	c.Target, c.Duration, c.Progress = target, 300*time.Millisecond, 0
	start := time.Now()
	r, err := Run(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("a 300ms run took %s", took)
	}
	if r.Events == 0 || r.Accepted != r.Events || r.Errors != 0 {
		t.Fatalf("result %+v", r)
	}
}

func TestRunFailsWithoutServer(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := lis.Addr().String()
	_ = lis.Close()
	c := Default()
	c.Target, c.Timeout = target, 500*time.Millisecond
	if _, err := Run(t.Context(), c); err == nil {
		t.Fatal("Run against a closed port succeeded")
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
