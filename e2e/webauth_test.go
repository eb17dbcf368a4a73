package e2e

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/agentmeter/agentmeter/internal/testcert"
)

// TestMetricsTLSBasicAuth serves /metrics over TLS with basic auth from a
// Prometheus web config file, scraped by a real Prometheus that has the CA
// and the password. A wrong password, none, and plain HTTP are refused, and
// the probes answer over the same TLS and auth.
func TestMetricsTLSBasicAuth(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testcert.NewCA(t, "agentmeter e2e web ca")
	ca.Issue(t, testcert.Options{CommonName: "agentmeter"}).Write(t, dir, "server")
	caFile := filepath.Join(dir, "ca.crt")
	testcert.WriteFile(t, caFile, ca.PEM)
	hash, err := bcrypt.GenerateFromPassword([]byte("scrape-s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	webFile := filepath.Join(dir, "web-config.yml")
	testcert.WriteFile(t, webFile, fmt.Appendf(nil,
		"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  prometheus: %s\n", hash))

	c := startCollector(t, options{Web: &webOptions{
		ConfigFile: webFile, RootCAs: testcert.Pool(ca), User: "prometheus", Pass: "scrape-s3cret",
	}})
	unary, batches := fixture(time.Now())
	c.record(unary...)
	for _, b := range batches {
		c.record(b...)
	}

	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: testcert.Pool(ca), MinVersion: tls.VersionTLS12},
	}}
	status := func(url, user, pass string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	base := "https://" + c.httpAddr
	for _, tc := range []struct {
		name, url, user, pass string
		want                  int
	}{
		{"wrong password", base + "/metrics", "prometheus", "guess", http.StatusUnauthorized},
		{"no credentials", base + "/metrics", "", "", http.StatusUnauthorized},
		{"plain http on the TLS port", "http://" + c.httpAddr + "/metrics", "prometheus", "scrape-s3cret", http.StatusBadRequest},
		{"readyz with the password", base + "/readyz", "prometheus", "scrape-s3cret", http.StatusOK},
		{"healthz without credentials", base + "/healthz", "", "", http.StatusUnauthorized},
	} {
		if got := status(tc.url, tc.user, tc.pass); got != tc.want {
			t.Errorf("%s: GET %s = %d, want %d", tc.name, tc.url, got, tc.want)
		}
	}

	extra := fmt.Sprintf("    scheme: https\n    tls_config:\n      ca_file: %s\n    basic_auth:\n      username: prometheus\n      password: scrape-s3cret\n", caFile)
	const job = "agentmeter-tls"
	query := startPrometheusScraping(t, job, c.httpAddr, "/metrics", extra)
	for _, q := range []struct {
		expr string
		want float64
	}{
		{fmt.Sprintf(`up{job=%q}`, job), 1},
		{`sum(agentmeter_llm_tokens_total{gen_ai_token_type="input"})`, fixtureTokens["input"]},
		{`sum(agentmeter_llm_cost_usd_total)`, fixtureCost},
	} {
		eventually(t, 30*time.Second, fmt.Sprintf("%s = %v", q.expr, q.want), func() (bool, string) {
			vs, err := query(q.expr)
			if err != nil {
				return false, err.Error()
			}
			return len(vs) == 1 && near(vs[0], q.want), fmt.Sprint(vs)
		})
	}
	c.stop()
}

// TestValidateWebConfig: collector validate loads the web config file and
// names it when it is bad.
func TestValidateWebConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	ca := testcert.NewCA(t, "ca")
	ca.Issue(t, testcert.Options{}).Write(t, dir, "server")
	write("good-web.yml", "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")
	write("typo-web.yml", "tls_server_config:\n  certfile: server.crt\n")
	write("plain-web.yml", "basic_auth_users:\n  prometheus: not-a-hash\n")
	for _, tc := range []struct {
		web      string
		wantCode int
		want     string
	}{
		{"good-web.yml", 0, "ok"},
		{"typo-web.yml", 2, "certfile"},
		{"plain-web.yml", 2, "hashedSecret"},
		{"absent-web.yml", 2, "no such file"},
	} {
		cfg := write("config-"+tc.web+".yaml", "http:\n  web_config_file: "+tc.web+"\n")
		code, stdout, stderr := runCollector(t, "validate", "--config", cfg)
		if code != tc.wantCode || !strings.Contains(stdout+stderr, tc.want) {
			t.Errorf("validate with %s: exit %d, output %q; want exit %d and %q", tc.web, code, stdout+stderr, tc.wantCode, tc.want)
		}
		if tc.wantCode != 0 && !strings.Contains(stderr, "http.web_config_file") {
			t.Errorf("validate with %s: %q does not name http.web_config_file", tc.web, stderr)
		}
	}
}
