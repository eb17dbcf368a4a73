package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/agentmeter/agentmeter/internal/testcert"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// This file tests who may write to the real binary: the bearer token, the
// Unix socket, TLS and mutual TLS. Each refusal is a clear gRPC status,
// counted in agentmeter_receiver_auth_refused_total, and applies nothing,
// while an authorised client alongside is served and counted.

const authRefused = "agentmeter_receiver_auth_refused_total"

// dialCollector opens another client connection to c.
func dialCollector(t *testing.T, c *collector, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	conn, err := grpc.NewClient(c.grpcAddr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// tryRecord sends events on conn with the metadata pairs given.
func tryRecord(conn *grpc.ClientConn, md []string, events ...*pb.Event) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if len(md) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, md...)
	}
	_, err := pb.NewIngestServiceClient(conn).Record(ctx, &pb.RecordRequest{Events: events})
	return err
}

func wantStatus(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), msg) {
		t.Errorf("%s: %v; want %s with %q", what, err, code, msg)
	}
}

// awaitCounter polls the scrape until name{sel} sums to want.
func awaitCounter(t *testing.T, c *collector, name string, sel labels, want float64) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("%s%s = %v", name, sel, want), func() (bool, string) {
		fams, _, err := c.tryScrape()
		if err != nil {
			return false, err.Error()
		}
		got, _ := fams.value(name, sel)
		return near(got, want), fmt.Sprint(got)
	})
}

func TestIngestToken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	testcert.WriteFile(t, tokenFile, []byte("first-t0ken\n"))
	c := startCollector(t, options{GRPC: &grpcAuthOptions{TokenFile: tokenFile, Token: "first-t0ken"}})
	anon := dialCollector(t, c)

	// The harness's connection sends the token.
	if resp := c.record(simpleCall("tok-1", "gpt-4o", 10, 5)); resp.GetAccepted() != 1 {
		t.Fatalf("authorised Record: %v", resp)
	}
	wantStatus(t, "no token", tryRecord(anon, nil, simpleCall("tok-x1", "gpt-4o", 1, 1)),
		codes.Unauthenticated, "requires a bearer token")
	wantStatus(t, "wrong token", tryRecord(anon, []string{"authorization", "Bearer guess"}, simpleCall("tok-x2", "gpt-4o", 1, 1)),
		codes.Unauthenticated, "not valid")
	wantStatus(t, "basic auth", tryRecord(anon, []string{"authorization", "Basic Zmlyc3Q="}, simpleCall("tok-x3", "gpt-4o", 1, 1)),
		codes.Unauthenticated, "Bearer <token>")
	// A request larger than max_recv_msg_size_mib is refused for its
	// token, not its size: its body was never read.
	big := call{id: "tok-big", conv: strings.Repeat("c", 5<<20), model: "gpt-4o"}.event()
	wantStatus(t, "oversized without a token", tryRecord(anon, nil, big), codes.Unauthenticated, "bearer token")
	// The usage API needs the token too; health does not.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := pb.NewUsageServiceClient(anon).GetUsage(ctx, &pb.GetUsageRequest{ConversationId: "conv-gpt-4o"})
	wantStatus(t, "GetUsage without a token", err, codes.Unauthenticated, "bearer token")
	if _, err := pb.NewUsageServiceClient(c.conn).GetUsage(ctx, &pb.GetUsageRequest{ConversationId: "conv-gpt-4o"}); err != nil {
		t.Errorf("GetUsage with the token: %v", err)
	}
	if _, err := healthpb.NewHealthClient(anon).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health without a token: %v", err)
	}

	awaitCounter(t, c, authRefused, labels{"reason": "missing_token"}, 3)
	awaitCounter(t, c, authRefused, labels{"reason": "wrong_token"}, 1)
	awaitCounter(t, c, authRefused, labels{"reason": "malformed_token"}, 1)
	awaitCounter(t, c, "agentmeter_receiver_events_total", labels{"outcome": "accepted"}, 1)
	fams, _ := c.scrape()
	if got, _ := fams.value("agentmeter_llm_tokens_total", labels{"gen_ai_token_type": "input"}); !near(got, 10) {
		t.Errorf("input tokens = %v, want only the authorised call's 10", got)
	}

	// Rotation: a new token in the file replaces the old one, no restart.
	testcert.WriteFile(t, tokenFile, []byte("second-t0ken\n"))
	eventually(t, 30*time.Second, "the new token accepted", func() (bool, string) {
		err := tryRecord(anon, []string{"authorization", "Bearer second-t0ken"}, simpleCall("tok-2", "gpt-4o", 10, 5))
		return err == nil, fmt.Sprint(err)
	})
	wantStatus(t, "old token after rotation", tryRecord(anon, []string{"authorization", "Bearer first-t0ken"}, simpleCall("tok-x4", "gpt-4o", 1, 1)),
		codes.Unauthenticated, "not valid")
	c.stop()
}

func TestIngestUnixSocket(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "agentmeter-e2e-sock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "agentmeter.sock")
	// A socket file left by a collector that was killed.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	_ = stale.Close()

	tokenFile := filepath.Join(dir, "token")
	testcert.WriteFile(t, tokenFile, []byte("sock-t0ken"))
	c := startCollector(t, options{GRPC: &grpcAuthOptions{Socket: sock, TokenFile: tokenFile, Token: "sock-t0ken"}})
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket %v, want a socket with mode 0660", fi.Mode())
	}
	if resp := c.record(simpleCall("sock-1", "gpt-4o", 10, 5)); resp.GetAccepted() != 1 {
		t.Fatalf("Record over the socket: %v", resp)
	}
	wantStatus(t, "no token over the socket", tryRecord(dialCollector(t, c), nil, simpleCall("sock-x", "gpt-4o", 1, 1)),
		codes.Unauthenticated, "bearer token")
	awaitCounter(t, c, "agentmeter_receiver_events_total", labels{"outcome": "accepted"}, 1)

	// A second collector on the same socket refuses to start.
	code, _, stderr := runCollector(t, "--config", writeFile(t, "second.yaml",
		fmt.Sprintf("receiver:\n  grpc:\n    endpoint: %q\nhttp:\n  endpoint: %q\n", "unix://"+sock, freePort(t))))
	if code == 0 || !strings.Contains(stderr, "in use") {
		t.Errorf("second collector on a live socket: exit %d, stderr %q; want a failure saying it is in use", code, stderr)
	}
	c.stop()
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("socket file after shutdown: %v, want it removed", err)
	}
}

// mtlsFixture is a server CA with a server pair, and a client CA.
type mtlsFixture struct {
	serverCA, clientCA *testcert.CA
	certFile, keyFile  string
	clientCAFile       string
}

func newMTLS(t *testing.T, dir string) *mtlsFixture {
	t.Helper()
	f := &mtlsFixture{serverCA: testcert.NewCA(t, "e2e server ca"), clientCA: testcert.NewCA(t, "e2e client ca")}
	f.certFile, f.keyFile = f.serverCA.Issue(t, testcert.Options{CommonName: "agentmeter"}).Write(t, dir, "server")
	f.clientCAFile = filepath.Join(dir, "client-ca.crt")
	testcert.WriteFile(t, f.clientCAFile, f.clientCA.PEM)
	return f
}

// clientCreds trusts roots and presents cert (when given) whatever CAs the
// server names, as grpcio and OpenSSL-based clients do.
func clientCreds(roots *x509.CertPool, cert *tls.Certificate) credentials.TransportCredentials {
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return credentials.NewTLS(cfg)
}

func TestIngestMutualTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	f := newMTLS(t, dir)
	good := f.clientCA.Issue(t, testcert.Options{CommonName: "agent", Client: true}).TLS(t)
	expired := f.clientCA.Issue(t, testcert.Options{CommonName: "agent", Client: true, Expired: true}).TLS(t)
	stranger := testcert.NewCA(t, "other ca").Issue(t, testcert.Options{CommonName: "agent", Client: true}).TLS(t)
	roots := testcert.Pool(f.serverCA)

	c := startCollector(t, options{GRPC: &grpcAuthOptions{
		CertFile: f.certFile, KeyFile: f.keyFile, ClientCAFile: f.clientCAFile,
		Creds: clientCreds(roots, &good),
	}})
	if resp := c.record(simpleCall("mtls-1", "gpt-4o", 10, 5)); resp.GetAccepted() != 1 {
		t.Fatalf("Record with a valid client certificate: %v", resp)
	}
	for _, tc := range []struct {
		name   string
		opt    grpc.DialOption
		reason string
	}{
		{"expired client certificate", grpc.WithTransportCredentials(clientCreds(roots, &expired)), "client_cert_expired"},
		{"client certificate of another CA", grpc.WithTransportCredentials(clientCreds(roots, &stranger)), "client_cert_untrusted"},
		{"no client certificate", grpc.WithTransportCredentials(clientCreds(roots, nil)), "client_cert_missing"},
		{"plaintext client", grpc.WithTransportCredentials(insecure.NewCredentials()), "not_tls"},
	} {
		err := tryRecord(dialCollector(t, c, tc.opt), nil, simpleCall("mtls-x", "gpt-4o", 1, 1))
		wantStatus(t, tc.name, err, codes.Unavailable, "")
		t.Logf("%s: %v", tc.name, err)
		// gRPC clients reconnect in the background: at least one refusal.
		eventually(t, 30*time.Second, tc.reason+" counted", func() (bool, string) {
			fams, _, err := c.tryScrape()
			if err != nil {
				return false, err.Error()
			}
			got, _ := fams.value(authRefused, labels{"reason": tc.reason})
			return got >= 1, fmt.Sprint(got)
		})
	}
	// The valid client alongside is still served; nothing else was applied.
	if resp := c.record(simpleCall("mtls-2", "gpt-4o", 10, 5)); resp.GetAccepted() != 1 {
		t.Fatalf("second valid Record: %v", resp)
	}
	awaitCounter(t, c, "agentmeter_receiver_events_total", labels{"outcome": "accepted"}, 2)

	// Certificate renewal: a new connection gets the new certificate.
	renewed := f.serverCA.Issue(t, testcert.Options{CommonName: "agentmeter"})
	testcert.WriteFile(t, f.keyFile, renewed.KeyPEM)
	testcert.WriteFile(t, f.certFile, renewed.CertPEM)
	want := renewed.Cert.SerialNumber.String()
	eventually(t, 30*time.Second, "the renewed certificate served", func() (bool, string) {
		conn, err := tls.Dial("tcp", c.grpcAddr, &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{good},
			NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12})
		if err != nil {
			return false, err.Error()
		}
		defer conn.Close()
		got := conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
		return got == want, got
	})
	if err := tryRecord(dialCollector(t, c, grpc.WithTransportCredentials(clientCreds(roots, &good))), nil,
		simpleCall("mtls-3", "gpt-4o", 10, 5)); err != nil {
		t.Errorf("Record after the renewal: %v", err)
	}
	c.stop()
}

// TestValidateAuthFiles: collector validate loads the token and the
// certificates, and names the key of a file that does not load.
func TestValidateAuthFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	f := newMTLS(t, dir)
	_, otherKey := f.serverCA.Issue(t, testcert.Options{}).Write(t, dir, "other")
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good := write("token", "t0ken\n")
	empty := write("empty-token", "\n")
	for _, tc := range []struct {
		name, yaml string
		code       int
		want       []string
	}{
		{"good", fmt.Sprintf("receiver:\n  auth:\n    token_file: %s\n  grpc:\n    tls:\n      cert_file: %s\n      key_file: %s\n      client_ca_file: %s\n",
			good, f.certFile, f.keyFile, f.clientCAFile), 0, []string{"ok"}},
		{"empty token file", "receiver:\n  auth:\n    token_file: " + empty + "\n", 2, []string{"receiver.auth.token_file", "empty"}},
		{"missing token file", "receiver:\n  auth:\n    token_file: nope\n", 2, []string{"receiver.auth.token_file", "no such file"}},
		{"key of another certificate", fmt.Sprintf("receiver:\n  grpc:\n    tls:\n      cert_file: %s\n      key_file: %s\n", f.certFile, otherKey),
			2, []string{"receiver.grpc.tls", "private key does not match"}},
		{"key without certificate", fmt.Sprintf("receiver:\n  grpc:\n    tls:\n      key_file: %s\n", f.keyFile),
			2, []string{"receiver.grpc.tls.key_file needs receiver.grpc.tls.cert_file"}},
		{"relative socket path", "receiver:\n  grpc:\n    endpoint: unix:agentmeter.sock\n", 2, []string{"unix:///absolute/path"}},
	} {
		code, stdout, stderr := runCollector(t, "validate", "--config", write("config-"+strings.ReplaceAll(tc.name, " ", "-")+".yaml", tc.yaml))
		if code != tc.code {
			t.Errorf("%s: exit %d, want %d; stderr %q", tc.name, code, tc.code, stderr)
		}
		for _, w := range tc.want {
			if !strings.Contains(stdout+stderr, w) {
				t.Errorf("%s: output %q does not contain %q", tc.name, stdout+stderr, w)
			}
		}
	}
}

// socketClientEnv makes the e2e test binary a client of the socket it
// names: it sends one event with the token of $AGENTMETER_E2E_TOKEN and
// prints the status.
const socketClientEnv = "AGENTMETER_E2E_SOCKET_CLIENT"

func socketClient(path string) int {
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Println("client:", err)
		return 1
	}
	defer conn.Close()
	err = tryRecord(conn, []string{"authorization", "Bearer " + os.Getenv("AGENTMETER_E2E_TOKEN")},
		simpleCall(fmt.Sprintf("sock-uid-%d", os.Getuid()), "gpt-4o", 10, 5))
	fmt.Printf("code=%s message=%s\n", status.Code(err), status.Convert(err).Message())
	return 0
}

// TestIngestSocketPermission runs real gRPC clients as the unprivileged
// uid 65534 against the collector's socket (root:root, 0660): outside the
// group it gets Unavailable "permission denied" and nothing is applied; in
// the group it is served. Switching users needs root; as another user the
// test clears the owner's bits of the socket instead and checks that the
// owner is refused, then served again once they are back.
func TestIngestSocketPermission(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "agentmeter-e2e-perm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // the other user reaches the socket and the binary
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agentmeter.sock")
	tokenFile := filepath.Join(dir, "token")
	testcert.WriteFile(t, tokenFile, []byte("perm-t0ken"))
	c := startCollector(t, options{GRPC: &grpcAuthOptions{Socket: sock, TokenFile: tokenFile, Token: "perm-t0ken"}})

	if os.Geteuid() != 0 {
		t.Log("not root: checking the owner against the socket's mode instead of another user")
		if err := os.Chmod(sock, 0o060); err != nil {
			t.Fatal(err)
		}
		err := tryRecord(dialCollector(t, c, c.opts.dialOptions()...), nil, simpleCall("perm-x", "gpt-4o", 1, 1))
		wantStatus(t, "owner without permission", err, codes.Unavailable, "permission denied")
		if err := os.Chmod(sock, 0o660); err != nil {
			t.Fatal(err)
		}
		if resp := c.record(simpleCall("perm-1", "gpt-4o", 10, 5)); resp.GetAccepted() != 1 {
			t.Fatalf("Record with permission: %v", resp)
		}
		awaitCounter(t, c, "agentmeter_receiver_events_total", labels{"outcome": "accepted"}, 1)
		c.stop()
		return
	}

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "client.test")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(uid, gid uint32) string {
		t.Helper()
		cmd := exec.Command(bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), socketClientEnv+"="+sock, "AGENTMETER_E2E_TOKEN=perm-t0ken")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("client as %d:%d: %v\n%s", uid, gid, err, out)
		}
		t.Logf("client as uid %d gid %d: %s", uid, gid, strings.TrimSpace(string(out)))
		return string(out)
	}
	if out := run(65534, 65534); !strings.Contains(out, "code=Unavailable") || !strings.Contains(out, "permission denied") {
		t.Errorf("client outside the socket's group got %q, want Unavailable with permission denied", out)
	}
	if out := run(65534, 0); !strings.Contains(out, "code=OK") {
		t.Errorf("client in the socket's group got %q, want OK", out)
	}
	// Only the client in the group was applied.
	awaitCounter(t, c, "agentmeter_receiver_events_total", labels{"outcome": "accepted"}, 1)
	c.stop()
}
