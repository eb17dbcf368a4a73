package openhands

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentmeter/agentmeter/receiver"
	"github.com/agentmeter/agentmeter/storage"
)

// openStore opens the real store in dir (not synced: the tests restart the
// handler, not the machine).
func openStore(t *testing.T, dir string, minFree uint64) *storage.Store {
	t.Helper()
	s, err := storage.Open(storage.Config{Directory: dir, NoSync: true, MinFreeBytes: minFree}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startWith builds a handler on st (nil = memory only).
func startWith(t *testing.T, cfg Config, st StateStore, log *slog.Logger) (*Handler, *recorder, http.Handler, error) {
	t.Helper()
	rec := &recorder{}
	cfg.Path, cfg.APIKeys, cfg.MaxBodyBytes = "/openhands", []string{"k"}, 1<<20
	cfg.Limits = receiver.Limits{MaxFutureSkew: time.Minute}
	deps := Deps{Consumer: rec, Durations: rec, Logger: log}
	if st != nil {
		deps.State = st
	}
	h, err := New(cfg, deps)
	if err != nil {
		return nil, nil, nil, err
	}
	mux := http.NewServeMux()
	for _, r := range h.Routes() {
		mux.Handle(r.Pattern, r.Handler)
	}
	return h, rec, mux, nil
}

func mustStart(t *testing.T, cfg Config, st StateStore) (*Handler, *recorder, http.Handler) {
	t.Helper()
	h, rec, mux, err := startWith(t, cfg, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	return h, rec, mux
}

func mustPost(t *testing.T, mux http.Handler, path string, body []byte) {
	t.Helper()
	if w := post(t, mux, "/openhands"+path, "k", "", body); w.Code != 200 {
		t.Fatalf("POST %s: %d %s", path, w.Code, w.Body)
	}
}

// storedItems is the store's OpenHands state as conv -> item count.
func storedItems(t *testing.T, st *storage.Store) map[string]int {
	t.Helper()
	out := map[string]int{}
	if err := st.OpenHandsState(func(conv, _ string, _ []byte) error { out[conv]++; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkNothingNew posts the rest of the sample conversation to a handler
// that knows its first part: nothing is counted again.
func checkNothingNew(t *testing.T, mux http.Handler, rec *recorder) {
	t.Helper()
	mustPost(t, mux, "/conversations", sample(t, "POST_conversations_start.json"))
	mustPost(t, mux, "/events/"+conv, sample(t, "POST_events_batch2.json"))
	mustPost(t, mux, "/events/"+conv, sample(t, "POST_events_batch3_timer_flush.json"))
	// batch 3 carried call 2's totals already: nothing is new.
	if calls := rec.calls(); len(calls) != 0 || len(rec.durations) != 0 {
		t.Errorf("calls %v, durations %v; want none (all seen before)", calls, rec.durations)
	}
	for _, ev := range rec.events {
		if ev.GetConversation().GetCreated() != nil {
			t.Error("created again")
		}
	}
}

// firstPart posts the sample conversation's start, batch 1 and batch 3.
func firstPart(t *testing.T, mux http.Handler, rec *recorder) {
	t.Helper()
	mustPost(t, mux, "/conversations", sample(t, "POST_conversations_start.json"))
	mustPost(t, mux, "/events/"+conv, sample(t, "POST_events_batch1.json"))
	mustPost(t, mux, "/events/"+conv, sample(t, "POST_events_batch3_timer_flush.json"))
	if n := len(rec.durations); n != 2 {
		t.Fatalf("first part: %d durations, want 2", n)
	}
}

// The store carries the highest values seen, the observed response ids and
// the conversation's flags across a restart: the next snapshot counts only
// its increase.
func TestStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir, 0)
	h1, rec1, mux1 := mustStart(t, Config{}, st)
	firstPart(t, mux1, rec1)
	if err := h1.Close(); err != nil {
		t.Fatal(err)
	}
	_ = st.Close()

	st = openStore(t, dir, 0)
	defer st.Close()
	_, rec2, mux2 := mustStart(t, Config{}, st)
	checkNothingNew(t, mux2, rec2)
}

// writeLegacy writes t's state as the state file of earlier versions
// (one JSON record a line), plus garbage and a torn last line as a crash
// mid-write leaves it.
func writeLegacy(t *testing.T, path string, tr *translator) {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for _, r := range tr.records() {
		if err := enc.Encode(r); err != nil {
			t.Fatal(err)
		}
	}
	b.WriteString("not json\n")
	b.WriteString(`{"c":"` + conv + `","u":"agent","p":99`)
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// A state file of an earlier version in storage.directory is imported into
// the store once and removed; its highest values merge with the store's
// (the higher wins).
func TestStateFileImportedOnceAndRemoved(t *testing.T) {
	dir := t.TempDir()
	legacy := filepath.Join(dir, LegacyStateFile)
	// The earlier version's state: the conversation's first part.
	h0, rec0, mux0 := mustStart(t, Config{}, nil)
	firstPart(t, mux0, rec0)
	writeLegacy(t, legacy, h0.tr)
	// A rewrite a crash cut short.
	if err := os.WriteFile(legacy+".tmp", []byte(`{"c":`), 0o600); err != nil {
		t.Fatal(err)
	}
	// The store already knows another conversation, and a lower value of
	// the file's bucket.
	other := strings.Repeat("ab", 16)
	st := openStore(t, dir, 0)
	if err := st.WriteOpenHandsState(nil, map[string]map[string][]byte{
		other: {itemFlags: {flagCreated}},
		conv:  {string(itemUsage) + "agent": usageValue(1, 1, 0, 0, 0, 0.0001)},
	}); err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	_, rec1, mux1, err := startWith(t, Config{ImportStateFile: legacy}, st, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{legacy, legacy + ".tmp"} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after the import: %v, want it removed", filepath.Base(p), err)
		}
	}
	if !strings.Contains(logs.String(), "imported") {
		t.Errorf("no log line says the file was imported:\n%s", logs.String())
	}
	if items := storedItems(t, st); items[other] != 1 || items[conv] != len(h0.tr.records()) {
		t.Errorf("stored items per conversation %v, want %s: 1 and %s: %d", items, other, conv, len(h0.tr.records()))
	}
	checkNothingNew(t, mux1, rec1)
	_ = st.Close()

	// Once: the next start finds no file, and the store has it all.
	st = openStore(t, dir, 0)
	defer st.Close()
	_, rec2, mux2 := mustStart(t, Config{ImportStateFile: legacy}, st)
	checkNothingNew(t, mux2, rec2)
}

// usageValue is a usage bucket item's value.
func usageValue(p, c, cr, cw, rs int64, cost float64) []byte {
	_, v := (&translator{}).item(stateRecord{Conv: conv, Usage: "x", Prompt: p, Completion: c, CacheRead: cr, CacheWrite: cw, Reasoning: rs, Cost: cost})
	return v
}

func TestStateImportBadInput(t *testing.T) {
	dir := t.TempDir()
	legacy := filepath.Join(dir, LegacyStateFile)
	t.Run("no store", func(t *testing.T) {
		_, _, _, err := startWith(t, Config{ImportStateFile: legacy}, nil, nil)
		if err == nil || !strings.Contains(err.Error(), "no store") {
			t.Errorf("New = %v, want an error saying there is no store", err)
		}
	})
	t.Run("a directory", func(t *testing.T) {
		if err := os.Mkdir(legacy, 0o700); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(legacy)
		st := openStore(t, dir, 0)
		defer st.Close()
		_, _, _, err := startWith(t, Config{ImportStateFile: legacy}, st, nil)
		if err == nil || !strings.Contains(err.Error(), legacy) {
			t.Errorf("New = %v, want an error naming %s", err, legacy)
		}
		if fi, err := os.Stat(legacy); err != nil || !fi.IsDir() {
			t.Errorf("the directory is gone: %v", err)
		}
		if items := storedItems(t, st); len(items) != 0 {
			t.Errorf("stored %v from a failed import", items)
		}
	})
	t.Run("a line over 1 MiB", func(t *testing.T) {
		line := `{"c":"` + conv + `","r":"` + strings.Repeat("x", 1<<20) + `"}` + "\n"
		if err := os.WriteFile(legacy, []byte(`{"c":"`+conv+`","created":true}`+"\n"+line), 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(legacy)
		st := openStore(t, dir, 0)
		defer st.Close()
		_, _, _, err := startWith(t, Config{ImportStateFile: legacy}, st, nil)
		if err == nil || !strings.Contains(err.Error(), "too long") {
			t.Errorf("New = %v, want the long line named", err)
		}
		if _, err := os.Stat(legacy); err != nil {
			t.Errorf("the file was removed after a failed import: %v", err)
		}
	})
	t.Run("store full", func(t *testing.T) {
		h0, rec0, mux0 := mustStart(t, Config{}, nil)
		firstPart(t, mux0, rec0)
		writeLegacy(t, legacy, h0.tr)
		defer os.Remove(legacy)
		st := openStore(t, t.TempDir(), 1<<62)
		defer st.Close()
		_, _, _, err := startWith(t, Config{ImportStateFile: legacy}, st, nil)
		if !errors.Is(err, storage.ErrDiskFull) {
			t.Errorf("New = %v, want ErrDiskFull", err)
		}
		if _, err := os.Stat(legacy); err != nil {
			t.Errorf("the file was removed though the import failed: %v", err)
		}
	})
}

// Damaged stored items are skipped with a warning; the rest is loaded.
func TestStoredStateDamagedItemsSkipped(t *testing.T) {
	st := openStore(t, t.TempDir(), 0)
	defer st.Close()
	if err := st.WriteOpenHandsState(nil, map[string]map[string][]byte{
		conv: {
			itemFlags:                   {flagCreated},
			string(itemUsage) + "bad":   {1, 2},
			string(itemResponse) + "r1": {9},
			"zunknown":                  {},
		},
		"not-an-id": {itemFlags: {flagCreated}},
	}); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	_, rec, mux, err := startWith(t, Config{}, st, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "damaged items skipped") || !strings.Contains(logs.String(), "items=4") {
		t.Errorf("log does not name the 4 damaged items:\n%s", logs.String())
	}
	mustPost(t, mux, "/conversations", sample(t, "POST_conversations_start.json"))
	for _, ev := range rec.events {
		if ev.GetConversation().GetCreated() != nil {
			t.Error("created again: the valid flags item was not loaded")
		}
	}
}

// The stored state is bounded like the memory: a conversation evicted at
// MaxConversations is dropped from the store, also when a restart has a
// lower bound.
func TestStoredStateBoundedByMaxConversations(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir, 0)
	_, _, mux := mustStart(t, Config{MaxConversations: 2}, st)
	start := sample(t, "POST_conversations_start.json")
	var ids []string
	for i := range 3 {
		id := fmt.Sprintf("%032x", i+1)
		ids = append(ids, id)
		mustPost(t, mux, "/conversations", bytes.Replace(start, []byte("0f4c3b2a-7d1e-4c5b-9a8f-2e6d1c0b9a87"), []byte(id), 1))
	}
	items := storedItems(t, st)
	if len(items) != 2 || items[ids[0]] != 0 {
		t.Errorf("stored conversations %v, want the last two of %v", items, ids)
	}
	_ = st.Close()
	st = openStore(t, dir, 0)
	defer st.Close()
	mustStart(t, Config{MaxConversations: 1}, st)
	if items := storedItems(t, st); len(items) != 1 {
		t.Errorf("after a restart bounded to 1: stored %v", items)
	}
}

// Response ids cleared at maxResponseIDs are deleted from the store too.
func TestStoredResponseIDsBounded(t *testing.T) {
	st := openStore(t, t.TempDir(), 0)
	defer st.Close()
	h, _, _ := mustStart(t, Config{}, st)
	h.mu.Lock()
	defer h.mu.Unlock()
	var journal []stateRecord
	for i := range maxResponseIDs + 1 {
		b := &batch{}
		h.tr.duration(b, conv, h.tr.conv(conv), "m", fmt.Sprintf("resp-%d", i), 1)
		journal = append(journal, b.journal...)
		if i%10000 == 9999 || i >= maxResponseIDs-1 {
			if err := h.save(journal); err != nil {
				t.Fatal(err)
			}
			journal = nil
		}
		if i == maxResponseIDs-1 {
			if n := storedItems(t, st)[conv]; n != maxResponseIDs {
				t.Fatalf("%d response items stored at the bound, want %d", n, maxResponseIDs)
			}
		}
	}
	if n := storedItems(t, st)[conv]; n != 1 {
		t.Errorf("%d response items stored after the clear at %d, want 1", n, maxResponseIDs)
	}
}

// A store that refuses the write (disk full) does not lose the batch: it
// is applied and answered 200, the stored state lags, and the error is
// logged.
func TestStateWriteRefusedBatchStillApplied(t *testing.T) {
	st := openStore(t, t.TempDir(), 1<<62)
	defer st.Close()
	var logs bytes.Buffer
	_, rec, mux, err := startWith(t, Config{}, st, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	mustPost(t, mux, "/events/"+conv, sample(t, "POST_events_batch1.json"))
	if calls := rec.calls(); len(calls) != 1 {
		t.Errorf("%d calls, want 1", len(calls))
	}
	if !strings.Contains(logs.String(), "openhands state not written") {
		t.Errorf("the refused write is not logged:\n%s", logs.String())
	}
}

// FuzzStateItem: any stored item decodes or is refused without panicking,
// and what decodes encodes back to the same record.
func FuzzStateItem(f *testing.F) {
	f.Add(conv, itemFlags, []byte{flagCreated | flagFullState})
	f.Add(conv, "uagent", usageValue(11873, 600, 0, 11850, 0, 0.0427))
	f.Add(conv, "rresp-1", []byte{})
	f.Add("zz", "x", []byte{0xff})
	f.Fuzz(func(t *testing.T, c, name string, v []byte) {
		r, err := decodeItem(c, name, v)
		if err != nil {
			return
		}
		n2, v2 := (&translator{}).item(r)
		r2, err := decodeItem(c, n2, v2)
		if err != nil || r2 != r || n2 != name {
			t.Errorf("%q %q %x decodes to %+v, encodes to %q %x, decodes to %+v, %v", c, name, v, r, n2, v2, r2, err)
		}
	})
}

// A batch the processor refuses leaves no trace in the store, but a
// conversation it evicted from memory is dropped from the store all the
// same (the eviction is not undone).
func TestStoredStateOfRefusedBatch(t *testing.T) {
	st := openStore(t, t.TempDir(), 0)
	defer st.Close()
	_, rec, mux := mustStart(t, Config{MaxConversations: 1}, st)
	mustPost(t, mux, "/conversations", sample(t, "POST_conversations_start.json"))
	if items := storedItems(t, st); len(items) != 1 || items[conv] == 0 {
		t.Fatalf("stored %v, want %s", items, conv)
	}
	rec.fail = errors.New("storage unavailable")
	other := strings.Repeat("cd", 16)
	if w := post(t, mux, "/openhands/events/"+other, "k", "", sample(t, "POST_events_batch1.json")); w.Code != 503 {
		t.Fatalf("refused batch: %d %s, want 503", w.Code, w.Body)
	}
	if items := storedItems(t, st); len(items) != 0 {
		t.Errorf("stored %v after the refused batch, want nothing: %s evicted, %s not applied", items, conv, other)
	}
}
