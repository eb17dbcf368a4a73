package storage

import (
	"errors"
	"maps"
	"math"
	"strings"
	"testing"
)

// ohItems is the stored OpenHands state as conv -> item -> value.
func ohItems(t *testing.T, s *Store) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{}
	err := s.OpenHandsState(func(conv, item string, v []byte) error {
		if out[conv] == nil {
			out[conv] = map[string]string{}
		}
		out[conv][item] = string(v)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func equalItems(a, b map[string]map[string]string) bool {
	return maps.EqualFunc(a, b, func(x, y map[string]string) bool { return maps.Equal(x, y) })
}

func TestOpenHandsStateWriteDropReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 0)
	// "ab" is a prefix of "abc": dropping one must leave the other.
	err := s.WriteOpenHandsState(nil, map[string]map[string][]byte{
		"ab":  {"f": {1}, "uagent": []byte("v1"), "r\x00odd": {}},
		"abc": {"f": {3}},
	})
	if err != nil {
		t.Fatal(err)
	}
	// A ledger entry of the same id is another kind, untouched by drops.
	if err := s.WriteSnapshot(Snapshot{Seq: 1, Conversations: map[string][]byte{"ab": []byte("ledger")}}); err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]string{"ab": {"f": "\x01", "uagent": "v1", "r\x00odd": ""}, "abc": {"f": "\x03"}}
	if got := ohItems(t, s); !equalItems(got, want) {
		t.Fatalf("stored %q, want %q", got, want)
	}
	// A nil value deletes an item; a drop and a set of the same
	// conversation in one write leave the set.
	if err := s.WriteOpenHandsState([]string{"ab"}, map[string]map[string][]byte{
		"ab":  {"f": {2}},
		"abc": {"f": nil, "uother": []byte("v2")},
	}); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	s = open(t, dir, 0)
	defer s.Close()
	want = map[string]map[string]string{"ab": {"f": "\x02"}, "abc": {"uother": "v2"}}
	if got := ohItems(t, s); !equalItems(got, want) {
		t.Errorf("after drop, delete and reopen: %q, want %q", got, want)
	}
	if rec, ok, _ := s.Conversation("ab"); !ok || string(rec) != "ledger" {
		t.Errorf("ledger entry of ab = %q %v, want it untouched", rec, ok)
	}
	if err := s.WriteOpenHandsState([]string{"abc"}, nil); err != nil {
		t.Fatal(err)
	}
	if got := ohItems(t, s); !equalItems(got, map[string]map[string]string{"ab": {"f": "\x02"}}) {
		t.Errorf("after dropping abc: %q", got)
	}
}

func TestOpenHandsStateBadConversationIDs(t *testing.T) {
	s := open(t, t.TempDir(), 0)
	defer s.Close()
	for name, w := range map[string]struct {
		drop []string
		set  map[string]map[string][]byte
	}{
		"empty id to set":    {set: map[string]map[string][]byte{"ok": {"f": {1}}, "": {"f": {1}}}},
		"NUL in id to set":   {set: map[string]map[string][]byte{"ok": {"f": {1}}, "a\x00b": {"f": {1}}}},
		"empty id to drop":   {drop: []string{""}, set: map[string]map[string][]byte{"ok": {"f": {1}}}},
		"NUL in id to drop":  {drop: []string{"a\x00"}, set: map[string]map[string][]byte{"ok": {"f": {1}}}},
		"NUL only id to set": {set: map[string]map[string][]byte{"\x00": {"f": {1}}}},
	} {
		err := s.WriteOpenHandsState(w.drop, w.set)
		if err == nil || !strings.Contains(err.Error(), "empty or holds a NUL byte") {
			t.Errorf("%s: %v, want the id refused", name, err)
		}
	}
	if got := ohItems(t, s); len(got) != 0 {
		t.Errorf("refused writes stored %q", got)
	}
	if err := s.WriteOpenHandsState(nil, nil); err != nil {
		t.Errorf("empty write: %v", err)
	}
}

func TestOpenHandsStateDiskFull(t *testing.T) {
	s := open(t, t.TempDir(), math.MaxInt64)
	defer s.Close()
	err := s.WriteOpenHandsState(nil, map[string]map[string][]byte{"c": {"f": {1}}})
	if !errors.Is(err, ErrDiskFull) {
		t.Fatalf("write with no room: %v, want ErrDiskFull", err)
	}
	if got := ohItems(t, s); len(got) != 0 {
		t.Errorf("the refused write stored %q", got)
	}
}

func TestOpenHandsStateScanStopsOnError(t *testing.T) {
	s := open(t, t.TempDir(), 0)
	defer s.Close()
	if err := s.WriteOpenHandsState(nil, map[string]map[string][]byte{"a": {"f": {1}}, "b": {"f": {1}}}); err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop")
	n := 0
	if err := s.OpenHandsState(func(string, string, []byte) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Errorf("scan = %v after %d items, want fn's error after 1", err, n)
	}
}
