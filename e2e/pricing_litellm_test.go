package e2e

import (
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// liteLLMTable is a LiteLLM model_prices_and_context_window.json with one
// chat model priced per token, one tier above 1000 prompt tokens, and an
// entry of another mode.
func liteLLMTable(input, output float64) string {
	return fmt.Sprintf(`{
    "sample_spec": {"litellm_provider": "one of ...", "mode": "one of ..."},
    "e2e-litellm-model": {
        "litellm_provider": "openai",
        "mode": "chat",
        "input_cost_per_token": %g,
        "output_cost_per_token": %g,
        "input_cost_per_token_above_1k_tokens": %g,
        "output_cost_per_token_above_1k_tokens": %g
    },
    "e2e-embedding": {"litellm_provider": "openai", "mode": "embedding", "input_cost_per_token": 1e-07}
}
`, input, output, 2*input, 2*output)
}

// TestPricingReloadLiteLLM: pricing.table takes LiteLLM's file as it is;
// a truncated one, sent with SIGHUP, keeps the old table and counts the
// failure; a new one is picked up. pricing.overrides layers a price with
// effective_from: a call is priced at the price in force at its event time.
func TestPricingReloadLiteLLM(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model_prices_and_context_window.json")
	writeAtomically(t, path, liteLLMTable(1e-06, 2e-06))
	overrides := filepath.Join(dir, "overrides.yaml")
	writeAtomically(t, overrides, `
models:
  - provider: openai
    name: e2e-negotiated
    input: 1
    output: 1
  - provider: openai
    name: e2e-negotiated
    effective_from: 2026-01-01T00:00:00Z
    input: 0.5
    output: 0.5
`)
	c := startCollector(t, options{PricingTable: path, PricingOverrides: overrides})
	defer c.stop()

	call := func(id, model string, prompt, completion int64, at time.Time) *pb.Event {
		ev := simpleCall(id, model, prompt, completion)
		ev.GetLlmCall().CostUsd = nil
		ev.Time = timestamppb.New(at)
		return ev
	}
	now := time.Now()
	costIs := func(model string, want float64) {
		t.Helper()
		sel := labels{"cost_source": "computed", "gen_ai_request_model": model}
		eventually(t, 10*time.Second, fmt.Sprintf("computed cost of %s %v", model, want), func() (bool, string) {
			got, _ := c.scrapeValue("agentmeter_llm_cost_usd_total", sel)
			return near(got, want), fmt.Sprintf("got %v", got)
		})
	}
	infoIs := func(sel labels) {
		t.Helper()
		eventually(t, 10*time.Second, fmt.Sprintf("agentmeter_pricing_table_info%v", sel), func() (bool, string) {
			got, n := c.scrapeValue("agentmeter_pricing_table_info", sel)
			return got == 1 && n == 1, fmt.Sprintf("value %v in %d series", got, n)
		})
	}

	// 1000 prompt tokens: at the tier's threshold, so the base price.
	if r := c.record(call("l1", "e2e-litellm-model", 1000, 500, now)); r.Accepted != 1 {
		t.Fatalf("record: %v", r)
	}
	costIs("e2e-litellm-model", 1000*1e-6+500*2e-6)
	// 1001: every token at the tier.
	c.record(call("l2", "e2e-litellm-model", 1001, 500, now))
	costIs("e2e-litellm-model", 0.002+1001*2e-6+500*4e-6)
	infoIs(labels{"format": "litellm", "source": path})
	for state, want := range map[string]float64{"priced": 1, "skipped": 1, "unusable": 0, "conflicting": 0} {
		eventually(t, 10*time.Second, "agentmeter_pricing_table_entries "+state, func() (bool, string) {
			got, n := c.scrapeValue("agentmeter_pricing_table_entries", labels{"state": state})
			return got == want && n == 1, fmt.Sprintf("value %v in %d series", got, n)
		})
	}

	// Effective dates: a call of 2025 is priced at the first price, one of
	// 2026 at the second, whenever they arrive.
	c.record(call("n1", "e2e-negotiated", 1000, 1000, time.Date(2025, 12, 31, 23, 59, 0, 0, time.UTC)))
	c.record(call("n2", "e2e-negotiated", 1000, 1000, time.Date(2026, 1, 1, 0, 1, 0, 0, time.UTC)))
	costIs("e2e-negotiated", 2000*1e-6+2000*0.5e-6)

	// A truncated LiteLLM file: the old table stays, the failure counts.
	before, _ := c.scrapeValue("agentmeter_pricing_reloads_total", labels{"outcome": "failure"})
	writeAtomically(t, path, liteLLMTable(5e-06, 5e-06)[:200])
	if err := c.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "a failed reload counted", func() (bool, string) {
		got, _ := c.scrapeValue("agentmeter_pricing_reloads_total", labels{"outcome": "failure"})
		return got > before, fmt.Sprintf("failures %v", got)
	})
	c.record(call("l3", "e2e-litellm-model", 10, 10, now))
	costIs("e2e-litellm-model", 0.002+1001*2e-6+500*4e-6+10*1e-6+10*2e-6)

	// A good new file is picked up.
	writeAtomically(t, path, liteLLMTable(3e-06, 3e-06))
	if err := c.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the new table in service", func() (bool, string) {
		ok, _ := c.scrapeValue("agentmeter_pricing_reloads_total", labels{"outcome": "success"})
		return ok >= 1, fmt.Sprintf("successes %v", ok)
	})
	c.record(call("l4", "e2e-litellm-model", 100, 100, now))
	costIs("e2e-litellm-model", 0.002+1001*2e-6+500*4e-6+10*1e-6+10*2e-6+200*3e-6)

	// The embedding entry is not a chat model: a call to it is unpriced.
	c.record(call("e1", "e2e-embedding", 10, 0, now))
	eventually(t, 10*time.Second, "unpriced embedding call", func() (bool, string) {
		got, _ := c.scrapeValue("agentmeter_llm_unpriced_calls_total", labels{"gen_ai_request_model": "e2e-embedding"})
		return got == 1, fmt.Sprintf("got %v", got)
	})
}
