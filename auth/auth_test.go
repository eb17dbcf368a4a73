package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/agentmeter/agentmeter/internal/testcert"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

func TestMain(m *testing.M) {
	if path := os.Getenv(childDialEnv); path != "" {
		os.Exit(childDial(path))
	}
	goleak.VerifyTestMain(m)
}

// ingest counts the events it applied.
type ingest struct {
	pb.UnimplementedIngestServiceServer
	applied atomic.Int64
}

func (i *ingest) Record(_ context.Context, req *pb.RecordRequest) (*pb.RecordResponse, error) {
	i.applied.Add(int64(len(req.GetEvents())))
	return &pb.RecordResponse{Accepted: uint32(len(req.GetEvents()))}, nil
}

// maxRecv is the test server's MaxRecvMsgSize.
const maxRecv = 1 << 20

// serve serves an ingest service and health behind a on endpoint
// ("127.0.0.1:0" when "") until the test ends, and returns its address.
func serve(t *testing.T, a *Auth, endpoint string) (string, *ingest) {
	t.Helper()
	if endpoint == "" {
		endpoint = "127.0.0.1:0"
	}
	ln, err := Listen("tcp", endpoint)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(append([]grpc.ServerOption{grpc.InTapHandle(a.Tap), grpc.MaxRecvMsgSize(maxRecv)}, a.ServerOptions()...)...)
	svc := &ingest{}
	pb.RegisterIngestServiceServer(s, svc)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(ln) }()
	t.Cleanup(func() { s.Stop(); <-done })
	addr := ln.Addr().String()
	if ln.Addr().Network() == "unix" {
		addr = "unix://" + addr
	}
	return addr, svc
}

func dial(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// record sends one event with the authorization values given (none when
// empty) and returns the RPC's error.
func record(conn *grpc.ClientConn, authz ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, v := range authz {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", v)
	}
	_, err := pb.NewIngestServiceClient(conn).Record(ctx, &pb.RecordRequest{Events: []*pb.Event{{EventId: "e"}}})
	return err
}

func writeToken(t *testing.T, dir, token string) string {
	t.Helper()
	path := filepath.Join(dir, "token")
	testcert.WriteFile(t, path, []byte(token))
	return path
}

func newAuth(t *testing.T, cfg Config) *Auth {
	t.Helper()
	a, err := New(cfg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Shutdown(context.Background()) })
	return a
}

func wantCode(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), msg) {
		t.Errorf("%s: %v, want %s with %q", what, err, code, msg)
	}
}

func TestToken(t *testing.T) {
	a := newAuth(t, Config{TokenFile: writeToken(t, t.TempDir(), "s3cret-token\n")})
	addr, svc := serve(t, a, "")
	conn := dial(t, addr, nil)

	tests := []struct {
		name   string
		authz  []string
		code   codes.Code
		msg    string
		reason string
	}{
		{"no token", nil, codes.Unauthenticated, "requires a bearer token", ReasonMissingToken},
		{"basic auth", []string{"Basic czNjcmV0"}, codes.Unauthenticated, "Bearer <token>", ReasonMalformedToken},
		{"bearer without token", []string{"Bearer "}, codes.Unauthenticated, "Bearer <token>", ReasonMalformedToken},
		{"two values", []string{"Bearer s3cret-token", "Bearer s3cret-token"}, codes.Unauthenticated, "one value", ReasonMalformedToken},
		{"wrong token", []string{"Bearer s3cret-tokeN"}, codes.Unauthenticated, "not valid", ReasonWrongToken},
		{"token prefix", []string{"Bearer s3cret"}, codes.Unauthenticated, "not valid", ReasonWrongToken},
		{"right token", []string{"Bearer s3cret-token"}, codes.OK, "", ""},
		{"scheme in lower case", []string{"bearer s3cret-token"}, codes.OK, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var before int64
			if tc.reason != "" {
				before = a.Refused(tc.reason)
			}
			applied := svc.applied.Load()
			err := record(conn, tc.authz...)
			wantCode(t, "Record", err, tc.code, tc.msg)
			if tc.reason != "" {
				if got := a.Refused(tc.reason) - before; got != 1 {
					t.Errorf("refused{reason=%s} grew by %d, want 1", tc.reason, got)
				}
				if svc.applied.Load() != applied {
					t.Error("a refused request was applied")
				}
			} else if svc.applied.Load() != applied+1 {
				t.Error("an authorised request was not applied")
			}
		})
	}

	// Health stays open for probes.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health without a token: %v", err)
	}
	// Any other service needs the token, whether it exists or not.
	err := conn.Invoke(ctx, "/agentmeter.v1.UsageService/GetUsage", &pb.RecordRequest{}, &pb.RecordResponse{})
	wantCode(t, "GetUsage without a token", err, codes.Unauthenticated, "bearer token")
}

// TestTokenCheckedBeforeTheBody: a request too large for the server is
// refused for its missing token, not for its size: gRPC did not read it.
func TestTokenCheckedBeforeTheBody(t *testing.T) {
	a := newAuth(t, Config{TokenFile: writeToken(t, t.TempDir(), "tok")})
	addr, _ := serve(t, a, "")
	conn := dial(t, addr, nil)
	big := &pb.RecordRequest{Events: []*pb.Event{{EventId: strings.Repeat("x", 2*maxRecv)}}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := pb.NewIngestServiceClient(conn).Record(ctx, big)
	wantCode(t, "oversized request without a token", err, codes.Unauthenticated, "bearer token")
	_, err = pb.NewIngestServiceClient(conn).Record(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer tok"), big)
	wantCode(t, "oversized request with the token", err, codes.ResourceExhausted, "larger than max")
}

func TestTokenReload(t *testing.T) {
	dir := t.TempDir()
	path := writeToken(t, dir, "first")
	a := newAuth(t, Config{TokenFile: path})
	addr, _ := serve(t, a, "")
	conn := dial(t, addr, nil)
	if err := record(conn, "Bearer first"); err != nil {
		t.Fatal(err)
	}
	writeToken(t, dir, "second\n")
	deadline := time.Now().Add(30 * time.Second)
	for record(conn, "Bearer second") != nil {
		if time.Now().After(deadline) {
			t.Fatal("the new token is not accepted 30s after the file changed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	wantCode(t, "old token after the change", record(conn, "Bearer first"), codes.Unauthenticated, "not valid")

	// A file that does not load keeps the token in service.
	writeToken(t, dir, "two words")
	eventually(t, "the failed reload counted", func() bool { _, failed := a.Reloads("token"); return failed >= 1 })
	if err := record(conn, "Bearer second"); err != nil {
		t.Errorf("token after a bad file: %v, want it still accepted", err)
	}
	if ok, _ := a.Reloads("token"); ok != 1 {
		t.Errorf("successful token reloads = %d, want 1", ok)
	}
}

func TestNewRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ca := testcert.NewCA(t, "ca")
	cert, key := ca.Issue(t, testcert.Options{}).Write(t, dir, "server")
	otherCert, _ := ca.Issue(t, testcert.Options{}).Write(t, dir, "other")
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"missing token file", Config{TokenFile: filepath.Join(dir, "nope")}, "no such file"},
		{"empty token file", Config{TokenFile: write("empty", "\n")}, "the file is empty"},
		{"token with a space", Config{TokenFile: write("space", "a b")}, "printable ASCII"},
		{"token with a control character", Config{TokenFile: write("ctl", "a\x01b")}, "printable ASCII"},
		{"token file too large", Config{TokenFile: write("big", strings.Repeat("a", maxTokenFile+1))}, "larger than"},
		{"key without cert", Config{KeyFile: key}, "need cert_file"},
		{"missing key", Config{CertFile: cert, KeyFile: filepath.Join(dir, "nope.key")}, "key_file"},
		{"cert and key do not match", Config{CertFile: otherCert, KeyFile: key}, "private key does not match"},
		{"key is not PEM", Config{CertFile: cert, KeyFile: write("bad.key", "junk")}, "failed to find any PEM data"},
		{"client CA is not PEM", Config{CertFile: cert, KeyFile: key, ClientCAFile: write("ca.pem", "junk")}, "no PEM certificate"},
		{"missing client CA", Config{CertFile: cert, KeyFile: key, ClientCAFile: filepath.Join(dir, "nope.pem")}, "client_ca_file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, Deps{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New = %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// tlsFiles writes a server pair signed by ca into dir and returns the
// Config for it, with client CAs when clientCA is set.
func tlsFiles(t *testing.T, dir string, ca *testcert.CA, clientCA *testcert.CA) Config {
	t.Helper()
	cfg := Config{}
	cfg.CertFile, cfg.KeyFile = ca.Issue(t, testcert.Options{CommonName: "agentmeter"}).Write(t, dir, "server")
	if clientCA != nil {
		cfg.ClientCAFile = filepath.Join(dir, "client-ca.crt")
		testcert.WriteFile(t, cfg.ClientCAFile, clientCA.PEM)
	}
	return cfg
}

// clientTLS is a TLS client trusting roots that presents its certificate
// whatever CAs the server asks for (crypto/tls would otherwise send none
// that the server's CAs did not sign; other TLS stacks send it).
func clientTLS(roots *x509.CertPool, certs ...tls.Certificate) credentials.TransportCredentials {
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if len(certs) > 0 {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &certs[0], nil }
	}
	return credentials.NewTLS(cfg)
}

func TestTLS(t *testing.T) {
	ca := testcert.NewCA(t, "server ca")
	a := newAuth(t, tlsFiles(t, t.TempDir(), ca, nil))
	addr, svc := serve(t, a, "")

	if err := record(dial(t, addr, clientTLS(testcert.Pool(ca)))); err != nil {
		t.Fatalf("TLS client: %v", err)
	}
	wantCode(t, "client without the CA", record(dial(t, addr, clientTLS(x509.NewCertPool()))),
		codes.Unavailable, "certificate signed by unknown authority")
	wantCode(t, "plaintext client", record(dial(t, addr, nil)), codes.Unavailable, "")
	eventually(t, "not_tls counted", func() bool { return a.Refused(ReasonNotTLS) >= 1 })
	if n := svc.applied.Load(); n != 1 {
		t.Errorf("applied %d events, want the TLS client's 1", n)
	}
}

func TestMutualTLS(t *testing.T) {
	serverCA, clientCA, otherCA := testcert.NewCA(t, "server ca"), testcert.NewCA(t, "client ca"), testcert.NewCA(t, "other ca")
	a := newAuth(t, tlsFiles(t, t.TempDir(), serverCA, clientCA))
	addr, svc := serve(t, a, "")
	roots := testcert.Pool(serverCA)

	good := clientCA.Issue(t, testcert.Options{CommonName: "agent", Client: true}).TLS(t)
	expired := clientCA.Issue(t, testcert.Options{CommonName: "agent", Client: true, Expired: true}).TLS(t)
	stranger := otherCA.Issue(t, testcert.Options{CommonName: "agent", Client: true}).TLS(t)

	tests := []struct {
		name   string
		certs  []tls.Certificate
		reason string
	}{
		{"expired client certificate", []tls.Certificate{expired}, ReasonClientCertExpired},
		{"client certificate of another CA", []tls.Certificate{stranger}, ReasonClientCertUntrusted},
		{"no client certificate", nil, ReasonClientCertMissing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := a.Refused(tc.reason)
			// The valid client alongside is still served.
			if err := record(dial(t, addr, clientTLS(roots, good))); err != nil {
				t.Fatalf("valid client: %v", err)
			}
			applied := svc.applied.Load()
			err := record(dial(t, addr, clientTLS(roots, tc.certs...)))
			wantCode(t, tc.name, err, codes.Unavailable, "")
			t.Logf("client sees: %v", err)
			eventually(t, tc.reason+" counted", func() bool { return a.Refused(tc.reason) > before }, func() string { return fmt.Sprint(a.refusedAll()) })
			if svc.applied.Load() != applied {
				t.Error("a refused client's request was applied")
			}
		})
	}
}

// TestCertificateReload: a new connection after the files change gets the
// new certificate, without a restart.
func TestCertificateReload(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t, "ca")
	cfg := tlsFiles(t, dir, ca, nil)
	a := newAuth(t, cfg)
	addr, _ := serve(t, a, "")
	serial := func() string {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: testcert.Pool(ca), NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	first := serial()
	renewed := ca.Issue(t, testcert.Options{CommonName: "agentmeter"})
	// Key first, then certificate, as a renewal may: the mismatched pair in
	// between keeps the old one in service.
	testcert.WriteFile(t, cfg.KeyFile, renewed.KeyPEM)
	testcert.WriteFile(t, cfg.CertFile, renewed.CertPEM)
	want := renewed.Cert.SerialNumber.String()
	eventually(t, "the renewed certificate served", func() bool { return serial() == want })
	if ok, _ := a.Reloads("tls"); ok < 1 {
		t.Errorf("successful tls reloads = %d, want >= 1", ok)
	}
	if first == want {
		t.Fatal("the test issued the same serial twice")
	}
	// A TLS client through gRPC sees it too.
	if err := record(dial(t, addr, clientTLS(testcert.Pool(ca)))); err != nil {
		t.Fatalf("TLS client after the reload: %v", err)
	}
}

func eventually(t *testing.T, what string, cond func() bool, detail ...func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			var d string
			for _, f := range detail {
				d += f()
			}
			t.Fatalf("after 30s, still not %s %s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestUnixSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agentmeter.sock")

	// A stale socket file, left by a process that died, is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	_ = stale.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("no stale socket to test with: %v", err)
	}

	a := newAuth(t, Config{TokenFile: writeToken(t, dir, "tok")})
	addr, svc := serve(t, a, "unix://"+path)
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != SocketMode {
		t.Errorf("socket mode %v, want a socket with %v", fi.Mode(), SocketMode)
	}
	conn := dial(t, addr, nil)
	if err := record(conn, "Bearer tok"); err != nil {
		t.Fatalf("Record over the socket: %v", err)
	}
	wantCode(t, "no token over the socket", record(conn), codes.Unauthenticated, "bearer token")
	if n := svc.applied.Load(); n != 1 {
		t.Errorf("applied %d, want 1", n)
	}

	// A live socket is not taken over, and a file that is no socket is left alone.
	if _, err := Listen("tcp", "unix://"+path); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("Listen on a live socket = %v, want an in-use error", err)
	}
	regular := filepath.Join(dir, "regular")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen("tcp", "unix://"+regular); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen on a regular file = %v, want a not-a-socket error", err)
	}
}

func TestUnixSocketRemovedOnClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.sock")
	ln, err := Listen("tcp", "unix:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after Close: %v, want it removed", err)
	}
}

// childDialEnv makes the test binary a gRPC client of the socket it names
// (TestSocketPermission runs it as another user).
const childDialEnv = "AGENTMETER_AUTH_TEST_DIAL"

func childDial(path string) int {
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Println("client:", err)
		return 1
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	fmt.Printf("code=%s message=%s\n", status.Code(err), status.Convert(err).Message())
	return 0
}

// TestSocketPermission runs a gRPC client as the unprivileged user 65534
// (nobody): outside the socket's group it gets a clear PermissionDenied-
// worded Unavailable; in the group, it is served. Root bypasses file
// permissions, so this needs root to switch users; as another user the test
// checks that the owner is refused once the owner bits are cleared.
func TestSocketPermission(t *testing.T) {
	base, err := os.MkdirTemp("", "agentmeter-sock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil { // others may reach the socket and the binary
		t.Fatal(err)
	}
	path := filepath.Join(base, "agentmeter.sock")
	a := newAuth(t, Config{})
	serve(t, a, "unix://"+path)

	if os.Geteuid() != 0 {
		if err := os.Chmod(path, 0o060); err != nil {
			t.Fatal(err)
		}
		conn := dial(t, "unix://"+path, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		wantCode(t, "owner without permission", err, codes.Unavailable, "permission denied")
		return
	}

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "client.test")
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(uid, gid uint32) string {
		t.Helper()
		cmd := childCommand(bin, path, uid, gid)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("client as %d:%d: %v\n%s", uid, gid, err, out)
		}
		t.Logf("client as uid %d gid %d: %s", uid, gid, out)
		return string(out)
	}
	// The socket belongs to root:root with mode 0660.
	if out := run(65534, 65534); !strings.Contains(out, "code=Unavailable") || !strings.Contains(out, "permission denied") {
		t.Errorf("client outside the socket's group got %q, want Unavailable with permission denied", out)
	}
	if out := run(65534, 0); !strings.Contains(out, "code=OK") {
		t.Errorf("client in the socket's group got %q, want OK", out)
	}
}

func (a *Auth) refusedAll() map[string]int64 {
	m := map[string]int64{}
	for i, r := range reasons {
		if n := a.refused[i].Load(); n > 0 {
			m[r] = n
		}
	}
	return m
}

// TestMetrics: refusals by reason and reloads by file and outcome reach
// the meter under their catalogue names.
func TestMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer provider.Shutdown(context.Background())
	a, err := New(Config{TokenFile: writeToken(t, t.TempDir(), "tok")}, Deps{Meter: provider.Meter("test")})
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := serve(t, a, "")
	conn := dial(t, addr, nil)
	_ = record(conn)
	_ = record(conn, "Bearer nope")
	_ = record(conn, "Bearer nope")
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			sum, ok := m.Data.(metricdata.Sum[int64])
			if !ok {
				continue
			}
			for _, dp := range sum.DataPoints {
				key := m.Name
				for _, kv := range dp.Attributes.ToSlice() {
					key += " " + string(kv.Key) + "=" + kv.Value.String()
				}
				got[key] = dp.Value
			}
		}
	}
	want := map[string]int64{
		"agentmeter.receiver.auth_refused reason=missing_token":       1,
		"agentmeter.receiver.auth_refused reason=wrong_token":         2,
		"agentmeter.receiver.auth_reloads file=token outcome=failure": 0,
		"agentmeter.receiver.auth_reloads file=token outcome=success": 0,
	}
	for k, v := range want {
		if n, ok := got[k]; !ok || n != v {
			t.Errorf("%s = %d (present %v), want %d", k, n, ok, v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("series %v, want exactly %v", got, want)
	}
}
