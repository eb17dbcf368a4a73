package pricing

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentmeter/agentmeter/internal/filewatch"
)

// Watcher serves the current price table of a Source (a table file and
// overrides) and reloads it on Reload (the collector calls it on SIGHUP)
// and when either file changes. Files that fail to load keep the previous
// table in service.
//
// Changes are seen through internal/filewatch: the file's directory is
// watched, so that an editor's rename-and-replace and a Kubernetes
// ConfigMap's symlink swap (..data) are seen. A file that is a symlink into
// another directory is reloaded only when the link itself changes, or on
// Reload.
type Watcher struct {
	src      Source // absolute paths; no files: serves Default()
	logger   *slog.Logger
	debounce time.Duration

	cur        atomic.Pointer[Table]
	ok, failed atomic.Uint64

	reloadMu sync.Mutex // serialises reloads; guards lastSum
	lastSum  [sha256.Size]byte

	mu      sync.Mutex // guards the lifecycle fields below
	started bool
	stopped bool
	fw      *filewatch.Watcher
}

// NewWatcher loads the price table of src and returns a Watcher serving
// it; an error when it does not load. With neither a table nor overrides
// the Watcher serves Default() and watches nothing. A nil logger discards.
func NewWatcher(src Source, logger *slog.Logger) (*Watcher, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{logger: logger, debounce: filewatch.DefaultDebounce}
	for _, p := range []*string{&src.Table, &src.Overrides} {
		if *p == "" {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return nil, fmt.Errorf("price table path %q: %w", *p, err)
		}
		*p = abs
	}
	w.src = src
	table, overrides, err := src.read()
	if err != nil {
		return nil, err
	}
	t, err := src.build(table, overrides)
	if err != nil {
		return nil, err
	}
	w.lastSum = sumOf(table, overrides)
	w.cur.Store(t)
	w.logLoaded(t, "start", 0)
	return w, nil
}

func sumOf(table, overrides []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write(table)
	h.Write([]byte{0})
	h.Write(overrides)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// files returns the files the Watcher serves.
func (w *Watcher) files() []string {
	var out []string
	for _, p := range []string{w.src.Table, w.src.Overrides} {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

func (w *Watcher) logLoaded(t *Table, trigger string, took time.Duration) {
	rep := t.Report()
	attrs := []any{"table", w.src.Table, "overrides", w.src.Overrides, "trigger", trigger,
		"version", t.Version(), "format", t.Format(), "source", t.Source(),
		"models", t.Models(), "skipped_entries", rep.SkippedTotal(), "conflicts", len(rep.Conflicts)}
	if trigger != "start" {
		attrs = append(attrs, "duration", took)
	}
	w.logger.Info("price table loaded", attrs...)
}

// Current returns the table in service. It never returns nil.
func (w *Watcher) Current() *Table { return w.cur.Load() }

// Reloads returns how many reloads succeeded and how many failed since
// NewWatcher.
func (w *Watcher) Reloads() (ok, failed uint64) { return w.ok.Load(), w.failed.Load() }

// Reload reads and parses the files again and puts the new table in
// service. On error the previous table stays in service; the error is
// logged, counted and returned. With no files it does nothing.
func (w *Watcher) Reload() error {
	if len(w.files()) == 0 {
		return nil
	}
	return w.reload("signal", true)
}

// reload loads the files. Unless force, files whose content is that of the
// last attempt (successful or not) are skipped, uncounted.
func (w *Watcher) reload(trigger string, force bool) error {
	w.reloadMu.Lock()
	defer w.reloadMu.Unlock()
	start := time.Now()
	table, overrides, err := w.src.read()
	if err != nil {
		w.failed.Add(1)
		w.logger.Warn("price table reload failed, keeping the previous table",
			"table", w.src.Table, "overrides", w.src.Overrides, "trigger", trigger, "version", w.Current().Version(), "err", err)
		return err
	}
	sum := sumOf(table, overrides)
	if !force && sum == w.lastSum {
		return nil
	}
	w.lastSum = sum
	t, err := w.src.build(table, overrides)
	if err != nil {
		w.failed.Add(1)
		w.logger.Warn("price table reload failed, keeping the previous table",
			"table", w.src.Table, "overrides", w.src.Overrides, "trigger", trigger, "version", w.Current().Version(), "err", err)
		return err
	}
	w.cur.Store(t)
	w.ok.Add(1)
	w.logLoaded(t, trigger, time.Since(start))
	return nil
}

// Start watches the file's directory until Shutdown. It returns an error
// when called twice or after Shutdown, or when the directory cannot be
// watched. ctx is not retained. With no file it does nothing.
func (w *Watcher) Start(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.stopped:
		return errors.New("price table watcher: start after shutdown")
	case w.started:
		return errors.New("price table watcher: already started")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(w.files()) == 0 {
		w.started = true
		return nil
	}
	fw, err := filewatch.New(w.files(), w.debounce, func() {
		_ = w.reload("file_change", false) // logged and counted by reload
	}, w.logger.With("table", w.src.Table, "overrides", w.src.Overrides))
	if err != nil {
		return fmt.Errorf("watch price table: %w", err)
	}
	if err := fw.Start(ctx); err != nil {
		return fmt.Errorf("watch price table: %w", err)
	}
	w.started, w.fw = true, fw
	return nil
}

// Shutdown stops watching and waits for the watch goroutine, or for ctx.
// It is safe without Start and idempotent. The current table stays in
// service.
func (w *Watcher) Shutdown(ctx context.Context) error {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return nil
	}
	w.stopped = true
	fw := w.fw
	w.mu.Unlock()
	if fw == nil {
		return nil
	}
	if err := fw.Shutdown(ctx); err != nil {
		return fmt.Errorf("price table watcher: %w", err)
	}
	return nil
}
