// Package filewatch calls a function when files change on disk: the one
// reload idiom of the collector, shared by the price table and the ingest
// auth files (token, certificates).
//
// A Watcher watches the files' directories, not the files, so that it sees
// an editor's rename-and-replace and a Kubernetes ConfigMap or Secret's
// symlink swap (..data). A file that is a symlink into another directory is
// seen only when the link itself changes. Changes are debounced: editors
// and Kubernetes replace a file in several steps. The callback decides what
// a change means (callers skip content they already have, keep what they
// serve when the new content does not load, log and count).
package filewatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultDebounce is how long a Watcher waits after the last change before
// it calls back.
const DefaultDebounce = 200 * time.Millisecond

// Watcher calls OnChange after a quiet period following a change to any of
// its files. OnChange runs on the Watcher's goroutine, one call at a time.
type Watcher struct {
	files    map[string][]string // directory -> base names watched in it
	onChange func()
	logger   *slog.Logger
	debounce time.Duration

	mu      sync.Mutex // guards the lifecycle fields below
	started bool
	stopped bool
	fsw     *fsnotify.Watcher
	stop    chan struct{}
	done    chan struct{}
}

// New returns a Watcher of files (made absolute) calling onChange after
// debounce (DefaultDebounce when 0). Nothing is watched until Start. A nil
// logger discards.
func New(files []string, debounce time.Duration, onChange func(), logger *slog.Logger) (*Watcher, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if debounce <= 0 {
		debounce = DefaultDebounce
	}
	w := &Watcher{files: map[string][]string{}, onChange: onChange, logger: logger, debounce: debounce}
	for _, f := range files {
		abs, err := filepath.Abs(f)
		if err != nil {
			return nil, fmt.Errorf("watch %q: %w", f, err)
		}
		dir, base := filepath.Dir(abs), filepath.Base(abs)
		if !slices.Contains(w.files[dir], base) {
			w.files[dir] = append(w.files[dir], base)
		}
	}
	return w, nil
}

// Start watches the directories until Shutdown. It returns an error when
// called twice or after Shutdown, or when a directory cannot be watched.
// ctx is not retained.
func (w *Watcher) Start(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.stopped:
		return errors.New("file watcher: start after shutdown")
	case w.started:
		return errors.New("file watcher: already started")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch files: %w", err)
	}
	for dir := range w.files {
		if err := fsw.Add(dir); err != nil {
			_ = fsw.Close()
			return fmt.Errorf("watch directory %q: %w", dir, err)
		}
	}
	w.started, w.fsw = true, fsw
	w.stop, w.done = make(chan struct{}), make(chan struct{})
	go w.loop(fsw, w.stop, w.done)
	return nil
}

// loop owns the debounce timer. It calls back after a quiet period
// following any event about a watched file or a Kubernetes "..data"-style
// entry of a watched directory.
func (w *Watcher) loop(fsw *fsnotify.Watcher, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-stop:
			return
		case ev, ok := <-fsw.Events:
			if !ok {
				return
			}
			dir, name := filepath.Dir(ev.Name), filepath.Base(ev.Name)
			if slices.Contains(w.files[dir], name) || strings.HasPrefix(name, "..") {
				timer.Reset(w.debounce)
			}
		case err, ok := <-fsw.Errors:
			if !ok {
				return
			}
			w.logger.Warn("file watch error", "err", err)
		case <-timer.C:
			w.onChange()
		}
	}
}

// Shutdown stops watching and waits for the watch goroutine, or for ctx.
// It is safe without Start and idempotent.
func (w *Watcher) Shutdown(ctx context.Context) error {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return nil
	}
	w.stopped = true
	fsw, stop, done := w.fsw, w.stop, w.done
	w.mu.Unlock()
	if fsw == nil {
		return nil
	}
	close(stop)
	select {
	case <-done:
	case <-ctx.Done():
		_ = fsw.Close()
		return fmt.Errorf("file watcher shutdown: %w", ctx.Err())
	}
	return fsw.Close()
}
