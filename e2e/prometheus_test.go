package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// needTool returns the path of a tool on PATH. When it is missing the test
// skips, except in CI (CI=true), where a skipped end-to-end test would hide
// a broken setup: there it fails.
func needTool(t *testing.T, name, install string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	msg := fmt.Sprintf("%s not found on PATH (%s); install it or run ./scripts/test.sh, which does", name, install)
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true: %s", msg)
	}
	t.Skip(msg)
	return ""
}

// TestPrometheusScrape runs a real Prometheus server against the collector
// and checks PromQL results, and runs promtool check metrics on the
// exposition.
func TestPrometheusScrape(t *testing.T) {
	t.Parallel()
	promBin := needTool(t, "prometheus", "Debian package prometheus")
	promtool := needTool(t, "promtool", "Debian package prometheus")
	c := startCollector(t, options{})
	unary, batches := fixture(time.Now())
	c.record(unary...)
	for _, b := range batches {
		c.record(b...)
	}

	// promtool lints the exposition exactly as scraped.
	_, text := c.scrape()
	check := exec.Command(promtool, "check", "metrics")
	check.Stdin = strings.NewReader(text)
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	} else if len(out) > 0 {
		t.Logf("promtool check metrics: %s", out)
	}

	const job = "agentmeter-e2e"
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: %s
    scrape_interval: 1s
    scrape_timeout: 1s
    metrics_path: /metrics
    static_configs:
      - targets: [%q]
`, job, c.httpAddr)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	promAddr := freePort(t)
	prom := exec.Command(promBin,
		"--config.file", cfgPath,
		"--storage.tsdb.path", filepath.Join(dir, "data"),
		"--web.listen-address", promAddr,
		"--log.level", "warn",
	)
	promOut := &syncBuffer{}
	prom.Stdout, prom.Stderr = promOut, promOut
	if err := prom.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	promDone := make(chan struct{})
	go func() { _ = prom.Wait(); close(promDone) }()
	t.Cleanup(func() {
		_ = prom.Process.Signal(syscall.SIGTERM)
		select {
		case <-promDone:
		case <-time.After(10 * time.Second):
			_ = prom.Process.Kill()
			<-promDone
		}
		if t.Failed() {
			t.Logf("prometheus output:\n%s", promOut.String())
		}
	})

	client := &http.Client{Timeout: 5 * time.Second}
	eventually(t, 60*time.Second, "prometheus ready", func() (bool, string) {
		select {
		case <-promDone:
			t.Fatalf("prometheus exited before it was ready:\n%s", promOut.String())
		default:
		}
		resp, err := client.Get("http://" + promAddr + "/-/ready")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})

	query := func(q string) ([]float64, error) {
		resp, err := client.Get("http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var r struct {
			Status string `json:"status"`
			Error  string `json:"error"`
			Data   struct {
				ResultType string `json:"resultType"`
				Result     []struct {
					Value [2]any `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			return nil, fmt.Errorf("decode %s: %w", body, err)
		}
		if r.Status != "success" || r.Data.ResultType != "vector" {
			return nil, fmt.Errorf("query %s: status %s, type %s, error %s", q, r.Status, r.Data.ResultType, r.Error)
		}
		var out []float64
		for _, s := range r.Data.Result {
			str, _ := s.Value[1].(string)
			v, err := strconv.ParseFloat(str, 64)
			if err != nil {
				return nil, fmt.Errorf("query %s: value %v: %w", q, s.Value, err)
			}
			out = append(out, v)
		}
		return out, nil
	}
	// awaitScalar polls q until it returns one sample satisfying ok.
	awaitScalar := func(q, want string, ok func(float64) bool) {
		t.Helper()
		eventually(t, 30*time.Second, fmt.Sprintf("%s %s", q, want), func() (bool, string) {
			vs, err := query(q)
			if err != nil {
				return false, err.Error()
			}
			if len(vs) != 1 {
				return false, fmt.Sprintf("%d samples: %v", len(vs), vs)
			}
			return ok(vs[0]), fmt.Sprint(vs[0])
		})
	}
	equals := func(want float64) func(float64) bool { return func(v float64) bool { return near(v, want) } }

	awaitScalar(`sum(agentmeter_llm_tokens_total{gen_ai_token_type="input"})`, "= 21300", equals(fixtureTokens["input"]))
	awaitScalar(fmt.Sprintf(`up{job=%q}`, job), "= 1", equals(1))
	awaitScalar(`sum(agentmeter_llm_tokens_total{gen_ai_token_type="reasoning"})`, "= 1600", equals(fixtureTokens["reasoning"]))
	awaitScalar(`sum(agentmeter_llm_cost_usd_total)`, fmt.Sprintf("= %v", fixtureCost), equals(fixtureCost))
	awaitScalar(`sum(agentmeter_agent_status_transitions_total{agent_state="running"})`, "= 3", equals(3))
	awaitScalar(`sum(gen_ai_client_operation_duration_seconds_count{error_type!=""})`, "= 2", equals(2))
	// The median of the nine durations (0.05 ... 30) is 1.5 s, in the
	// (1.28, 2.56] bucket, where Prometheus interpolates.
	awaitScalar(`histogram_quantile(0.5, sum by (le) (gen_ai_client_operation_duration_seconds_bucket))`,
		"in (1.28, 2.56]", func(v float64) bool { return !math.IsNaN(v) && v > 1.28 && v <= 2.56 })

	c.stop()
}
