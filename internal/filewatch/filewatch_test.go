package filewatch

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitFor polls until n reaches want, or fails after a deadline.
func waitFor(t *testing.T, n *atomic.Int64, want int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for n.Load() < want {
		if time.Now().After(deadline) {
			t.Fatalf("callbacks = %d after 30s, want %d", n.Load(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWatchesFilesInSeveralDirectories(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	fa, fb := filepath.Join(a, "token"), filepath.Join(b, "tls.crt")
	for _, f := range []string{fa, fb, filepath.Join(a, "other")} {
		if err := os.WriteFile(f, []byte("1"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var calls atomic.Int64
	w, err := New([]string{fa, fb}, 20*time.Millisecond, func() { calls.Add(1) }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer w.Shutdown(context.Background())

	// A file not watched changes nothing.
	if err := os.WriteFile(filepath.Join(a, "other"), []byte("2"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // a wrong callback would have come by now
	if n := calls.Load(); n != 0 {
		t.Fatalf("callbacks after an unwatched file changed = %d, want 0", n)
	}
	// Rename-and-replace, as editors and cert-manager do.
	tmp := filepath.Join(a, ".token.tmp")
	if err := os.WriteFile(tmp, []byte("2"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, fa); err != nil {
		t.Fatal(err)
	}
	waitFor(t, &calls, 1)
	if err := os.WriteFile(fb, []byte("2"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, &calls, 2)
}

// TestKubernetesSymlinkSwap: a mounted Secret or ConfigMap is a symlink
// through ..data, which Kubernetes swaps atomically.
func TestKubernetesSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	for _, v := range []string{"..v1", "..v2"} {
		if err := os.Mkdir(filepath.Join(dir, v), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, v, "token"), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("..v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..data", "token"), filepath.Join(dir, "token")); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	w, err := New([]string{filepath.Join(dir, "token")}, 20*time.Millisecond, func() { calls.Add(1) }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer w.Shutdown(context.Background())
	if err := os.Symlink("..v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, &calls, 1)
}

func TestLifecycle(t *testing.T) {
	w, err := New([]string{filepath.Join(t.TempDir(), "f")}, 0, func() {}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown without Start: %v", err)
	}
	if err := w.Start(context.Background()); err == nil {
		t.Error("Start after Shutdown succeeded")
	}
	w2, _ := New([]string{filepath.Join(t.TempDir(), "f")}, 0, func() {}, nil)
	if err := w2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := w2.Start(context.Background()); err == nil {
		t.Error("second Start succeeded")
	}
	for range 2 {
		if err := w2.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	missing, _ := New([]string{"/nonexistent-dir-for-filewatch/f"}, 0, func() {}, nil)
	if err := missing.Start(context.Background()); err == nil {
		t.Error("Start on a missing directory succeeded")
	}
}
