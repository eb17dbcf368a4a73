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

	"github.com/agentmeter/agentmeter/internal/testtool"
)

// TestPrometheusScrape runs a real Prometheus server against the collector
// and checks PromQL results, and runs promtool check metrics on the
// exposition.
func TestPrometheusScrape(t *testing.T) {
	t.Parallel()
	promtool := testtool.Need(t, "promtool", "Debian package prometheus")
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
	query := startPrometheus(t, job, c.httpAddr, "/metrics")

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

// startPrometheus starts a Prometheus server scraping target every
// second, waits until it is ready, and returns an instant-query function.
func startPrometheus(t *testing.T, job, target, metricsPath string) func(q string) ([]float64, error) {
	t.Helper()
	return startPrometheusScraping(t, job, target, metricsPath, "")
}

// startPrometheusScraping is startPrometheus with more keys for the scrape
// config (scheme, tls_config, basic_auth), each line indented by four
// spaces.
func startPrometheusScraping(t *testing.T, job, target, metricsPath, extra string) func(q string) ([]float64, error) {
	t.Helper()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: %s
    scrape_interval: 1s
    scrape_timeout: 1s
    metrics_path: %s
%s    static_configs:
      - targets: [%q]
`, job, metricsPath, extra, target)
	addr := runPrometheus(t, cfg)
	return func(q string) ([]float64, error) {
		samples, err := promQuery(addr, q)
		if err != nil {
			return nil, err
		}
		vs := make([]float64, len(samples))
		for i, s := range samples {
			vs[i] = s.Value
		}
		return vs, nil
	}
}

// promSample is one series of an instant query's answer.
type promSample struct {
	Metric map[string]string
	Value  float64
}

// promQuery runs an instant query on the Prometheus at addr.
func promQuery(addr, q string) ([]promSample, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var res struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &res); err != nil {
		return nil, fmt.Errorf("decode %s: %w", body, err)
	}
	if res.Status != "success" || res.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %s: status %s, type %s, error %s", q, res.Status, res.Data.ResultType, res.Error)
	}
	var out []promSample
	for _, r := range res.Data.Result {
		str, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return nil, fmt.Errorf("query %s: value %v: %w", q, r.Value, err)
		}
		out = append(out, promSample{Metric: r.Metric, Value: v})
	}
	return out, nil
}

// panelQuery is one target of a dashboard panel.
type panelQuery struct {
	dashboard, panel, expr, legend string
}

// dashboardQueries decodes a dashboard JSON file with the Grafana Foundation
// SDK's types and returns every panel target and the template variables'
// queries.
// runPrometheus starts a Prometheus server on the config text cfg (and
// extra command-line flags), waits
// until it is ready and returns its address; it stops with the test.
func runPrometheus(t *testing.T, cfg string, flags ...string) string {
	t.Helper()
	promBin := testtool.Need(t, "prometheus", "Debian package prometheus")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	prom := exec.Command(promBin, append([]string{"--config.file", cfgPath, "--storage.tsdb.path", filepath.Join(dir, "data"),
		"--web.listen-address", addr, "--log.level", "warn"}, flags...)...)
	out := &syncBuffer{}
	prom.Stdout, prom.Stderr = out, out
	if err := prom.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = prom.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = prom.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = prom.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("prometheus output:\n%s", out.String())
		}
	})
	client := &http.Client{Timeout: 5 * time.Second}
	eventually(t, 60*time.Second, "prometheus ready", func() (bool, string) {
		select {
		case <-done:
			t.Fatalf("prometheus exited before it was ready:\n%s", out.String())
		default:
		}
		resp, err := client.Get("http://" + addr + "/-/ready")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	return addr
}
