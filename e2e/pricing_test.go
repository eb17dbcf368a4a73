package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

func priceTable(version string, input, output float64) string {
	return fmt.Sprintf(`version: %q
models:
  - provider: testco
    name: test-model
    input: %g
    output: %g
`, version, input, output)
}

// writeAtomically replaces path the way editors and ConfigMaps do.
func writeAtomically(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestPricingReload: calls without cost_usd are priced from pricing.table;
// SIGHUP with a bad file keeps the old table and counts the failure; a good
// new file is picked up; a model with no price is counted as unpriced.
func TestPricingReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "prices.yaml")
	writeAtomically(t, path, priceTable("v1", 1, 2)) // USD per million tokens
	c := startCollector(t, options{PricingTable: path})
	defer c.stop()

	priced := func(id string) *pb.Event {
		ev := simpleCall(id, "test-model", 1000, 500)
		ev.GetLlmCall().Provider, ev.GetLlmCall().CostUsd = "testco", nil
		return ev
	}
	computed := labels{"cost_source": "computed", "gen_ai_request_model": "test-model"}
	costIs := func(want float64) {
		eventually(t, 10*time.Second, fmt.Sprintf("computed cost %v", want), func() (bool, string) {
			got, _ := c.scrapeValue("agentmeter_llm_cost_usd_total", computed)
			return near(got, want), fmt.Sprintf("got %v", got)
		})
	}
	versionIs := func(v string) {
		eventually(t, 10*time.Second, "price table version "+v, func() (bool, string) {
			got, n := c.scrapeValue("agentmeter_pricing_table_info", labels{"version": v})
			return got == 1 && n == 1, fmt.Sprintf("value %v in %d series", got, n)
		})
	}

	resp := c.record(priced("p1"))
	if resp.Accepted != 1 {
		t.Fatalf("record: %v", resp)
	}
	costIs(1000*1e-6 + 500*2e-6) // 0.002
	versionIs("v1")

	// A bad table: negative price. SIGHUP; the old table stays, the failure counts.
	writeAtomically(t, path, priceTable("v-bad", -1, 2))
	if err := c.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "a failed reload counted", func() (bool, string) {
		got, _ := c.scrapeValue("agentmeter_pricing_reloads_total", labels{"outcome": "failure"})
		return got >= 1, fmt.Sprintf("failures %v", got)
	})
	versionIs("v1")
	c.record(priced("p2"))
	costIs(2 * 0.002)

	// A good new table is picked up (file watch or SIGHUP, whichever first).
	writeAtomically(t, path, priceTable("v2", 2, 4))
	if err := c.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	versionIs("v2")
	c.record(priced("p3"))
	costIs(2*0.002 + 0.004)

	// No cost and no price: unpriced, never priced at 0.
	unknown := simpleCall("u1", "mystery-model", 10, 10)
	unknown.GetLlmCall().CostUsd = nil
	c.record(unknown)
	eventually(t, 10*time.Second, "unpriced call counted", func() (bool, string) {
		got, _ := c.scrapeValue("agentmeter_llm_unpriced_calls_total", labels{"gen_ai_request_model": "mystery-model"})
		return got == 1, fmt.Sprintf("got %v", got)
	})
	// The reported cost of a priced model wins over the table.
	reported := priced("r1")
	reported.GetLlmCall().CostUsd = proto.Float64(0.5)
	c.record(reported)
	eventually(t, 10*time.Second, "reported cost", func() (bool, string) {
		got, _ := c.scrapeValue("agentmeter_llm_cost_usd_total", labels{"cost_source": "reported", "gen_ai_request_model": "test-model"})
		return near(got, 0.5), fmt.Sprintf("got %v", got)
	})
	costIs(2*0.002 + 0.004)
}

// scrapeValue scrapes and sums the series of name matching sel.
func (c *collector) scrapeValue(name string, sel labels) (float64, int) {
	fams, _, err := c.tryScrape()
	if err != nil {
		return 0, 0
	}
	return fams.value(name, sel)
}
