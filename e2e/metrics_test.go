package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

const floatTolerance = 1e-9

func near(a, b float64) bool { return math.Abs(a-b) <= floatTolerance }

// TestMetricsExactTotals pushes the fixture through Record and RecordStream
// and checks every catalogue series it touches against totals worked out by
// hand.
func TestMetricsExactTotals(t *testing.T) {
	t.Parallel()
	c := startCollector(t, options{Env: []string{
		"OTEL_SERVICE_NAME=agentmeter-e2e",
		"OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=e2e,team=agents",
	}})
	unary, batches := fixture(time.Now())

	resp := c.record(unary...)
	checkResponse(t, "Record(unary batch)", resp, fixtureResponses[0])

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := c.ingest.RecordStream(ctx)
	if err != nil {
		t.Fatalf("RecordStream: %v", err)
	}
	for i, b := range batches {
		if err := stream.Send(&pb.RecordRequest{Events: b}); err != nil {
			t.Fatalf("RecordStream.Send(batch %d): %v", i, err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatalf("RecordStream.CloseSend: %v", err)
	}
	var got []*pb.RecordResponse
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("RecordStream.Recv after %d responses: %v", len(got), err)
		}
		got = append(got, r)
	}
	if len(got) != len(batches) {
		t.Fatalf("RecordStream answered %d responses to %d requests", len(got), len(batches))
	}
	for i, r := range got {
		checkResponse(t, fmt.Sprintf("RecordStream response %d", i), r, fixtureResponses[i+1])
	}

	fams, _ := c.scrape()
	checkFixtureMetrics(t, fams)

	// Receiver self-metrics: 9 calls and 8 status events accepted, the
	// retried L1 a duplicate, the call without a model rejected.
	for _, tc := range []struct {
		sel  labels
		want float64
	}{
		{labels{"event_type": "llm_call", "outcome": "accepted"}, 9},
		{labels{"event_type": "llm_call", "outcome": "duplicate"}, 1},
		{labels{"event_type": "llm_call", "outcome": "rejected"}, 1},
		{labels{"event_type": "agent_status", "outcome": "accepted"}, 8},
		{labels{"event_type": "agent_status", "outcome": "duplicate"}, 0},
		{labels{"event_type": "agent_status", "outcome": "rejected"}, 0},
		{labels{"outcome": "accepted"}, 17},
	} {
		if got, _ := fams.value("agentmeter_receiver_events_total", tc.sel); got != tc.want {
			t.Errorf("agentmeter_receiver_events_total%v = %v, want %v", tc.sel, got, tc.want)
		}
	}

	// Resource attributes from the environment.
	sel := labels{"service_name": "agentmeter-e2e", "deployment_environment_name": "e2e", "team": "agents"}
	if got, n := fams.value("target_info", sel); n != 1 || got != 1 {
		t.Errorf("target_info%v: %d series, value %v; want 1 series of value 1; target_info is %v",
			sel, n, got, fams["target_info"].GetMetric())
	}

	c.stop()
}

// checkResponse compares a RecordResponse with want, ignoring the free-text
// reasons (but requiring one for every rejection).
func checkResponse(t *testing.T, what string, got, want *pb.RecordResponse) {
	t.Helper()
	for _, r := range got.GetRejected() {
		if r.GetReason() == "" {
			t.Errorf("%s: rejection %v has no reason", what, r)
		}
	}
	got = proto.Clone(got).(*pb.RecordResponse)
	for _, r := range got.Rejected {
		r.Reason = ""
	}
	if !proto.Equal(got, want) {
		t.Errorf("%s: got response {%v}, want {%v} (reasons ignored)", what, prototext.Format(got), prototext.Format(want))
	}
}

// checkFixtureMetrics checks the series of the fixture on a scrape.
func checkFixtureMetrics(t *testing.T, fams families) {
	t.Helper()
	// Tokens by type: exact integers.
	for typ, want := range fixtureTokens {
		sel := labels{"gen_ai_token_type": typ}
		if got, n := fams.value("agentmeter_llm_tokens_total", sel); got != want || n == 0 {
			t.Errorf("sum agentmeter_llm_tokens_total%v = %v over %d series, want %v", sel, got, n, want)
		}
	}
	// One series's token types, to check the labels carry the attributes.
	gpt4oCodeAct := labels{
		"gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai",
		"gen_ai_request_model": "gpt-4o", "gen_ai_response_model": "gpt-4o-2024-08-06",
		"gen_ai_agent_name": codeAct,
	}
	for typ, want := range map[string]float64{"input": 1600, "output": 350, "cache_read": 500, "cache_write": 100, "reasoning": 0} {
		sel := with(gpt4oCodeAct, "gen_ai_token_type", typ)
		if got, n := fams.value("agentmeter_llm_tokens_total", sel); got != want || n != 1 {
			t.Errorf("agentmeter_llm_tokens_total%v = %v over %d series, want %v in 1 series", sel, got, n, want)
		}
	}

	// Cost: the reported costs, to 1e-9 USD. The calls without a reported
	// cost use models no price table knows, so they add nothing.
	if got, n := fams.value("agentmeter_llm_cost_usd_total", labels{}); !near(got, fixtureCost) || n == 0 {
		t.Errorf("sum agentmeter_llm_cost_usd_total = %.12f over %d series, want %.12f", got, n, fixtureCost)
	}
	sel := labels{"gen_ai_request_model": "claude-opus-4-1", "gen_ai_agent_name": browsing}
	if got, _ := fams.value("agentmeter_llm_cost_usd_total", sel); !near(got, 0.25) {
		t.Errorf("agentmeter_llm_cost_usd_total%v = %.12f, want 0.25", sel, got)
	}
	if got, _ := fams.value("agentmeter_llm_cost_usd_total", labels{"gen_ai_request_model": unpricedModel}); got != 0 {
		t.Errorf("agentmeter_llm_cost_usd_total of %s (no cost reported, no price) = %v, want 0 or absent", unpricedModel, got)
	}

	// Token usage histogram of the successful calls (failed calls use their
	// own model and are left out, since they report no tokens).
	for _, tc := range []struct {
		typ       string
		wantSum   float64
		le        float64
		wantInLE  uint64
		wantCount uint64
	}{
		// input: 300, 400, 600, 1000, 2000, 5000, 12000; <=1024 bucket holds 4.
		{"input", fixtureTokens["input"], 1024, 4, uint64(fixtureCalls)},
		// output: 50, 100, 150, 200, 800, 900, 3000; <=256 bucket holds 4.
		{"output", fixtureTokens["output"], 256, 4, uint64(fixtureCalls)},
	} {
		sel := labels{"gen_ai_token_type": tc.typ}
		count, sum, bucket, _ := fams.hist("gen_ai_client_token_usage", sel, tc.le)
		fcount, fsum, _, _ := fams.hist("gen_ai_client_token_usage", with(sel, "gen_ai_request_model", failingModel), tc.le)
		count, sum = count-fcount, sum-fsum
		if count != tc.wantCount || sum != tc.wantSum {
			t.Errorf("gen_ai_client_token_usage%v of successful calls: count %d sum %v, want count %d sum %v",
				sel, count, sum, tc.wantCount, tc.wantSum)
		}
		if bucket != tc.wantInLE {
			t.Errorf("gen_ai_client_token_usage_bucket%v le=%v = %d, want %d", sel, tc.le, bucket, tc.wantInLE)
		}
		if fsum != 0 {
			t.Errorf("gen_ai_client_token_usage%v of the failed calls: sum %v, want 0", sel, fsum)
		}
	}

	// Duration: successes carry no error_type, each failure its own.
	success := labels{"error_type": ""}
	if count, sum, _, _ := fams.hist("gen_ai_client_operation_duration_seconds", success, 0); count != uint64(fixtureCalls) || !near(sum, fixtureLatencySum) {
		t.Errorf("gen_ai_client_operation_duration_seconds without error_type: count %d sum %v, want %d and %v",
			count, sum, fixtureCalls, fixtureLatencySum)
	}
	for _, tc := range []struct {
		errType, agent string
		latency        float64
	}{{"RateLimitError", codeAct, 0.05}, {"timeout", browsing, 30.0}} {
		sel := labels{"error_type": tc.errType, "gen_ai_request_model": failingModel, "gen_ai_agent_name": tc.agent, "gen_ai_provider_name": "openai"}
		count, sum, _, n := fams.hist("gen_ai_client_operation_duration_seconds", sel, 0)
		if n != 1 || count != 1 || !near(sum, tc.latency) {
			t.Errorf("gen_ai_client_operation_duration_seconds%v: %d series, count %d sum %v; want 1 series, count 1 sum %v",
				sel, n, count, sum, tc.latency)
		}
	}
	if count, _, _, _ := fams.hist("gen_ai_client_operation_duration_seconds", labels{}, 0); count != uint64(fixtureCalls)+2 {
		t.Errorf("gen_ai_client_operation_duration_seconds: total count %d, want %d (7 successes, 2 failures)", count, fixtureCalls+2)
	}
	// gpt-4o by CodeActAgent: 1.5 s and 1.1 s, so le=1.28 holds 1 and le=2.56 both.
	for le, want := range map[float64]uint64{0.64: 0, 1.28: 1, 2.56: 2, 81.92: 2} {
		count, sum, bucket, n := fams.hist("gen_ai_client_operation_duration_seconds", with(gpt4oCodeAct, "error_type", ""), le)
		if n != 1 || count != 2 || !near(sum, 2.6) || bucket != want {
			t.Errorf("gen_ai_client_operation_duration_seconds%v: %d series, count %d, sum %v, bucket le=%v %d; want 1 series, 2, 2.6, %d",
				gpt4oCodeAct, n, count, sum, le, bucket, want)
		}
	}

	if count, sum, _, _ := fams.hist("gen_ai_client_operation_time_to_first_chunk_seconds", labels{}, 0); count != uint64(fixtureTTFTCount) || !near(sum, fixtureTTFTSum) {
		t.Errorf("gen_ai_client_operation_time_to_first_chunk_seconds: count %d sum %v, want %d and %v", count, sum, fixtureTTFTCount, fixtureTTFTSum)
	}
	if count, sum, _, _ := fams.hist("agentmeter_llm_context_utilization_ratio", labels{}, 0); count != uint64(fixtureCtxCount) || !near(sum, fixtureCtxSum) {
		t.Errorf("agentmeter_llm_context_utilization_ratio: count %d sum %v, want %d and %v", count, sum, fixtureCtxCount, fixtureCtxSum)
	}

	// Status transitions and the conversations gauge.
	var transitions float64
	for k, want := range fixtureTransitions {
		sel := labels{"gen_ai_agent_name": k[0], "agent_state": k[1]}
		got, _ := fams.value("agentmeter_agent_status_transitions_total", sel)
		if got != want {
			t.Errorf("agentmeter_agent_status_transitions_total%v = %v, want %v", sel, got, want)
		}
		transitions += want
	}
	if got, _ := fams.value("agentmeter_agent_status_transitions_total", labels{}); got != transitions {
		t.Errorf("sum agentmeter_agent_status_transitions_total = %v, want %v (the repeated running state is no transition)", got, transitions)
	}
	for k, want := range fixtureConversations {
		sel := labels{"gen_ai_agent_name": k[0], "agent_state": k[1]}
		if got, _ := fams.value("agentmeter_agent_conversations", sel); got != want {
			t.Errorf("agentmeter_agent_conversations%v = %v, want %v", sel, got, want)
		}
	}
	if got, _ := fams.value("agentmeter_agent_conversations", labels{}); got != 2 {
		t.Errorf("sum agentmeter_agent_conversations = %v, want 2", got)
	}
}

// with returns a copy of l with k set to v.
func with(l labels, k, v string) labels {
	out := make(labels, len(l)+1)
	for lk, lv := range l {
		out[lk] = lv
	}
	out[k] = v
	return out
}
