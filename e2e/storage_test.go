package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// mountTmpfs mounts a tmpfs of sizeMiB on a new directory, unmounted when the
// test ends (after the collectors started later are killed). Without the
// capability the test skips, or fails under CI=true.
func mountTmpfs(t *testing.T, sizeMiB int) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm", sizeMiB), "tmpfs", dir).CombinedOutput()
	if err != nil {
		msg := fmt.Sprintf("mount a %d MiB tmpfs (needs root or CAP_SYS_ADMIN): %v: %s", sizeMiB, err, out)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// bigBatch is n LLM calls of conversation conv, with ids that take room.
func bigBatch(prefix, conv string, n int) []*pb.Event {
	evs := make([]*pb.Event, n)
	pad := strings.Repeat("x", 100)
	for i := range evs {
		evs[i] = simpleCall(fmt.Sprintf("%s-%d-%s", prefix, i, pad), "disk-model", 100, 10)
		evs[i].ConversationId = conv
	}
	return evs
}

// TestStorageDiskFull fills a small tmpfs: ingest answers RESOURCE_EXHAUSTED,
// counts it, keeps serving, and what it acknowledged is exactly what it
// counts, before and after a kill -9.
func TestStorageDiskFull(t *testing.T) {
	dir := mountTmpfs(t, 96)
	opts := options{Storage: &storageOptions{Directory: dir, MinFreeMiB: 48}}
	c := startCollector(t, opts)
	acked, refused := 0, 0
	var refusal error
	for i := 0; i < 2000 && refused == 0; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := c.ingest.Record(ctx, &pb.RecordRequest{Events: bigBatch(fmt.Sprintf("b%d", i), "disk-conv", 500)})
		cancel()
		switch {
		case err == nil && resp.GetAccepted() == 500:
			acked += 500
		case err != nil:
			refused++
			refusal = err
		default:
			t.Fatalf("batch %d: %v", i, resp)
		}
	}
	if refused == 0 {
		t.Fatalf("%d events acknowledged and no refusal: the disk never filled", acked)
	}
	if status.Code(refusal) != codes.ResourceExhausted {
		t.Fatalf("refusal on a full disk: %v, want ResourceExhausted", refusal)
	}
	t.Logf("%d events acknowledged before the disk filled; refusal: %v", acked, refusal)

	check := func(c *collector, what string) {
		t.Helper()
		fams, _ := c.scrape()
		if v, _ := fams.value("agentmeter_llm_tokens_total", labels{"gen_ai_request_model": "disk-model", "gen_ai_token_type": "input"}); int(v) != 100*acked {
			t.Errorf("%s: input tokens %v, want %d (%d acknowledged events)", what, v, 100*acked, acked)
		}
		u, err := pb.NewUsageServiceClient(c.conn).GetUsage(context.Background(), &pb.GetUsageRequest{ConversationId: "disk-conv"})
		if err != nil || u.GetUsage().GetCalls() != int64(acked) {
			t.Errorf("%s: GetUsage: %v, %d calls, want %d", what, err, u.GetUsage().GetCalls(), acked)
		}
	}
	fams, _ := c.scrape()
	if v, _ := fams.value("agentmeter_storage_write_failures_total", labels{"reason": "disk_full"}); v < 1 {
		t.Errorf("agentmeter_storage_write_failures_total{reason=disk_full} = %v, want >= 1", v)
	}
	if v, _ := fams.value("agentmeter_grpc_requests_refused_total", labels{"grpc_code": "ResourceExhausted"}); v < 1 {
		t.Errorf("agentmeter_grpc_requests_refused_total{grpc_code=ResourceExhausted} = %v, want >= 1", v)
	}
	if v, _ := fams.value("agentmeter_storage_size_bytes", nil); v <= 0 {
		t.Errorf("agentmeter_storage_size_bytes = %v, want > 0", v)
	}
	check(c, "full disk")
	// Still serving: another batch is refused again, or accepted when a
	// compaction has freed room meanwhile.
	resp, err := c.ingest.Record(context.Background(), &pb.RecordRequest{Events: bigBatch("again", "disk-conv", 1)})
	switch {
	case err == nil && resp.GetAccepted() == 1:
		acked++
	case status.Code(err) != codes.ResourceExhausted:
		t.Errorf("another batch on the full disk: %v, %v; want ResourceExhausted or accepted", resp, err)
	}
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-c.exited
	check(startCollector(t, opts), "after kill -9")
}

// TestStorageTornTail cuts the end off the write-ahead log after a kill -9,
// as a crash in the middle of a write would: the collector starts, and every
// batch is there whole or not at all. A damaged manifest stops the start
// with an error naming the storage.
func TestStorageTornTail(t *testing.T) {
	dir := t.TempDir()
	opts := options{Storage: &storageOptions{Directory: dir, SnapshotInterval: time.Hour}}
	c := startCollector(t, opts)
	const batches, size = 40, 20
	for i := range batches {
		resp := c.record(bigBatch(fmt.Sprintf("torn%d", i), fmt.Sprintf("torn-conv-%d", i), size)...)
		if resp.GetAccepted() != size {
			t.Fatalf("batch %d: %v", i, resp)
		}
	}
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-c.exited
	wals, _ := filepath.Glob(filepath.Join(dir, "db", "*.log"))
	if len(wals) == 0 {
		t.Fatal("no write-ahead log in the storage directory")
	}
	slices.Sort(wals)
	wal := wals[len(wals)-1]
	fi, err := os.Stat(wal)
	if err != nil {
		t.Fatal(err)
	}
	// Cut into the last records, mid-record.
	cut := fi.Size() - 3*size*150 - 7
	if err := os.Truncate(wal, cut); err != nil {
		t.Fatal(err)
	}
	c = startCollector(t, opts)
	usage := pb.NewUsageServiceClient(c.conn)
	whole, gone := 0, 0
	for i := range batches {
		resp, err := usage.GetUsage(context.Background(), &pb.GetUsageRequest{ConversationId: fmt.Sprintf("torn-conv-%d", i)})
		switch {
		case status.Code(err) == codes.NotFound:
			gone++
		case err != nil:
			t.Fatalf("GetUsage: %v", err)
		case resp.GetUsage().GetCalls() == size:
			if gone > 0 {
				t.Errorf("batch %d is there after a lost batch: the log was not cut at its tail", i)
			}
			whole++
		default:
			t.Errorf("batch %d half applied: %d calls of %d", i, resp.GetUsage().GetCalls(), size)
		}
	}
	if gone == 0 {
		t.Errorf("cutting %d bytes off the log lost no batch: the test cut nothing", fi.Size()-cut)
	}
	// Resending the lost batches counts them once.
	for i := whole; i < batches; i++ {
		if resp := c.record(bigBatch(fmt.Sprintf("torn%d", i), fmt.Sprintf("torn-conv-%d", i), size)...); resp.GetAccepted() != size {
			t.Errorf("batch %d resent after the torn tail: %v, want all accepted", i, resp)
		}
	}
	t.Logf("after cutting %d bytes off the log: %d batches whole, %d gone (resent)", fi.Size()-cut, whole, gone)
	c.stop()

	// A damaged manifest: the collector refuses to start, exit code 1.
	manifests, _ := filepath.Glob(filepath.Join(dir, "db", "MANIFEST-*"))
	if len(manifests) == 0 {
		t.Fatal("no manifest")
	}
	for _, m := range manifests {
		if err := os.WriteFile(m, []byte("this is not a manifest"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	grpcAddr, httpAddr := freePair(t)
	if err := os.WriteFile(cfg, []byte(configYAML(opts.withDefaults(), grpcAddr, httpAddr)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(collectorBin, "--config", cfg).CombinedOutput()
	if code := exitCode(err); code != 1 || !strings.Contains(string(out), "open storage") {
		t.Errorf("start on a damaged manifest: exit %d, want 1 with an error naming the storage:\n%s", code, out)
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

// TestStorageKill9AfterPriceReload: calls sent without a cost are priced by
// table v1; the table is reloaded (v2 prices the model ten times dearer and
// prices a model v1 did not), then the collector is killed -9 before any
// snapshot. After the restart, the log replay gives back the cost, the
// unpriced calls and the budget crossings acknowledged before the crash,
// not v2's.
func TestStorageKill9AfterPriceReload(t *testing.T) {
	table := func(version string, input float64, late bool) string {
		s := priceTable(version, input, 0)
		if late {
			s += "  - provider: testco\n    name: late-model\n    input: 1\n    output: 1\n"
		}
		return s
	}
	path := filepath.Join(t.TempDir(), "prices.yaml")
	writeAtomically(t, path, table("v1", 1, false)) // USD per million tokens
	opts := options{PricingTable: path, Storage: &storageOptions{Directory: t.TempDir(), SnapshotInterval: time.Hour}}
	c := startCollector(t, opts)
	const conv = "reload-conv"
	ev := func(id, model string) *pb.Event {
		return call{id: id, conv: conv, agent: "E2EAgent", provider: "testco", model: model, respModel: model,
			prompt: 100_000, latency: 0.5}.event()
	}
	// $1 budget; under v1 each call of test-model costs $0.1, under v2 $1.
	events := []*pb.Event{{EventId: "created", ConversationId: conv, Agent: "E2EAgent",
		Payload: &pb.Event_Conversation{Conversation: &pb.ConversationEvent{Kind: &pb.ConversationEvent_Created{
			Created: &pb.ConversationCreated{MaxBudgetUsd: proto.Float64(1)}}}}}}
	for i := range 6 {
		events = append(events, ev(fmt.Sprintf("t%d", i), "test-model"))
	}
	events = append(events, ev("l1", "late-model"), ev("l2", "late-model"))
	for i := 0; i < len(events); i += 3 { // a few log entries
		if resp := c.record(events[i:min(i+3, len(events))]...); int(resp.GetAccepted()) != min(3, len(events)-i) {
			t.Fatalf("record: %v", resp)
		}
	}
	usage := func(c *collector) *pb.ConversationUsage {
		t.Helper()
		resp, err := pb.NewUsageServiceClient(c.conn).GetUsage(context.Background(), &pb.GetUsageRequest{ConversationId: conv})
		if err != nil {
			t.Fatalf("GetUsage: %v", err)
		}
		return resp.GetUsage()
	}
	type totals struct{ computed, unpriced, cross50, cross80, cross100 float64 }
	scraped := func(c *collector) totals {
		t.Helper()
		fams, _ := c.scrape()
		var tot totals
		tot.computed, _ = fams.value("agentmeter_llm_cost_usd_total", labels{"cost_source": "computed"})
		tot.unpriced, _ = fams.value("agentmeter_llm_unpriced_calls_total", nil)
		tot.cross50, _ = fams.value("agentmeter_budget_threshold_crossings_total", labels{"threshold": "50"})
		tot.cross80, _ = fams.value("agentmeter_budget_threshold_crossings_total", labels{"threshold": "80"})
		tot.cross100, _ = fams.value("agentmeter_budget_threshold_crossings_total", labels{"threshold": "100"})
		return tot
	}
	want, wantTotals := usage(c), scraped(c)
	if !near(want.GetComputedCostUsd(), 0.6) || want.GetUnpricedCalls() != 2 || want.GetBudgetExceeded() ||
		!near(wantTotals.computed, 0.6) || wantTotals.unpriced != 2 || wantTotals.cross50 != 1 || wantTotals.cross80 != 0 {
		t.Fatalf("under v1: %v, %+v; want $0.6 computed, 2 unpriced, the 50%% threshold crossed only", want, wantTotals)
	}

	writeAtomically(t, path, table("v2", 10, true))
	if err := c.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "price table v2 in service", func() (bool, string) {
		got, n := c.scrapeValue("agentmeter_pricing_table_info", labels{"version": "v2"})
		return got == 1 && n == 1, fmt.Sprintf("value %v in %d series", got, n)
	})
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-c.exited

	c = startCollector(t, opts)
	defer c.stop()
	if got := usage(c); !proto.Equal(got, want) {
		t.Errorf("after the reload and a kill -9:\n%v\nwant (as acknowledged before it)\n%v", got, want)
	}
	if got := scraped(c); got != wantTotals {
		t.Errorf("/metrics after the reload and a kill -9: %+v, want %+v", got, wantTotals)
	}
	// A call after the restart meets v2.
	c.record(ev("l3", "late-model"))
	if got := usage(c); got.GetUnpricedCalls() != 2 || !near(got.GetComputedCostUsd(), 0.7) {
		t.Errorf("a call under v2: %d unpriced, $%v computed; want 2, $0.7", got.GetUnpricedCalls(), got.GetComputedCostUsd())
	}
}
