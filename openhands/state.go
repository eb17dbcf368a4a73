package openhands

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// stateRecord is one line of the state file: a usage bucket's highest
// values, a response id whose duration was observed, or a conversation's
// flag. Later lines of the same key win.
type stateRecord struct {
	Conv       string  `json:"c"`
	Usage      string  `json:"u,omitempty"`
	Prompt     int64   `json:"p,omitempty"`
	Completion int64   `json:"o,omitempty"`
	CacheRead  int64   `json:"cr,omitempty"`
	CacheWrite int64   `json:"cw,omitempty"`
	Reasoning  int64   `json:"rs,omitempty"`
	Cost       float64 `json:"k,omitempty"`
	Response   string  `json:"r,omitempty"`
	Created    bool    `json:"created,omitempty"`
	FullState  bool    `json:"full,omitempty"`
}

// apply restores one record into t.
func (t *translator) apply(r stateRecord) {
	if _, ok := NormalizeID(r.Conv); !ok {
		return
	}
	cs := t.conv(r.Conv)
	switch {
	case r.Usage != "":
		b, ok := cs.usage[r.Usage]
		if !ok {
			if len(cs.usage) >= maxUsageIDs {
				return
			}
			b = &bucket{}
			cs.usage[r.Usage] = b
		}
		b.prompt, b.completion = max(b.prompt, r.Prompt), max(b.completion, r.Completion)
		b.cacheRead, b.cacheWrite = max(b.cacheRead, r.CacheRead), max(b.cacheWrite, r.CacheWrite)
		b.reasoning, b.cost = max(b.reasoning, r.Reasoning), max(b.cost, r.Cost)
	case r.Response != "":
		if len(cs.latencies) < maxResponseIDs {
			cs.latencies[r.Response] = struct{}{}
		}
	}
	cs.created = cs.created || r.Created
	cs.sawFullState = cs.sawFullState || r.FullState
}

// records is t's whole state as records.
func (t *translator) records() []stateRecord {
	var out []stateRecord
	for id, cs := range t.convs {
		if cs.created || cs.sawFullState {
			out = append(out, stateRecord{Conv: id, Created: cs.created, FullState: cs.sawFullState})
		}
		for u, b := range cs.usage {
			out = append(out, stateRecord{Conv: id, Usage: u, Prompt: b.prompt, Completion: b.completion,
				CacheRead: b.cacheRead, CacheWrite: b.cacheWrite, Reasoning: b.reasoning, Cost: b.cost})
		}
		for r := range cs.latencies {
			out = append(out, stateRecord{Conv: id, Response: r})
		}
	}
	return out
}

// compactAfter is how many lines the state file grows by before it is
// rewritten from the state in memory.
const compactAfter = 200000

// stateFile keeps the translator's state on disk (next to the durable
// processor state), so that a restarted sidecar does not count a
// conversation's cumulative usage again. It is written after each batch
// the processor applied. A crash between the two leaves the file one batch
// behind: the agent-server, which got no answer, sends that batch again,
// and its events' ids (derived from the cumulative values) are duplicates
// in the durable dedupe, so nothing counts twice.
type stateFile struct {
	path  string
	sync  bool
	f     *os.File
	w     *bufio.Writer
	lines int
}

// openState loads path into t (a missing file is an empty state), rewrites
// it compactly and opens it for appending.
func openState(path string, sync bool, t *translator) (*stateFile, error) {
	f, err := os.Open(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("open openhands state %q: %w", path, err)
	default:
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var r stateRecord
			// A torn last line (a crash mid-write) is skipped.
			if json.Unmarshal(sc.Bytes(), &r) == nil {
				t.apply(r)
			}
		}
		err := sc.Err()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("read openhands state %q: %w", path, err)
		}
	}
	s := &stateFile{path: path, sync: sync}
	if err := s.compact(t); err != nil {
		return nil, err
	}
	return s, nil
}

// compact rewrites the file from t's state and reopens it for appending.
func (s *stateFile) compact(t *translator) error {
	if s.f != nil {
		_ = s.f.Close()
		s.f = nil
	}
	tmp := s.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("write openhands state %q: %w", tmp, err)
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	recs := t.records()
	for _, r := range recs {
		_ = enc.Encode(r)
	}
	if err := errors.Join(w.Flush(), f.Sync(), f.Close()); err != nil {
		return fmt.Errorf("write openhands state %q: %w", tmp, err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("replace openhands state %q: %w", s.path, err)
	}
	if d, err := os.Open(filepath.Dir(s.path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	s.f, err = os.OpenFile(s.path, os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("open openhands state %q: %w", s.path, err)
	}
	s.w = bufio.NewWriter(s.f)
	s.lines = len(recs)
	return nil
}

// append writes recs; past compactAfter lines the file is rewritten.
func (s *stateFile) append(recs []stateRecord, t *translator) error {
	if len(recs) == 0 {
		return nil
	}
	enc := json.NewEncoder(s.w)
	for _, r := range recs {
		_ = enc.Encode(r)
	}
	err := s.w.Flush()
	if err == nil && s.sync {
		err = s.f.Sync()
	}
	if err != nil {
		return fmt.Errorf("append to openhands state %q: %w", s.path, err)
	}
	s.lines += len(recs)
	if s.lines > compactAfter+2*len(t.convs) {
		return s.compact(t)
	}
	return nil
}

func (s *stateFile) close() error {
	if s == nil || s.f == nil {
		return nil
	}
	err := errors.Join(s.w.Flush(), s.f.Close())
	s.f = nil
	return err
}
