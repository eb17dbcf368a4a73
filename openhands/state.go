package openhands

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
)

// StateStore keeps the translator's state durably: the storage package's
// Store (storage.directory). Per conversation it holds items the feed
// names, each with a value the feed encodes.
//
// The state is written after each batch the processor applied. A crash
// between the two leaves the store one batch behind: the agent-server,
// which got no answer, sends that batch again, and its events' ids
// (derived from the cumulative values) are duplicates in the durable
// dedupe, so nothing counts twice.
type StateStore interface {
	// OpenHandsState calls fn for every stored item; value is only valid
	// during the call.
	OpenHandsState(fn func(conv, item string, value []byte) error) error
	// WriteOpenHandsState drops the conversations in drop, then writes set
	// (conversation -> item -> value; a nil value deletes the item),
	// atomically; synced when storage.sync is on.
	WriteOpenHandsState(drop []string, set map[string]map[string][]byte) error
}

// LegacyStateFile is the file in storage.directory where agentmeter kept
// the feed's state before the store did; New imports it once (see
// Config.ImportStateFile) and removes it.
const LegacyStateFile = "openhands-state.jsonl"

// Item names: the conversation's flags, a usage bucket (+ usage_id), an
// observed response id (+ response_id).
const (
	itemFlags    = "f"
	itemUsage    = 'u'
	itemResponse = 'r'

	flagCreated   = 1
	flagFullState = 2
)

// stateRecord is one change of the translator's state: a usage bucket's
// highest values, a response id whose duration was observed, or a
// conversation's flag. It is also a line of LegacyStateFile, where later
// lines of the same key win.
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

// item is r as a stored item. The flags item is the conversation's flags
// in t (or r's own when t no longer has it), since a record carries only
// the flag it set.
func (t *translator) item(r stateRecord) (name string, value []byte) {
	switch {
	case r.Usage != "":
		v := make([]byte, 0, 5*binary.MaxVarintLen64+8)
		for _, n := range [...]int64{r.Prompt, r.Completion, r.CacheRead, r.CacheWrite, r.Reasoning} {
			v = binary.AppendVarint(v, n)
		}
		return string(itemUsage) + r.Usage, binary.BigEndian.AppendUint64(v, math.Float64bits(r.Cost))
	case r.Response != "":
		return string(itemResponse) + r.Response, []byte{}
	}
	created, full := r.Created, r.FullState
	if cs, ok := t.convs[r.Conv]; ok {
		created, full = created || cs.created, full || cs.sawFullState
	}
	var f byte
	if created {
		f |= flagCreated
	}
	if full {
		f |= flagFullState
	}
	return itemFlags, []byte{f}
}

// decodeItem is the record of a stored item.
func decodeItem(conv, name string, v []byte) (stateRecord, error) {
	r := stateRecord{Conv: conv}
	if _, ok := NormalizeID(conv); !ok {
		return r, fmt.Errorf("conversation id %q is not 32 hex characters", conv)
	}
	switch {
	case name == itemFlags:
		if len(v) != 1 || v[0]&^(flagCreated|flagFullState) != 0 {
			return r, fmt.Errorf("flags %x: want one byte of known flags", v)
		}
		r.Created, r.FullState = v[0]&flagCreated != 0, v[0]&flagFullState != 0
	case len(name) > 1 && name[0] == itemUsage:
		r.Usage = name[1:]
		var n [5]int64
		for i := range n {
			x, k := binary.Varint(v)
			if k <= 0 || x < 0 {
				return r, fmt.Errorf("usage bucket %q: value %d is damaged", r.Usage, i)
			}
			n[i], v = x, v[k:]
		}
		if len(v) != 8 {
			return r, fmt.Errorf("usage bucket %q: %d bytes of cost, want 8", r.Usage, len(v))
		}
		r.Cost = math.Float64frombits(binary.BigEndian.Uint64(v))
		if math.IsNaN(r.Cost) || math.IsInf(r.Cost, 0) || r.Cost < 0 {
			return r, fmt.Errorf("usage bucket %q: cost %v", r.Usage, r.Cost)
		}
		r.Prompt, r.Completion, r.CacheRead, r.CacheWrite, r.Reasoning = n[0], n[1], n[2], n[3], n[4]
	case len(name) > 1 && name[0] == itemResponse:
		if len(v) != 0 {
			return r, fmt.Errorf("response id %q: %d bytes of value, want none", name[1:], len(v))
		}
		r.Response = name[1:]
	default:
		return r, fmt.Errorf("unknown item %q", name)
	}
	return r, nil
}

// loadState restores t from the store. A damaged item is skipped: the
// count of them and the first one's error are returned for the log.
func loadState(st StateStore, t *translator) (skipped int, first error, err error) {
	err = st.OpenHandsState(func(conv, name string, v []byte) error {
		r, err := decodeItem(conv, name, v)
		if err != nil {
			if skipped == 0 {
				first = err
			}
			skipped++
			return nil
		}
		t.apply(r)
		return nil
	})
	if err != nil {
		return 0, nil, fmt.Errorf("load openhands state: %w", err)
	}
	return skipped, first, nil
}

// importFile merges the legacy state file at path into t, then writes t's
// whole state to the store and removes the file (and a rewrite of it a
// crash left behind). A missing file is nothing to import. A torn or
// undecodable line (a crash mid-write) is skipped, as the file's reader
// did. The store's write has the store's durability (synced with
// storage.sync) before the file goes. Until the file is removed an import
// can be repeated: the values are highest values, so merging them twice
// changes nothing.
func importFile(path string, st StateStore, t *translator) (found bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return true, fmt.Errorf("import openhands state %q: %w", path, err)
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r stateRecord
		if json.Unmarshal(sc.Bytes(), &r) == nil {
			t.apply(r)
		}
	}
	err = sc.Err()
	f.Close()
	if err != nil {
		return true, fmt.Errorf("import openhands state %q: %w", path, err)
	}
	if err := st.WriteOpenHandsState(t.takeDropped(), t.itemsOf(t.records())); err != nil {
		return true, fmt.Errorf("import openhands state %q into the store: %w", path, err)
	}
	for _, p := range []string{path + ".tmp", path} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return true, fmt.Errorf("imported openhands state %q, but cannot remove it: %w", p, err)
		}
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return true, nil
}

// itemsOf is recs as the store's items, by conversation.
func (t *translator) itemsOf(recs []stateRecord) map[string]map[string][]byte {
	if len(recs) == 0 {
		return nil
	}
	set := make(map[string]map[string][]byte)
	for _, r := range recs {
		items := set[r.Conv]
		if items == nil {
			items = make(map[string][]byte)
			set[r.Conv] = items
		}
		name, v := t.item(r)
		items[name] = v
	}
	return set
}
