package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// The OpenHands V1 webhook feed against the real binary: the sample bodies
// of openhands-agent-server 1.43 (openhands/testdata, from the feed's
// facts), replayed in the order the agent-server sends them, with a
// retried batch, a repeated full_state, wrong keys and garbage. Totals are
// computed here from the sample bodies, not by the collector's code.

const (
	ohKey  = "session-key-1"
	ohConv = "0f4c3b2a7d1e4c5b9a8f2e6d1c0b9a87"
)

// startOpenHandsCollector starts a collector with receiver.openhands on.
func startOpenHandsCollector(t *testing.T) *collector {
	t.Helper()
	return startOpenHandsCollectorAt(t, "", "", "")
}

// startOpenHandsCollectorAt starts it on the given addresses ("": free
// ones) with storage.directory set to storageDir ("": memory only).
func startOpenHandsCollectorAt(t *testing.T, grpcAt, httpAt, storageDir string) *collector {
	t.Helper()
	needBinary(t)
	o := options{}.withDefaults()
	dir := t.TempDir()
	for attempt := 1; ; attempt++ {
		grpcAddr, httpAddr := grpcAt, httpAt
		if grpcAddr == "" {
			grpcAddr, httpAddr = freePair(t)
		}
		cfg := strings.Replace(configYAML(o, grpcAddr, httpAddr), "receiver:\n",
			"receiver:\n  openhands:\n    enabled: true\n    api_keys: [\""+ohKey+"\"]\n    max_body_mib: 1\n", 1)
		if storageDir != "" {
			cfg += "storage:\n  directory: " + storageDir + "\n  sync: false\n"
		}
		path := filepath.Join(dir, fmt.Sprintf("config-%d.yaml", attempt))
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		c := launch(t, o, path, grpcAddr, httpAddr)
		err := c.waitReady(readyTimeout)
		if err == nil {
			return c
		}
		if c.hasExited() && strings.Contains(c.stderr.String(), "address already in use") && attempt < 3 && grpcAt == "" {
			continue
		}
		t.Fatalf("collector not ready: %v\nconfig:\n%s", err, cfg)
	}
}

func ohSample(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "openhands", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ohPost posts body to the webhook path with key (none when "") and
// returns the status and body.
func ohPost(t *testing.T, c *collector, path, key string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+c.httpAddr+"/openhands"+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("X-Session-API-Key", key)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func ohMust(t *testing.T, c *collector, path string, body []byte) {
	t.Helper()
	if code, resp := ohPost(t, c, path, ohKey, body); code != http.StatusOK {
		t.Fatalf("POST %s = %d %s, want 200", path, code, resp)
	}
}

// ohTokens is one usage bucket's cumulative token counts, as a sample
// carries them.
type ohTokens struct {
	Prompt     int64   `json:"prompt_tokens"`
	Completion int64   `json:"completion_tokens"`
	CacheRead  int64   `json:"cache_read_tokens"`
	CacheWrite int64   `json:"cache_write_tokens"`
	Cost       float64 `json:"-"`
}

// ohLastStats returns the "agent" bucket of the last stats update in a
// sample batch.
func ohLastStats(t *testing.T, batch []byte) ohTokens {
	t.Helper()
	var events []struct {
		Key   string          `json:"key"`
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(batch, &events); err != nil {
		t.Fatal(err)
	}
	var last ohTokens
	for _, e := range events {
		if e.Key != "stats" {
			continue
		}
		var v struct {
			UsageToMetrics map[string]struct {
				Cost   float64  `json:"accumulated_cost"`
				Tokens ohTokens `json:"accumulated_token_usage"`
			} `json:"usage_to_metrics"`
		}
		if err := json.Unmarshal(e.Value, &v); err != nil {
			t.Fatal(err)
		}
		m := v.UsageToMetrics["agent"]
		last = m.Tokens
		last.Cost = m.Cost
	}
	return last
}

func ohUsage(t *testing.T, c *collector, conv string) *pb.ConversationUsage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := pb.NewUsageServiceClient(c.conn).GetUsage(ctx, &pb.GetUsageRequest{ConversationId: conv})
	if err != nil {
		t.Fatalf("GetUsage(%s): %v", conv, err)
	}
	return resp.GetUsage()
}

func TestOpenHandsWebhookReplay(t *testing.T) {
	c := startOpenHandsCollector(t)
	events := "/events/" + ohConv
	batch1, batch2 := ohSample(t, "POST_events_batch1.json"), ohSample(t, "POST_events_batch2.json")
	batch3 := ohSample(t, "POST_events_batch3_timer_flush.json")

	// Refused before anything is read or applied.
	for _, tc := range []struct {
		name, path, key string
		body            []byte
		code            int
		want            string
	}{
		{"no key", events, "", batch1, 401, "missing X-Session-API-Key"},
		{"wrong key", events, "not-the-key", batch1, 401, "wrong X-Session-API-Key"},
		{"garbage", events, ohKey, []byte(`[{"kind": "ConversationStateUpdateEvent",`), 400, "malformed JSON"},
		{"not an array", events, ohKey, []byte(`{"kind": "PauseEvent"}`), 400, "must be a JSON array of events, got an object"},
		{"empty body", events, ohKey, nil, 400, "empty body"},
		{"bad conversation id", "/events/not-a-conversation", ohKey, batch1, 400, "not 32 hex characters"},
		{"over max_body_mib", events, ohKey, append(append([]byte("["), bytes.Repeat([]byte(`{"kind":"PauseEvent","id":"x"},`), 40000)...), []byte(`{}]`)...), 413, "larger than receiver.openhands.max_body_mib"},
		{"info garbage", "/conversations", ohKey, []byte(`{"id": 5}`), 400, "field id must be string"},
		{"info bad id", "/conversations", ohKey, []byte(`{"id": "0f4c3b2a"}`), 400, "is not a UUID"},
	} {
		code, body := ohPost(t, c, tc.path, tc.key, tc.body)
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("%s: POST %s = %d %s; want %d and %q", tc.name, tc.path, code, body, tc.code, tc.want)
		}
	}

	// The feed, in order, with the agent-server's retries: batch 1 twice
	// (its answer was lost), the final full_state twice (a new subscriber).
	ohMust(t, c, "/conversations", ohSample(t, "POST_conversations_start.json"))
	ohMust(t, c, events, batch1)
	ohMust(t, c, events, batch1)
	ohMust(t, c, events, batch2)
	ohMust(t, c, events, batch3)
	ohMust(t, c, events, batch3)
	ohMust(t, c, events, ohSample(t, "POST_events_error_batch.json"))
	// Command timeouts, an unknown kind and an undecodable event, with the
	// pause batch's events.
	var extra []json.RawMessage
	if err := json.Unmarshal(ohSample(t, "POST_events_pause_batch.json"), &extra); err != nil {
		t.Fatal(err)
	}
	extra = append(extra,
		ohSample(t, "events/observation_terminal_soft_timeout.json"),
		ohSample(t, "events/observation_terminal_hard_timeout.json"),
		json.RawMessage(`{"id": "00005eed-0000-0000-0000-0000000000ff", "kind": "SomeFutureEvent"}`),
		json.RawMessage(`{"id": "00005eed-0000-0000-0000-0000000000fe", "kind": "ConversationStateUpdateEvent", "key": "stats", "value": {"usage_to_metrics": {"agent": {"accumulated_cost": "lots"}}}}`),
	)
	body, _ := json.Marshal(extra)
	code, resp := ohPost(t, c, events, ohKey, body)
	if code != 200 || !strings.Contains(resp, `"invalid":1`) || !strings.Contains(resp, "accumulated_cost") {
		t.Errorf("a batch with one undecodable event = %d %s; want 200, the rest applied, the bad one named", code, resp)
	}
	ohMust(t, c, "/conversations", ohSample(t, "POST_conversations_delete.json"))

	// What the samples say: two calls of the "agent" bucket, whose
	// cumulative totals after the second are in batch 2's stats.
	final := ohLastStats(t, batch2)
	first := ohLastStats(t, batch1)
	u := ohUsage(t, c, ohConv)
	tok := u.GetTokens()
	if u.GetCalls() != 2 || tok.GetInput() != final.Prompt || tok.GetOutput() != final.Completion ||
		tok.GetCacheRead() != final.CacheRead || tok.GetCacheWrite() != final.CacheWrite {
		t.Errorf("GetUsage: calls %d, tokens %v; want 2 calls, input %d output %d cache_read %d cache_write %d",
			u.GetCalls(), tok, final.Prompt, final.Completion, final.CacheRead, final.CacheWrite)
	}
	if !near(u.GetReportedCostUsd(), final.Cost) || !near(u.GetCostUsd(), final.Cost) || u.GetUnpricedCalls() != 0 {
		t.Errorf("GetUsage cost %v (reported %v, unpriced %d), want %v reported by OpenHands",
			u.GetCostUsd(), u.GetReportedCostUsd(), u.GetUnpricedCalls(), final.Cost)
	}
	if !u.GetClosed() || u.GetCloseReason() != pb.CloseReason_CLOSE_REASON_DELETED || u.GetRuntimeFaults() != 2 ||
		u.GetTrigger() != pb.ConversationTrigger_CONVERSATION_TRIGGER_API {
		t.Errorf("GetUsage: closed %v %v, runtime faults %d, trigger %v; want closed deleted, 2 faults, api",
			u.GetClosed(), u.GetCloseReason(), u.GetRuntimeFaults(), u.GetTrigger())
	}

	fams, _ := c.scrape()
	model := labels{"gen_ai_provider_name": "anthropic", "gen_ai_request_model": "claude-sonnet-4-5-20250929", "gen_ai_agent_name": "OpenHands"}
	for typ, want := range map[string]int64{"input": final.Prompt, "output": final.Completion, "cache_read": final.CacheRead, "cache_write": final.CacheWrite} {
		if v, _ := fams.value("agentmeter_llm_tokens_total", with(model, "gen_ai_token_type", typ)); v != float64(want) {
			t.Errorf("agentmeter_llm_tokens_total{%s} = %v, want %d", typ, v, want)
		}
	}
	if v, _ := fams.value("agentmeter_llm_cost_usd_total", with(model, "cost_source", "reported")); !near(v, final.Cost) {
		t.Errorf("agentmeter_llm_cost_usd_total{reported} = %v, want %v", v, final.Cost)
	}
	// Token usage histogram: one observation per call, the first call's
	// prompt and the second's increase.
	if n, sum, _, _ := fams.hist("gen_ai_client_token_usage", with(model, "gen_ai_token_type", "input"), 0); n != 2 || sum != float64(final.Prompt) {
		t.Errorf("gen_ai_client_token_usage{input}: count %d sum %v, want 2 and %d (%d + %d)", n, sum, final.Prompt, first.Prompt, final.Prompt-first.Prompt)
	}
	// Durations: the two response_latencies of full_state, once each.
	if n, sum, _, _ := fams.hist("gen_ai_client_operation_duration_seconds", model, 0); n != 2 || !near(sum, 6.21+3.87) {
		t.Errorf("gen_ai_client_operation_duration_seconds: count %d sum %v, want 2 and %v", n, sum, 6.21+3.87)
	}
	for state, want := range map[string]float64{
		"loading": 1, "awaiting_user_input": 1, "running": 1, "finished": 1, "rate_limited": 1,
		"error": 1, "paused": 1, "stopped": 1,
	} {
		if v, _ := fams.value("agentmeter_agent_status_transitions_total", labels{"agent_state": state, "gen_ai_agent_name": "OpenHands"}); v != want {
			t.Errorf("agentmeter_agent_status_transitions_total{%s} = %v, want %v", state, v, want)
		}
	}
	for kind, want := range map[string]float64{"command_timeout_soft": 1, "command_timeout_hard": 1} {
		if v, _ := fams.value("agentmeter_runtime_faults_total", labels{"kind": kind}); v != want {
			t.Errorf("agentmeter_runtime_faults_total{%s} = %v, want %v", kind, v, want)
		}
	}
	if v, _ := fams.value("agentmeter_conversations_created_total", labels{"trigger": "api"}); v != 1 {
		t.Errorf("agentmeter_conversations_created_total{api} = %v, want 1", v)
	}
	if v, _ := fams.value("agentmeter_conversations_closed_total", labels{"reason": "deleted"}); v != 1 {
		t.Errorf("agentmeter_conversations_closed_total{deleted} = %v, want 1", v)
	}
	for code, want := range map[string]float64{"200": 9, "401": 2, "400": 6, "413": 1} {
		if v, _ := fams.value("agentmeter_openhands_requests_total", labels{"code": code}); v != want {
			t.Errorf("agentmeter_openhands_requests_total{code=%s} = %v, want %v", code, v, want)
		}
	}
	for _, tc := range []struct {
		kind, outcome string
		want          float64
	}{
		{"SomeFutureEvent", "ignored", 0}, // an unknown kind is counted as other
		{"other", "ignored", 1},
		{"ConversationStateUpdateEvent", "invalid", 1},
		{"PauseEvent", "ignored", 1},
		{"ObservationEvent", "applied", 2}, // the timeouts
		{"ConversationErrorEvent", "applied", 1},
		{"ConversationInfo", "applied", 2},
	} {
		if v, _ := fams.value("agentmeter_openhands_events_total", labels{"kind": tc.kind, "outcome": tc.outcome}); v != tc.want {
			t.Errorf("agentmeter_openhands_events_total{kind=%s,outcome=%s} = %v, want %v", tc.kind, tc.outcome, v, tc.want)
		}
	}
	t.Logf("OpenHands replay: GetUsage calls %d, input %d, output %d, cache_read %d, cache_write %d, cost %.6f; durations 2 (%.2f s)",
		u.GetCalls(), tok.GetInput(), tok.GetOutput(), tok.GetCacheRead(), tok.GetCacheWrite(), u.GetCostUsd(), 6.21+3.87)
}

// TestOpenHandsUnpricedAndRecorded replays the events recorded in the SDK's
// own fixtures (a litellm_proxy model OpenHands could not price: cost stays
// 0 while tokens grow), and a bucket of a known model with no cost, which
// the price table prices.
func TestOpenHandsUnpricedAndRecorded(t *testing.T) {
	c := startOpenHandsCollector(t)

	// The recorded events, one batch, then again.
	f, err := os.Open(filepath.Join("..", "openhands", "testdata", "goal_events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []json.RawMessage
	var calls, prompt, completion, cacheRead int64
	var prev ohTokens
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := append([]byte(nil), sc.Bytes()...)
		lines = append(lines, line)
		var e struct {
			Key   string `json:"key"`
			Value json.RawMessage
		}
		_ = json.Unmarshal(line, &e)
		if e.Key != "stats" {
			continue
		}
		var v struct {
			UsageToMetrics map[string]struct {
				Tokens ohTokens `json:"accumulated_token_usage"`
			} `json:"usage_to_metrics"`
		}
		if err := json.Unmarshal(e.Value, &v); err != nil {
			t.Fatal(err)
		}
		cur := v.UsageToMetrics["default"].Tokens
		if cur.Prompt > prev.Prompt || cur.Completion > prev.Completion || cur.CacheRead > prev.CacheRead {
			calls++
		}
		prompt, completion, cacheRead = max(prompt, cur.Prompt), max(completion, cur.Completion), max(cacheRead, cur.CacheRead)
		prev = cur
	}
	body, _ := json.Marshal(lines)
	const recorded = "6a1f0c2e9b8d4e7fa3c5b1d2e4f60718"
	ohMust(t, c, "/events/"+recorded, body)
	ohMust(t, c, "/events/"+recorded, body)
	u := ohUsage(t, c, recorded)
	if u.GetCalls() != calls || u.GetTokens().GetInput() != prompt || u.GetTokens().GetOutput() != completion ||
		u.GetTokens().GetCacheRead() != cacheRead || u.GetReportedCostUsd() != 0 {
		t.Errorf("recorded replay: GetUsage calls %d tokens %v reported cost %v; want %d calls, input %d output %d cache_read %d, nothing reported",
			u.GetCalls(), u.GetTokens(), u.GetReportedCostUsd(), calls, prompt, completion, cacheRead)
	}
	if u.GetUnpricedCalls()+boolInt(u.GetComputedCostUsd() > 0)*u.GetCalls() != calls {
		t.Errorf("recorded replay: %d unpriced calls, computed cost %v: each call must be priced by the table or counted unpriced",
			u.GetUnpricedCalls(), u.GetComputedCostUsd())
	}

	// A known model without a cost: priced from the table
	// (claude-sonnet-4-5: 3 USD per million input tokens, 15 output).
	const priced = "7b2f0c2e9b8d4e7fa3c5b1d2e4f60718"
	unpricedStats := `[{"id": "a0000000-0000-0000-0000-000000000001", "kind": "ConversationStateUpdateEvent", "key": "stats",
	  "value": {"usage_to_metrics": {"agent": {"model_name": "litellm_proxy/anthropic/claude-sonnet-4-5-20250929", "accumulated_cost": 0.0,
	    "accumulated_token_usage": {"prompt_tokens": 1000, "completion_tokens": 100, "cache_read_tokens": 0, "cache_write_tokens": 0, "reasoning_tokens": 0, "context_window": 200000}}}}}]`
	ohMust(t, c, "/events/"+priced, []byte(unpricedStats))
	u = ohUsage(t, c, priced)
	if want := 1000*3.0/1e6 + 100*15.0/1e6; u.GetCalls() != 1 || !near(u.GetComputedCostUsd(), want) || u.GetReportedCostUsd() != 0 {
		t.Errorf("a bucket OpenHands did not price: calls %d, computed %v, reported %v; want 1 call priced %v by the table",
			u.GetCalls(), u.GetComputedCostUsd(), u.GetReportedCostUsd(), want)
	}
	t.Logf("recorded replay: %d calls, input %d, output %d, cache_read %d, %d unpriced; priced bucket %.4f USD",
		calls, prompt, completion, cacheRead, u.GetUnpricedCalls(), u.GetComputedCostUsd())
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// TestOpenHandsStateSurvivesRestart: with storage.directory set, the
// feed's highest values seen survive a restart of the sidecar, so the
// snapshots after it count only their increase; GetUsage and /metrics hold
// each call once across the two processes.
func TestOpenHandsStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	c1 := startOpenHandsCollectorAt(t, "", "", dir)
	events := "/events/" + ohConv
	ohMust(t, c1, "/conversations", ohSample(t, "POST_conversations_start.json"))
	ohMust(t, c1, events, ohSample(t, "POST_events_batch1.json"))
	c1.stop()

	c2 := startOpenHandsCollectorAt(t, c1.grpcAddr, c1.httpAddr, dir)
	ohMust(t, c2, events, ohSample(t, "POST_events_batch2.json"))
	ohMust(t, c2, events, ohSample(t, "POST_events_batch3_timer_flush.json"))
	final := ohLastStats(t, ohSample(t, "POST_events_batch2.json"))
	u := ohUsage(t, c2, ohConv)
	if u.GetCalls() != 2 || u.GetTokens().GetInput() != final.Prompt || u.GetTokens().GetOutput() != final.Completion || !near(u.GetCostUsd(), final.Cost) {
		t.Errorf("after the restart: calls %d input %d output %d cost %v; want 2, %d, %d, %v",
			u.GetCalls(), u.GetTokens().GetInput(), u.GetTokens().GetOutput(), u.GetCostUsd(), final.Prompt, final.Completion, final.Cost)
	}
	fams, _ := c2.scrape()
	if v, _ := fams.value("agentmeter_llm_tokens_total", labels{"gen_ai_token_type": "input", "gen_ai_agent_name": "OpenHands"}); v != float64(final.Prompt) {
		t.Errorf("agentmeter_llm_tokens_total{input} after the restart = %v, want %d", v, final.Prompt)
	}
	if v, _ := fams.value("agentmeter_conversations_created_total", labels{"trigger": "api"}); v != 1 {
		t.Errorf("agentmeter_conversations_created_total = %v, want 1", v)
	}
}

// TestOpenHandsStateFileImported: the state file an earlier version kept
// in storage.directory (openhands-state.jsonl, one JSON record a line) is
// imported into the durable store at start and removed; the highest values
// it held are not counted again, before or after the next restart.
func TestOpenHandsStateFileImported(t *testing.T) {
	dir := t.TempDir()
	first := ohLastStats(t, ohSample(t, "POST_events_batch1.json"))
	legacy := filepath.Join(dir, "openhands-state.jsonl")
	lines := fmt.Sprintf(`{"c":%q,"created":true,"full":true}`+"\n"+`{"c":%q,"u":"agent","p":%d,"o":%d,"cr":%d,"cw":%d,"k":%v}`+"\n",
		ohConv, ohConv, first.Prompt, first.Completion, first.CacheRead, first.CacheWrite, first.Cost)
	if err := os.WriteFile(legacy, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	c1 := startOpenHandsCollectorAt(t, "", "", dir)
	if _, err := os.Stat(legacy); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s after the start: %v, want it removed", legacy, err)
	}
	if !strings.Contains(c1.stderr.String(), "openhands state file imported") {
		t.Errorf("the import is not logged:\n%s", c1.stderr.String())
	}
	events := "/events/" + ohConv
	final := ohLastStats(t, ohSample(t, "POST_events_batch2.json"))
	check := func(c *collector, when string) {
		t.Helper()
		u := ohUsage(t, c, ohConv)
		if u.GetCalls() != 1 || u.GetTokens().GetInput() != final.Prompt-first.Prompt ||
			u.GetTokens().GetOutput() != final.Completion-first.Completion || !near(u.GetCostUsd(), final.Cost-first.Cost) {
			t.Errorf("%s: calls %d input %d output %d cost %v; want only batch 2's call: 1, %d, %d, %v", when,
				u.GetCalls(), u.GetTokens().GetInput(), u.GetTokens().GetOutput(), u.GetCostUsd(),
				final.Prompt-first.Prompt, final.Completion-first.Completion, final.Cost-first.Cost)
		}
	}
	// Batch 1 again (what the file held) adds nothing; batch 2 its increase.
	ohMust(t, c1, events, ohSample(t, "POST_events_batch1.json"))
	ohMust(t, c1, events, ohSample(t, "POST_events_batch2.json"))
	check(c1, "after the import")
	c1.stop()

	c2 := startOpenHandsCollectorAt(t, c1.grpcAddr, c1.httpAddr, dir)
	if strings.Contains(c2.stderr.String(), "openhands state file imported") {
		t.Error("imported again at the next start")
	}
	ohMust(t, c2, events, ohSample(t, "POST_events_batch1.json"))
	ohMust(t, c2, events, ohSample(t, "POST_events_batch2.json"))
	ohMust(t, c2, "/conversations", ohSample(t, "POST_conversations_start.json"))
	check(c2, "after a restart")
	fams, _ := c2.scrape()
	if v, _ := fams.value("agentmeter_conversations_created_total", labels{"trigger": "api"}); v != 0 {
		t.Errorf("agentmeter_conversations_created_total = %v, want 0 (created before the import)", v)
	}
}
