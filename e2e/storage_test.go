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
	if err := os.WriteFile(cfg, []byte(configYAML(opts.withDefaults(), freePort(t), freePort(t))), 0o600); err != nil {
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
