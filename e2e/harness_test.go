package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// Deadlines of the harness. Generous for a loaded 2-core machine under -race;
// every wait polls and returns as soon as its condition holds.
const (
	readyTimeout = 30 * time.Second
	pollInterval = 25 * time.Millisecond
)

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// freePort returns a loopback address with a port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	return freePorts(t, 1)[0]
}

// freePorts returns n distinct loopback addresses that nothing listens on
// right now: all n are held open until each is known, so that the kernel
// cannot hand out the same port twice (two freePort calls in a row can),
// and none that this test binary handed out before (a test may take an
// address for a server it starts later, such as an OTLP endpoint that is
// down at first).
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	addrs := make([]string, 0, n)
	for len(addrs) < n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("find a free port: %v", err)
		}
		defer ln.Close()
		addr := ln.Addr().String()
		if _, taken := handedOut.LoadOrStore(addr, true); taken {
			continue
		}
		addrs = append(addrs, addr)
	}
	return addrs
}

// handedOut holds every address freePorts returned in this test binary.
var handedOut sync.Map

// freePair is two distinct free addresses (gRPC and HTTP).
func freePair(t *testing.T) (string, string) {
	t.Helper()
	a := freePorts(t, 2)
	return a[0], a[1]
}

// eventually polls cond until it reports true or timeout passes, then fails
// t with what and cond's last detail.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var detail string
	for {
		var ok bool
		ok, detail = cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, still not %s: %s", timeout, what, detail)
		}
		time.Sleep(pollInterval)
	}
}

// otlpOptions configures exporters.otlp; nil disables it.
type otlpOptions struct {
	Endpoint string
	Protocol string // grpc or http/protobuf
	Interval time.Duration
	Timeout  time.Duration
}

// options configures one collector process. Zero values take the defaults
// noted on each field.
type options struct {
	MaxEventsPerRequest int           // 1000
	MaxRecvMsgSizeMiB   int           // 4
	DedupeWindow        time.Duration // 10m
	GracePeriod         time.Duration // 10s
	MetricsPath         string        // /metrics
	OTLP                *otlpOptions
	// Env is added to the process environment (OTEL_RESOURCE_ATTRIBUTES...).
	Env []string
	// PricingTable is pricing.table; "" = the built-in table.
	PricingTable string
	// PricingOverrides is pricing.overrides; "" = none.
	PricingOverrides string
	// MemoryLimitMiB is memory.limit_mib; 0 = the default.
	MemoryLimitMiB int
	// GRPCExtra is more receiver.grpc keys, one "key: value" a line.
	GRPCExtra string
	// Web is http.web_config_file and how the harness reaches the HTTP
	// server through it; nil = plain HTTP.
	Web *webOptions
	// Storage, when set, is the storage section (directory and so on).
	Storage *storageOptions
	// GRPC is who may write to the gRPC server and how the harness does;
	// nil = plaintext on a free TCP port, no token.
	GRPC *grpcAuthOptions
}

// grpcAuthOptions configure auth on the gRPC server and the harness's
// own connection to it.
type grpcAuthOptions struct {
	// Socket, when set, is the path of a Unix socket to listen on.
	Socket string
	// TokenFile is receiver.auth.token_file; Token is what the harness
	// sends ("" = none).
	TokenFile, Token string
	// CertFile, KeyFile, ClientCAFile are receiver.grpc.tls.*.
	CertFile, KeyFile, ClientCAFile string
	// Creds are the harness's transport credentials; nil = plaintext.
	Creds credentials.TransportCredentials
}

// yaml renders the receiver.grpc.tls and receiver.auth keys.
func (g *grpcAuthOptions) yaml() (grpcKeys, receiverKeys string) {
	if g == nil {
		return "", ""
	}
	if g.CertFile != "" {
		grpcKeys = fmt.Sprintf("    tls:\n      cert_file: %q\n      key_file: %q\n      client_ca_file: %q\n", g.CertFile, g.KeyFile, g.ClientCAFile)
	}
	if g.TokenFile != "" {
		receiverKeys = fmt.Sprintf("  auth:\n    token_file: %q\n", g.TokenFile)
	}
	return grpcKeys, receiverKeys
}

// bearer is gRPC per-RPC credentials sending a bearer token, over
// plaintext too (a localhost or Unix-socket sidecar).
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

// dialOptions are the harness's options for a connection to the collector.
func (o options) dialOptions() []grpc.DialOption {
	creds := credentials.TransportCredentials(insecure.NewCredentials())
	var opts []grpc.DialOption
	if g := o.GRPC; g != nil {
		if g.Creds != nil {
			creds = g.Creds
		}
		if g.Token != "" {
			opts = append(opts, grpc.WithPerRPCCredentials(bearer(g.Token)))
		}
	}
	return append(opts, grpc.WithTransportCredentials(creds))
}

// webOptions configure TLS and basic auth on the HTTP server.
type webOptions struct {
	ConfigFile string         // http.web_config_file
	RootCAs    *x509.CertPool // trusted for https; nil = plain http
	User, Pass string         // basic auth of the harness's requests; "" = none
}

// storageOptions configures storage.
type storageOptions struct {
	Directory        string
	SnapshotInterval time.Duration // 10s
	MinFreeMiB       int
}

func (o options) withDefaults() options {
	if o.MaxEventsPerRequest == 0 {
		o.MaxEventsPerRequest = 1000
	}
	if o.MaxRecvMsgSizeMiB == 0 {
		o.MaxRecvMsgSizeMiB = 4
	}
	if o.DedupeWindow == 0 {
		o.DedupeWindow = 10 * time.Minute
	}
	if o.GracePeriod == 0 {
		o.GracePeriod = 10 * time.Second
	}
	if o.MetricsPath == "" {
		o.MetricsPath = "/metrics"
	}
	return o
}

// configYAML renders the collector config for o on the given addresses.
func configYAML(o options, grpcAddr, httpAddr string) string {
	var b strings.Builder
	grpcKeys, receiverKeys := o.GRPC.yaml()
	fmt.Fprintf(&b, `receiver:
  grpc:
    endpoint: %q
    max_recv_msg_size_mib: %d
%s  max_events_per_request: %d
  dedupe_window: %s
%shttp:
  endpoint: %q
%sexporters:
  prometheus:
    enabled: true
    path: %s
`, grpcAddr, o.MaxRecvMsgSizeMiB, grpcKeys+indent(o.GRPCExtra, "    "), o.MaxEventsPerRequest, o.DedupeWindow, receiverKeys, httpAddr, webConfigYAML(o.Web), o.MetricsPath)
	if o.OTLP != nil {
		fmt.Fprintf(&b, `  otlp:
    enabled: true
    endpoint: %q
    protocol: %s
    insecure: true
    interval: %s
    timeout: %s
`, o.OTLP.Endpoint, o.OTLP.Protocol, o.OTLP.Interval, o.OTLP.Timeout)
	} else {
		b.WriteString("  otlp:\n    enabled: false\n")
	}
	if o.PricingTable != "" || o.PricingOverrides != "" {
		fmt.Fprintf(&b, "pricing:\n  table: %q\n  overrides: %q\n", o.PricingTable, o.PricingOverrides)
	}
	if o.MemoryLimitMiB != 0 {
		fmt.Fprintf(&b, "memory:\n  limit_mib: %d\n", o.MemoryLimitMiB)
	}
	if st := o.Storage; st != nil {
		interval := st.SnapshotInterval
		if interval == 0 {
			interval = 10 * time.Second
		}
		fmt.Fprintf(&b, "storage:\n  directory: %q\n  snapshot_interval: %s\n  min_free_mib: %d\n",
			st.Directory, interval, st.MinFreeMiB)
	}
	fmt.Fprintf(&b, `conversations:
  idle_expiry: 1h
shutdown:
  grace_period: %s
log:
  level: debug
  format: text
`, o.GracePeriod)
	return b.String()
}

// indent prefixes every line of s.
func indent(s, prefix string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		b.WriteString(prefix + strings.TrimLeft(line, " "))
	}
	if b.Len() > 0 && !strings.HasSuffix(b.String(), "\n") {
		b.WriteString("\n")
	}
	return b.String()
}

func webConfigYAML(w *webOptions) string {
	if w == nil {
		return ""
	}
	return fmt.Sprintf("  web_config_file: %q\n", w.ConfigFile)
}

// collector is one running collector process.
type collector struct {
	t        *testing.T
	opts     options
	cmd      *exec.Cmd
	grpcAddr string
	httpAddr string
	stderr   *syncBuffer

	exited   chan struct{} // closed when the process has exited
	exitCode int           // valid once exited is closed
	exitErr  error         // cmd.Wait's error, valid once exited is closed

	conn   *grpc.ClientConn
	ingest pb.IngestServiceClient
	health healthpb.HealthClient
	http   *http.Client
}

// startCollector starts the collector with o on free ports and waits until
// /readyz answers 200 and the gRPC health service SERVING. The process is
// killed at the end of the test if still running; its stderr goes to the test
// log when the test fails.
func startCollector(t *testing.T, o options) *collector {
	t.Helper()
	needBinary(t)
	o = o.withDefaults()
	dir := t.TempDir()
	for attempt := 1; ; attempt++ {
		grpcAddr, httpAddr := freePair(t)
		if o.GRPC != nil && o.GRPC.Socket != "" {
			grpcAddr = "unix://" + o.GRPC.Socket
		}
		path := filepath.Join(dir, fmt.Sprintf("config-%d.yaml", attempt))
		if err := os.WriteFile(path, []byte(configYAML(o, grpcAddr, httpAddr)), 0o600); err != nil {
			t.Fatalf("write config: %v", err)
		}
		c := launch(t, o, path, grpcAddr, httpAddr)
		err := c.waitReady(readyTimeout)
		if err == nil {
			return c
		}
		// A port taken between freePort and the collector's listen is the
		// one failure worth another try.
		if c.hasExited() && strings.Contains(c.stderr.String(), "address already in use") && attempt < 3 {
			t.Logf("collector could not listen (attempt %d), retrying on other ports", attempt)
			continue
		}
		t.Fatalf("collector not ready: %v\nconfig:\n%s", err, configYAML(o, grpcAddr, httpAddr))
	}
}

func launch(t *testing.T, o options, configPath, grpcAddr, httpAddr string) *collector {
	t.Helper()
	c := &collector{
		t: t, opts: o, grpcAddr: grpcAddr, httpAddr: httpAddr,
		stderr: &syncBuffer{},
		exited: make(chan struct{}),
		http:   &http.Client{Timeout: 5 * time.Second},
	}
	if o.Web != nil && o.Web.RootCAs != nil {
		c.http.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: o.Web.RootCAs, MinVersion: tls.VersionTLS12}}
	}
	c.cmd = exec.Command(collectorBin, "--config", configPath)
	c.cmd.Env = append(os.Environ(), o.Env...)
	c.cmd.Stdout = c.stderr
	c.cmd.Stderr = c.stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start collector: %v", err)
	}
	go func() {
		c.exitErr = c.cmd.Wait()
		c.exitCode = c.cmd.ProcessState.ExitCode()
		close(c.exited)
	}()
	conn, err := grpc.NewClient(grpcAddr, o.dialOptions()...)
	if err != nil {
		t.Fatalf("grpc client for %s: %v", grpcAddr, err)
	}
	c.conn = conn
	c.ingest = pb.NewIngestServiceClient(conn)
	c.health = healthpb.NewHealthClient(conn)
	t.Cleanup(func() {
		_ = conn.Close()
		if !c.hasExited() {
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
		if t.Failed() {
			t.Logf("collector output (grpc %s, http %s):\n%s", grpcAddr, httpAddr, c.stderr.String())
		}
	})
	return c
}

func (c *collector) hasExited() bool {
	select {
	case <-c.exited:
		return true
	default:
		return false
	}
}

// waitReady polls /readyz and the gRPC health service until both say ready.
func (c *collector) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := "no probe yet"
	for {
		if c.hasExited() {
			return fmt.Errorf("collector exited with code %d before it was ready: %v", c.exitCode, c.exitErr)
		}
		code, err := c.get("/readyz")
		switch {
		case err != nil:
			last = "/readyz: " + err.Error()
		case code != http.StatusOK:
			last = fmt.Sprintf("/readyz answered %d", code)
		default:
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			resp, err := c.health.Check(ctx, &healthpb.HealthCheckRequest{})
			cancel()
			switch {
			case err != nil:
				last = "grpc health: " + err.Error()
			case resp.GetStatus() != healthpb.HealthCheckResponse_SERVING:
				last = "grpc health: " + resp.GetStatus().String()
			default:
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v: %s", timeout, last)
		}
		time.Sleep(pollInterval)
	}
}

// httpGet fetches path from the HTTP endpoint, over https and with basic
// auth when options.Web asks for them.
func (c *collector) httpGet(path string) (*http.Response, error) {
	scheme := "http"
	if c.opts.Web != nil && c.opts.Web.RootCAs != nil {
		scheme = "https"
	}
	req, err := http.NewRequest(http.MethodGet, scheme+"://"+c.httpAddr+path, nil)
	if err != nil {
		return nil, err
	}
	if c.opts.Web != nil && c.opts.Web.User != "" {
		req.SetBasicAuth(c.opts.Web.User, c.opts.Web.Pass)
	}
	return c.http.Do(req)
}

// get fetches path from the HTTP endpoint and returns the status code.
func (c *collector) get(path string) (int, error) {
	resp, err := c.httpGet(path)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// sigterm sends SIGTERM and returns when it was sent.
func (c *collector) sigterm() time.Time {
	c.t.Helper()
	at := time.Now()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		c.t.Fatalf("send SIGTERM: %v", err)
	}
	return at
}

// waitExit waits up to timeout for the process to exit and returns its exit
// code; it fails the test when the process is still running then.
func (c *collector) waitExit(timeout time.Duration) int {
	c.t.Helper()
	select {
	case <-c.exited:
		return c.exitCode
	case <-time.After(timeout):
		c.t.Fatalf("collector still running %v after SIGTERM", timeout)
		return -1
	}
}

// stop sends SIGTERM and asserts that the collector exits 0 within its grace
// period.
func (c *collector) stop() {
	c.t.Helper()
	sent := c.sigterm()
	code := c.waitExit(c.opts.GracePeriod + 5*time.Second)
	if took := time.Since(sent); took > c.opts.GracePeriod {
		c.t.Errorf("collector took %v to exit after SIGTERM, more than shutdown.grace_period %v", took, c.opts.GracePeriod)
	}
	if code != 0 {
		c.t.Errorf("collector exit code after SIGTERM = %d, want 0", code)
	}
}

// record sends one unary Record and fails the test on an RPC error.
func (c *collector) record(events ...*pb.Event) *pb.RecordResponse {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.ingest.Record(ctx, &pb.RecordRequest{Events: events})
	if err != nil {
		c.t.Fatalf("Record(%d events): %v", len(events), err)
	}
	return resp
}

// scrape fetches the metrics (exporters.prometheus.path) and parses them.
func (c *collector) scrape() (families, string) {
	c.t.Helper()
	fams, text, err := c.tryScrape()
	if err != nil {
		c.t.Fatal(err)
	}
	return fams, text
}

func (c *collector) tryScrape() (families, string, error) {
	resp, err := c.httpGet(c.opts.MetricsPath)
	if err != nil {
		return nil, "", fmt.Errorf("scrape %s: %w", c.opts.MetricsPath, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", fmt.Errorf("read /metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("scrape /metrics: status %d: %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); expfmt.ResponseFormat(resp.Header).FormatType() != expfmt.TypeTextPlain {
		return nil, "", fmt.Errorf("scrape /metrics: content type %q, want the text format", ct)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, "", fmt.Errorf("parse /metrics: %w\n%s", err, body)
	}
	return families(fams), string(body), nil
}

// families is a parsed exposition, by family name.
type families map[string]*dto.MetricFamily

// labels selects series: each named label must have the value given, where
// "" means absent (or empty, which Prometheus treats alike). Labels not named
// are ignored, so otel_scope_* and future labels do not break a match.
type labels map[string]string

func (l labels) String() string {
	parts := make([]string, 0, len(l))
	for k, v := range l {
		parts = append(parts, k+"="+strconv.Quote(v))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func (l labels) match(m *dto.Metric) bool {
	have := make(map[string]string, len(m.GetLabel()))
	for _, lp := range m.GetLabel() {
		have[lp.GetName()] = lp.GetValue()
	}
	for k, v := range l {
		if have[k] != v {
			return false
		}
	}
	return true
}

// series returns the series of family name that sel matches.
func (f families) series(name string, sel labels) []*dto.Metric {
	var out []*dto.Metric
	for _, m := range f[name].GetMetric() {
		if sel.match(m) {
			out = append(out, m)
		}
	}
	return out
}

// value is the sum of the counter, gauge or untyped values of the series
// that sel matches, and how many there were.
func (f families) value(name string, sel labels) (float64, int) {
	var sum float64
	ms := f.series(name, sel)
	for _, m := range ms {
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum, len(ms)
}

// hist sums the histograms that sel matches: count, sum, and the cumulative
// count of the bucket with upper bound le (0 when le is not a bound).
func (f families) hist(name string, sel labels, le float64) (count uint64, sum float64, bucket uint64, n int) {
	for _, m := range f.series(name, sel) {
		h := m.GetHistogram()
		if h == nil {
			continue
		}
		n++
		count += h.GetSampleCount()
		sum += h.GetSampleSum()
		for _, b := range h.GetBucket() {
			if b.GetUpperBound() == le {
				bucket += b.GetCumulativeCount()
			}
		}
	}
	return count, sum, bucket, n
}
