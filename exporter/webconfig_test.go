package exporter

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/agentmeter/agentmeter/config"
	"github.com/agentmeter/agentmeter/internal/testcert"
)

// webConfig writes a web config file with TLS from ca and the user
// "prometheus" with password pass, and returns its path.
func webConfig(t *testing.T, dir string, ca *testcert.CA, pass string) string {
	t.Helper()
	certFile, keyFile := ca.Issue(t, testcert.Options{CommonName: "agentmeter"}).Write(t, dir, "server")
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "web-config.yml")
	content := fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  prometheus: %s\n",
		filepath.Base(certFile), filepath.Base(keyFile), hash)
	testcert.WriteFile(t, path, []byte(content))
	return path
}

// TestWebConfigTLSAndBasicAuth serves over TLS with basic auth from a web
// config file: the right password gets the metrics and the probes, a wrong
// one or none gets 401, plain HTTP gets nothing.
func TestWebConfigTLSAndBasicAuth(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t, "web ca")
	path := webConfig(t, dir, ca, "s3cret")
	e := newExporter(t, func(c *config.Config) { c.HTTP.WebConfigFile = path })
	e.SetReady(true)
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A generous timeout: no speed is asserted, and a shared machine under
	// -race can take seconds for a scrape.
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: testcert.Pool(ca), MinVersion: tls.VersionTLS12},
	}}
	do := func(scheme, path, user, pass string) (int, string, error) {
		req, err := http.NewRequest(http.MethodGet, scheme+"://"+e.Addr().String()+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), nil
	}
	tests := []struct {
		name, scheme, path, user, pass string
		want                           int
	}{
		{"metrics with the password", "https", "/metrics", "prometheus", "s3cret", http.StatusOK},
		{"readyz with the password", "https", "/readyz", "prometheus", "s3cret", http.StatusOK},
		{"healthz with the password", "https", "/healthz", "prometheus", "s3cret", http.StatusOK},
		{"wrong password", "https", "/metrics", "prometheus", "guess", http.StatusUnauthorized},
		{"unknown user", "https", "/metrics", "admin", "s3cret", http.StatusUnauthorized},
		{"no credentials", "https", "/metrics", "", "", http.StatusUnauthorized},
		{"probe without credentials", "https", "/healthz", "", "", http.StatusUnauthorized},
		// net/http answers plain HTTP on a TLS port with 400.
		{"plain http", "http", "/metrics", "prometheus", "s3cret", http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body, err := do(tc.scheme, tc.path, tc.user, tc.pass)
			if err != nil {
				t.Fatal(err)
			}
			if code != tc.want {
				t.Errorf("GET %s = %d, want %d: %s", tc.path, code, tc.want, body)
			}
			if code == http.StatusOK && tc.path == "/metrics" && !strings.Contains(body, "target_info") {
				t.Errorf("GET /metrics: no target_info in %q", body)
			}
		})
	}

	// The file is read again per request: a new password applies at once.
	webConfig(t, dir, ca, "rotated")
	if code, _, err := do("https", "/metrics", "prometheus", "s3cret"); err != nil || code != http.StatusUnauthorized {
		t.Errorf("old password after rotation = %d, %v; want 401", code, err)
	}
	if code, _, err := do("https", "/metrics", "prometheus", "rotated"); err != nil || code != http.StatusOK {
		t.Errorf("new password after rotation = %d, %v; want 200", code, err)
	}

	// The certificate is read per handshake: a renewed pair is served to
	// the next connection.
	renewed := ca.Issue(t, testcert.Options{CommonName: "agentmeter"})
	testcert.WriteFile(t, filepath.Join(dir, "server.key"), renewed.KeyPEM)
	testcert.WriteFile(t, filepath.Join(dir, "server.crt"), renewed.CertPEM)
	conn, err := tls.Dial("tcp", e.Addr().String(), &tls.Config{RootCAs: testcert.Pool(ca), MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	if got := conn.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(renewed.Cert.SerialNumber) != 0 {
		t.Errorf("serial after renewal = %v, want the renewed %v", got, renewed.Cert.SerialNumber)
	}
	_ = conn.Close()

	// A client that does not trust the server's CA does not get in.
	untrusting := &http.Client{Timeout: 30 * time.Second}
	if resp, err := untrusting.Get("https://" + e.Addr().String() + "/metrics"); err == nil {
		resp.Body.Close()
		t.Error("a client without the CA completed the TLS handshake")
	}
}

func TestBadWebConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	testcert.NewCA(t, "ca").Issue(t, testcert.Options{}).Write(t, dir, "server")
	tests := []struct {
		name, path, want string
	}{
		{"missing file", filepath.Join(dir, "nope.yml"), "no such file"},
		{"unknown key", write("unknown.yml", "tls_server_config:\n  cert_fil: x\n"), "cert_fil"},
		{"not a bcrypt hash", write("plain.yml", "basic_auth_users:\n  prometheus: s3cret\n"), "hash"},
		{"missing cert", write("nocert.yml", "tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n"), "nope.crt"},
		{"key without cert", write("nokey.yml", "tls_server_config:\n  key_file: x.key\n"), "missing one of cert or cert_file"},
		{"bad client auth", write("auth.yml", "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: Sometimes\n"), "Sometimes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.HTTP.WebConfigFile = tc.path
			_, err := New(context.Background(), cfg, Deps{})
			if err == nil || !strings.Contains(err.Error(), "http.web_config_file") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New with %s = %v, want an error naming http.web_config_file and %q", tc.name, err, tc.want)
			}
		})
	}
}
