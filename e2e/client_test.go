package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/agentmeter/agentmeter/client"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// The Go client (package client) against the real binary: a sidecar down
// at start, a restart mid-stream, a full queue, a request too large for the
// sidecar, rejections; totals checked exactly on GetUsage and /metrics.

// startCollectorAt starts a collector with o on the given addresses (a
// client may already be waiting on them).
func startCollectorAt(t *testing.T, o options, grpcAddr, httpAddr string) *collector {
	t.Helper()
	needBinary(t)
	o = o.withDefaults()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(configYAML(o, grpcAddr, httpAddr)), 0o600); err != nil {
		t.Fatalf("write config: %v", err)
	}
	c := launch(t, o, path, grpcAddr, httpAddr)
	if err := c.waitReady(readyTimeout); err != nil {
		t.Fatalf("collector not ready on %s: %v", grpcAddr, err)
	}
	return c
}

// clientTotals is what a test expects of one conversation.
type clientTotals struct {
	calls, input, output int64
	cost                 float64
}

// clientCall is the i-th LLM call of a client test: prompt i+1 tokens,
// 10 completion tokens, a reported cost of (i+1) tenths of a cent.
func clientCall(conv string, i int, tot *clientTotals) *pb.Event {
	if tot != nil {
		tot.calls++
		tot.input += int64(i + 1)
		tot.output += 10
		tot.cost += float64(i+1) / 1000
	}
	return &pb.Event{ConversationId: conv, Agent: "CodeActAgent", Payload: &pb.Event_LlmCall{LlmCall: &pb.LLMCall{
		Provider: "anthropic", RequestModel: "claude-sonnet-4-5", LlmService: "agent",
		PromptTokens: int64(i + 1), CompletionTokens: 10, LatencySeconds: 0.5,
		CostUsd: proto.Float64(float64(i+1) / 1000),
	}}}
}

func newTestClient(t *testing.T, target string, opts ...client.Option) *client.Client {
	t.Helper()
	opts = append([]client.Option{client.WithBackoff(20*time.Millisecond, 200*time.Millisecond)}, opts...)
	c, err := client.New(target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

func flushClient(t *testing.T, c *client.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v (stats %+v)", err, c.Stats())
	}
}

func checkUsage(t *testing.T, c *collector, conv string, want clientTotals) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := pb.NewUsageServiceClient(c.conn).GetUsage(ctx, &pb.GetUsageRequest{ConversationId: conv})
	if err != nil {
		t.Fatalf("GetUsage(%s): %v", conv, err)
	}
	u := resp.GetUsage()
	if u.GetCalls() != want.calls || u.GetTokens().GetInput() != want.input || u.GetTokens().GetOutput() != want.output || !near(u.GetCostUsd(), want.cost) {
		t.Errorf("GetUsage(%s) = calls %d, input %d, output %d, cost %v; want %d, %d, %d, %v",
			conv, u.GetCalls(), u.GetTokens().GetInput(), u.GetTokens().GetOutput(), u.GetCostUsd(),
			want.calls, want.input, want.output, want.cost)
	}
}

func TestClientSidecarDownAtStartQueueFull(t *testing.T) {
	needBinary(t)
	grpcAddr, httpAddr := freePair(t)
	c := newTestClient(t, grpcAddr, client.WithQueueSize(10), client.WithMaxBatch(4))
	var want clientTotals
	accepted := 0
	for i := range 15 {
		var tot *clientTotals
		// The sender holds one batch (up to 4) out of the queue while it
		// retries, so more than 10 fit; which ones is known only from
		// Record's answer.
		ev := clientCall("down-at-start", i, nil)
		if c.Record(ev) {
			accepted++
			tot = &want
			clientCall("down-at-start", i, tot)
		}
	}
	eventually(t, 10*time.Second, "retrying against no sidecar", func() (bool, string) {
		st := c.Stats()
		return st.Retried > 0, fmt.Sprintf("%+v", st)
	})
	st := c.Stats()
	if st.Dropped == 0 || int(st.Queued) != accepted || st.Queued+st.Dropped != 15 {
		t.Fatalf("with the sidecar down and a queue of 10: %+v; want some of 15 dropped, the rest queued", st)
	}

	col := startCollectorAt(t, options{}, grpcAddr, httpAddr)
	flushClient(t, c)
	st = c.Stats()
	if st.Accepted != int64(accepted) || st.Pending != 0 || st.GivenUp != 0 || st.Rejected != 0 {
		t.Errorf("after the sidecar came up: %+v; want all %d queued accepted", st, accepted)
	}
	checkUsage(t, col, "down-at-start", want)
	fams, _ := col.scrape()
	if v, _ := fams.value("agentmeter_receiver_events_total", labels{"event_type": "llm_call", "outcome": "accepted"}); v != float64(accepted) {
		t.Errorf("agentmeter_receiver_events_total{accepted} = %v, want %d", v, accepted)
	}
	t.Logf("sidecar down at start: %d of 15 queued, %d dropped, %d event resends; GetUsage calls %d input %d cost %.3f",
		accepted, st.Dropped, st.Retried, want.calls, want.input, want.cost)
}

func TestClientAcrossRestart(t *testing.T) {
	col1 := startCollector(t, options{GracePeriod: 5 * time.Second})
	c := newTestClient(t, col1.grpcAddr, client.WithMaxBatch(20), client.WithFlushInterval(20*time.Millisecond))

	// Before: flushed and checked on the first process.
	var before clientTotals
	for i := range 50 {
		c.Record(clientCall("restart-before", i, &before))
	}
	flushClient(t, c)
	checkUsage(t, col1, "restart-before", before)

	// During: a steady stream of calls. The first process stops
	// gracefully in the middle of it (every batch it answered was applied,
	// no other), is down for a while, and a new one comes up on the same
	// port; the client resends what was not answered.
	record := func(from, to int) {
		for i := from; i < to; i++ {
			if !c.Record(clientCall("restart-during", i, nil)) {
				t.Errorf("Record #%d = false", i)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	record(0, 100)
	col1.sigterm()
	record(100, 200) // while it drains
	if code := col1.waitExit(15 * time.Second); code != 0 {
		t.Errorf("first collector exit code %d, want 0", code)
	}
	record(200, 300) // while no sidecar runs
	// Every answer the first process gave is in; nothing answers now.
	answeredByFirst := c.Stats().Accepted - before.calls
	col2 := startCollectorAt(t, options{GracePeriod: 5 * time.Second}, col1.grpcAddr, col1.httpAddr)
	record(300, 400)
	flushClient(t, c)

	st := c.Stats()
	if st.Accepted != 450 || st.Duplicates != 0 || st.GivenUp != 0 || st.Pending != 0 || st.Dropped != 0 {
		t.Errorf("client after the restart: %+v; want all 450 accepted once", st)
	}
	// The second process holds exactly what the first did not answer.
	var want clientTotals
	for i := int(answeredByFirst); i < 400; i++ {
		clientCall("", i, &want)
	}
	checkUsage(t, col2, "restart-during", want)
	t.Logf("restart: first process answered %d of 400 calls, second %d; %d event resends",
		answeredByFirst, want.calls, st.Retried)
}

func TestClientSplitsOversizeAndCountsRejections(t *testing.T) {
	col := startCollector(t, options{MaxRecvMsgSizeMiB: 1, MaxEventsPerRequest: 1000})
	c := newTestClient(t, col.grpcAddr,
		client.WithMaxBatch(100000), client.WithMaxBatchBytes(64<<20), client.WithQueueSize(100000),
		client.WithFlushInterval(time.Hour), client.WithAgent(strings.Repeat("a", 200)),
		client.WithLogger(slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))))

	// Sized so that the whole batch is over 1 MiB (ResourceExhausted) and
	// its halves under it but over 1000 events (InvalidArgument).
	sample := clientCall("split", 0, nil)
	sample.EventId = "01234567-89ab-7def-8123-456789abcdef"
	sample.Agent = strings.Repeat("a", 200)
	size := proto.Size(sample) + 16 // + time
	n := (3 << 20) / 2 / size
	if n/2 <= 1000 || n/2*size >= 1<<20 {
		t.Fatalf("events of %d bytes: %d of them do not make the batch this test needs", size, n)
	}
	var want clientTotals
	rejected := 0
	for i := range n {
		if i%100 == 99 {
			ev := clientCall("split", i, nil)
			ev.GetLlmCall().PromptTokens = -1 // rejected by the sidecar
			c.Record(ev)
			rejected++
			continue
		}
		c.Record(clientCall("split", i, &want))
	}
	flushClient(t, c)
	st := c.Stats()
	if st.Accepted != want.calls || st.Rejected != int64(rejected) || st.GivenUp != 0 || st.Pending != 0 {
		t.Errorf("client: %+v; want %d accepted, %d rejected", st, want.calls, rejected)
	}
	checkUsage(t, col, "split", want)

	fams, _ := col.scrape()
	if v, _ := fams.value("agentmeter_receiver_events_total", labels{"event_type": "llm_call", "outcome": "rejected"}); v != float64(rejected) {
		t.Errorf("agentmeter_receiver_events_total{rejected} = %v, want %d: a rejection is never resent", v, rejected)
	}
	if v, _ := fams.value("agentmeter_receiver_events_total", labels{"event_type": "llm_call", "outcome": "accepted"}); v != float64(want.calls) {
		t.Errorf("agentmeter_receiver_events_total{accepted} = %v, want %d", v, want.calls)
	}
	// The halves were refused for their number of events. (The whole
	// batch was refused for its size by gRPC itself, on a stream, which
	// the sidecar does not count; the client's debug log above shows each
	// split.)
	if v, _ := fams.value("agentmeter_grpc_requests_refused_total", labels{"grpc_code": "InvalidArgument"}); v < 1 {
		t.Errorf("agentmeter_grpc_requests_refused_total{grpc_code=\"InvalidArgument\"} = %v: the split path was not exercised", v)
	}
	t.Logf("split: %d events of %d bytes in one batch, %d accepted, %d rejected; GetUsage input %d", n, size, st.Accepted, st.Rejected, want.input)
}

// TestClientTokenOverUnixSocket: the sidecar listens on a Unix socket and
// requires a bearer token; the client reaches it with WithToken and a
// unix:// target. Without the token every call is refused UNAUTHENTICATED:
// not retried, the events given up and counted.
func TestClientTokenOverUnixSocket(t *testing.T) {
	needBinary(t)
	dir := t.TempDir()
	sock := "unix://" + filepath.Join(dir, "agentmeter.sock")
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("client-e2e-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := options{}.withDefaults()
	httpAddr := freePort(t)
	cfg := strings.Replace(configYAML(o, sock, httpAddr), "receiver:\n",
		"receiver:\n  auth:\n    token_file: "+tokenFile+"\n", 1)
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	col := launch(t, o, path, sock, httpAddr)
	if err := col.waitReady(readyTimeout); err != nil {
		t.Fatalf("collector on %s not ready: %v", sock, err)
	}

	c := newTestClient(t, sock, client.WithToken("client-e2e-token"))
	var want clientTotals
	for i := range 20 {
		c.Record(clientCall("token-unix", i, &want))
	}
	flushClient(t, c)
	if st := c.Stats(); st.Accepted != 20 || st.GivenUp != 0 {
		t.Errorf("with the token: %+v, want 20 accepted", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tokenCtx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer client-e2e-token")
	resp, err := pb.NewUsageServiceClient(col.conn).GetUsage(tokenCtx, &pb.GetUsageRequest{ConversationId: "token-unix"})
	if err != nil {
		t.Fatalf("GetUsage: %v", err)
	}
	if u := resp.GetUsage(); u.GetCalls() != want.calls || u.GetTokens().GetInput() != want.input || !near(u.GetCostUsd(), want.cost) {
		t.Errorf("GetUsage = calls %d input %d cost %v, want %d %d %v", u.GetCalls(), u.GetTokens().GetInput(), u.GetCostUsd(), want.calls, want.input, want.cost)
	}

	bad := newTestClient(t, sock, client.WithToken("wrong"))
	none := newTestClient(t, sock)
	for _, cl := range []*client.Client{bad, none} {
		for i := range 3 {
			cl.Record(clientCall("token-unix", 100+i, nil))
		}
		flushClient(t, cl)
		if st := cl.Stats(); st.GivenUp != 3 || st.Retried != 0 || st.Accepted != 0 {
			t.Errorf("without the right token: %+v, want 3 given up at once, not retried", st)
		}
	}
	fams, _ := col.scrape()
	for reason, want := range map[string]float64{"wrong_token": 1, "missing_token": 1} {
		if v, _ := fams.value("agentmeter_receiver_auth_refused_total", labels{"reason": reason}); v != want {
			t.Errorf("agentmeter_receiver_auth_refused_total{reason=%q} = %v, want %v", reason, v, want)
		}
	}
}

// TestClientReplacesIdleStream: the sidecar ends a stream that sends
// nothing for receiver.grpc.receive_timeout; a client whose stream was idle
// longer than WithStreamIdle opens a new one instead of failing once on
// the old one. With a longer WithStreamIdle the cut stream costs a retry,
// which shows that the sidecar did cut it.
func TestClientReplacesIdleStream(t *testing.T) {
	needBinary(t)
	o := options{}.withDefaults()
	grpcAddr, httpAddr := freePair(t)
	cfg := strings.Replace(configYAML(o, grpcAddr, httpAddr), "  grpc:\n", "  grpc:\n    receive_timeout: 1s\n", 1)
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	col := launch(t, o, path, grpcAddr, httpAddr)
	if err := col.waitReady(readyTimeout); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		idle        time.Duration
		wantRetried bool
	}{{500 * time.Millisecond, false}, {time.Hour, true}} {
		c := newTestClient(t, grpcAddr, client.WithStreamIdle(tc.idle))
		c.Record(clientCall("idle", 0, nil))
		flushClient(t, c)
		time.Sleep(2 * time.Second) // past the receive timeout: the sidecar ends the stream
		c.Record(clientCall("idle", 1, nil))
		flushClient(t, c)
		st := c.Stats()
		if st.Accepted != 2 || (st.Retried > 0) != tc.wantRetried {
			t.Errorf("WithStreamIdle(%v): %+v; want 2 accepted, retried %v", tc.idle, st, tc.wantRetried)
		}
	}
}
