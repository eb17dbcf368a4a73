package pricing

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func table(version string) string {
	return fmt.Sprintf("version: %s\nmodels: [{provider: p, name: m, input: 1, output: 2}]\n", version)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for the watcher's goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newTestWatcher(t *testing.T, path string) (*Watcher, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	w, err := NewWatcher(Source{Table: path}, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	w.debounce = 50 * time.Millisecond
	return w, logs
}

func TestWatcherNoPath(t *testing.T) {
	w, err := NewWatcher(Source{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w.Current() != Default() {
		t.Error("Current() is not Default()")
	}
	if err := w.Reload(); err != nil {
		t.Errorf("Reload: %v", err)
	}
	ctx := context.Background()
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, failed := w.Reloads(); ok != 0 || failed != 0 {
		t.Errorf("Reloads() = %d, %d", ok, failed)
	}
}

func TestWatcherLifecycle(t *testing.T) {
	defer goleak.VerifyNone(t)
	path := writeFile(t, t.TempDir(), "prices.yaml", table("v1"))
	ctx := context.Background()

	w, _ := newTestWatcher(t, path)
	for range 2 {
		if err := w.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown without Start: %v", err)
		}
	}
	if err := w.Start(ctx); err == nil {
		t.Error("Start after Shutdown succeeded")
	}

	w, _ = newTestWatcher(t, path)
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Start(ctx); err == nil {
		t.Error("second Start succeeded")
	}
	for range 2 {
		if err := w.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	}
	if w.Current().Version() != "v1" {
		t.Error("Shutdown dropped the table")
	}
}

func TestNewWatcherBadFile(t *testing.T) {
	dir := t.TempDir()
	for _, path := range []string{
		writeFile(t, dir, "bad.yaml", "models: [{provider: p}]"),
		filepath.Join(dir, "missing.yaml"),
		writeFile(t, dir, "prices.txt", table("v1")),
	} {
		if _, err := NewWatcher(Source{Table: path}, nil); err == nil {
			t.Errorf("NewWatcher(%s) succeeded", filepath.Base(path))
		}
	}
}

func TestWatcherReload(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "prices.yaml", table("v1"))
	w, logs := newTestWatcher(t, path)
	if w.Current().Version() != "v1" {
		t.Fatalf("version %q", w.Current().Version())
	}

	writeFile(t, dir, "prices.yaml", table("v2"))
	if err := w.Reload(); err != nil {
		t.Fatal(err)
	}
	if v := w.Current().Version(); v != "v2" {
		t.Errorf("after Reload version = %q, want v2", v)
	}

	writeFile(t, dir, "prices.yaml", "models: [{provider: p, name: m, input: -1, output: 2}]")
	err := w.Reload()
	if err == nil || !strings.Contains(err.Error(), "models[0].input: must not be negative") {
		t.Errorf("Reload of a bad file: %v", err)
	}
	if v := w.Current().Version(); v != "v2" {
		t.Errorf("a bad file replaced the table: version %q", v)
	}
	if ok, failed := w.Reloads(); ok != 1 || failed != 1 {
		t.Errorf("Reloads() = %d, %d; want 1, 1", ok, failed)
	}
	if !strings.Contains(logs.String(), "price table reload failed") || !strings.Contains(logs.String(), "must not be negative") {
		t.Errorf("the failure is not logged:\n%s", logs)
	}
}

func TestWatcherFileChanges(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	path := writeFile(t, dir, "prices.yaml", table("v1"))
	w, logs := newTestWatcher(t, path)
	ctx := context.Background()
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := w.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	}()
	version := func(v string) func() bool { return func() bool { return w.Current().Version() == v } }

	// Written in place.
	writeFile(t, dir, "prices.yaml", table("v2"))
	waitFor(t, "in-place write", version("v2"))

	// An editor's rename-and-replace.
	tmp := writeFile(t, dir, ".prices.yaml.swp", table("v3"))
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "rename-and-replace", version("v3"))

	// Another file of the directory does not matter.
	writeFile(t, dir, "other.yaml", "garbage: [")

	// A bad file keeps the old table and is counted.
	writeFile(t, dir, "prices.yaml", "models: [")
	waitFor(t, "the failed reload", func() bool { _, failed := w.Reloads(); return failed == 1 })
	if v := w.Current().Version(); v != "v3" {
		t.Errorf("bad file: version %q, want v3", v)
	}
	if !strings.Contains(logs.String(), "trigger=file_change") {
		t.Errorf("logs:\n%s", logs)
	}

	// Fixed again.
	writeFile(t, dir, "prices.yaml", table("v4"))
	waitFor(t, "the fix", version("v4"))
	if ok, failed := w.Reloads(); ok != 3 || failed != 1 {
		t.Errorf("Reloads() = %d, %d; want 3, 1", ok, failed)
	}
}

// TestWatcherConfigMapSwap replays how the kubelet updates a mounted
// ConfigMap: the file is a symlink through ..data to a timestamped
// directory, and an update swaps ..data atomically.
func TestWatcherConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	stage := func(name, body string) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, name), "prices.yaml", body)
	}
	symlink := func(target, name string) {
		t.Helper()
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	stage("..2025_01_01_00_00_00.000000001", table("v1"))
	symlink("..2025_01_01_00_00_00.000000001", "..data")
	symlink("..data/prices.yaml", "prices.yaml")

	w, _ := newTestWatcher(t, filepath.Join(dir, "prices.yaml"))
	ctx := context.Background()
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Shutdown(ctx) }()

	stage("..2025_01_01_00_05_00.000000002", table("v2"))
	symlink("..2025_01_01_00_05_00.000000002", "..data_tmp")
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "..2025_01_01_00_00_00.000000001")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the ConfigMap swap", func() bool { return w.Current().Version() == "v2" })
	if ok, failed := w.Reloads(); ok != 1 || failed != 0 {
		t.Errorf("Reloads() = %d, %d; want 1, 0", ok, failed)
	}
}
