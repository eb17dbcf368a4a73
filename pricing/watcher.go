package pricing

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentmeter/agentmeter/internal/filewatch"
)

// Watcher serves the current price table of a file and reloads it on
// Reload (the collector calls it on SIGHUP) and when the file changes. A
// file that fails to load keeps the previous table in service.
//
// Changes are seen through internal/filewatch: the file's directory is
// watched, so that an editor's rename-and-replace and a Kubernetes
// ConfigMap's symlink swap (..data) are seen. A file that is a symlink into
// another directory is reloaded only when the link itself changes, or on
// Reload.
type Watcher struct {
	path     string // absolute; "" serves Default()
	format   string
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

// NewWatcher loads the price table at path and returns a Watcher serving
// it; an error when it does not load. When path is "" the Watcher serves
// Default() and watches nothing. A nil logger discards.
func NewWatcher(path string, logger *slog.Logger) (*Watcher, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{logger: logger, debounce: filewatch.DefaultDebounce}
	if path == "" {
		w.cur.Store(Default())
		return w, nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("price table path %q: %w", path, err)
	}
	if w.format, err = formatOf(abs); err != nil {
		return nil, err
	}
	w.path = abs
	data, err := os.ReadFile(abs)
	if err != nil {
		return nil, fmt.Errorf("read price table: %w", err)
	}
	t, err := parse(data, w.format)
	if err != nil {
		return nil, fmt.Errorf("load price table %q: %w", abs, err)
	}
	w.lastSum = sha256.Sum256(data)
	w.cur.Store(t)
	return w, nil
}

// Current returns the table in service. It never returns nil.
func (w *Watcher) Current() *Table { return w.cur.Load() }

// Reloads returns how many reloads succeeded and how many failed since
// NewWatcher.
func (w *Watcher) Reloads() (ok, failed uint64) { return w.ok.Load(), w.failed.Load() }

// Reload reads and parses the file again and puts the new table in service.
// On error the previous table stays in service; the error is logged,
// counted and returned. With no file it does nothing.
func (w *Watcher) Reload() error {
	if w.path == "" {
		return nil
	}
	return w.reload("signal", true)
}

// reload loads the file. Unless force, a file whose content is that of the
// last attempt (successful or not) is skipped, uncounted.
func (w *Watcher) reload(trigger string, force bool) error {
	w.reloadMu.Lock()
	defer w.reloadMu.Unlock()
	start := time.Now()
	data, err := os.ReadFile(w.path)
	if err != nil {
		err = fmt.Errorf("read price table: %w", err)
		w.failed.Add(1)
		w.logger.Warn("price table reload failed, keeping the previous table",
			"path", w.path, "trigger", trigger, "version", w.Current().Version(), "err", err)
		return err
	}
	sum := sha256.Sum256(data)
	if !force && sum == w.lastSum {
		return nil
	}
	w.lastSum = sum
	t, err := parse(data, w.format)
	if err != nil {
		err = fmt.Errorf("load price table %q: %w", w.path, err)
		w.failed.Add(1)
		w.logger.Warn("price table reload failed, keeping the previous table",
			"path", w.path, "trigger", trigger, "version", w.Current().Version(), "err", err)
		return err
	}
	w.cur.Store(t)
	w.ok.Add(1)
	w.logger.Info("price table reloaded", "path", w.path, "trigger", trigger,
		"version", t.Version(), "models", t.Models(), "duration", time.Since(start))
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
	if w.path == "" {
		w.started = true
		return nil
	}
	fw, err := filewatch.New([]string{w.path}, w.debounce, func() {
		_ = w.reload("file_change", false) // logged and counted by reload
	}, w.logger.With("path", w.path))
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
