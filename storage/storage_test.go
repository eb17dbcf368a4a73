package storage

import (
	"errors"
	"math"
	"testing"
)

func open(t *testing.T, dir string, minFree uint64) *Store {
	t.Helper()
	s, err := Open(Config{Directory: dir, MinFreeBytes: minFree}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMetadataSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 0)
	start, seed := s.Start(), s.Seed()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, 0)
	defer s.Close()
	if !s.Start().Equal(start) || s.Seed() != seed {
		t.Errorf("after reopen: start %v seed %d, was %v %d", s.Start(), s.Seed(), start, seed)
	}
}

func TestCommitReplaySnapshot(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 0)
	for seq := uint64(1); seq <= 5; seq++ {
		if err := s.Commit(seq, []byte{byte(seq)}); err != nil {
			t.Fatal(err)
		}
	}
	if ok, _ := s.HasID(7, 300); ok {
		t.Error("HasID(7, 300) = true before a snapshot wrote it")
	}
	ids := []GenIDs{{Gen: 7, Hashes: []uint64{300, 100, 200}}, {Gen: 5, Hashes: []uint64{1}}}
	if err := s.WriteSnapshot(Snapshot{Seq: 3, Aggregate: []byte("agg"), Conversations: map[string][]byte{"c": []byte("rec")}, IDs: ids}); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.HasID(7, 300); !ok || err != nil {
		t.Errorf("HasID(7, 300) = %v, %v; want true", ok, err)
	}
	if ok, _ := s.HasID(6, 300); ok {
		t.Error("HasID(6, 300) = true: generations mixed")
	}
	_ = s.Close()
	s = open(t, dir, 0)
	defer s.Close()
	seq, agg, ok, err := s.LoadSnapshot()
	if err != nil || !ok || seq != 3 || string(agg) != "agg" {
		t.Fatalf("LoadSnapshot = %d %q %v %v", seq, agg, ok, err)
	}
	var replayed []uint64
	if err := s.Replay(seq, func(seq uint64, e []byte) error { replayed = append(replayed, seq); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(replayed) != 2 || replayed[0] != 4 || replayed[1] != 5 {
		t.Errorf("replayed %v after the snapshot at 3, want [4 5]", replayed)
	}
	if rec, ok, _ := s.Conversation("c"); !ok || string(rec) != "rec" {
		t.Errorf("Conversation(c) = %q %v", rec, ok)
	}
	// A snapshot drops the expired generations, and the ids it writes for them.
	if err := s.WriteSnapshot(Snapshot{Seq: 5, IDs: []GenIDs{{Gen: 6, Hashes: []uint64{9}}, {Gen: 8, Hashes: []uint64{9}}}, DropBefore: 8}); err != nil {
		t.Fatal(err)
	}
	for _, gh := range [][2]uint64{{7, 300}, {5, 1}, {6, 9}} {
		if ok, _ := s.HasID(int64(gh[0]), gh[1]); ok {
			t.Errorf("HasID(%d, %d): an id of a dropped generation is still found", gh[0], gh[1])
		}
	}
	if ok, _ := s.HasID(8, 9); !ok {
		t.Error("HasID(8, 9) = false: an id of a kept generation was dropped")
	}
}

func TestDiskFullRefusesBeforeWriting(t *testing.T) {
	s := open(t, t.TempDir(), math.MaxInt64)
	defer s.Close()
	err := s.Commit(1, []byte("x"))
	if !errors.Is(err, ErrDiskFull) {
		t.Fatalf("Commit with no room: %v, want ErrDiskFull", err)
	}
	err = s.WriteSnapshot(Snapshot{Seq: 1, IDs: []GenIDs{{Gen: 0, Hashes: []uint64{1}}}})
	if !errors.Is(err, ErrDiskFull) {
		t.Fatalf("WriteSnapshot with no room: %v, want ErrDiskFull", err)
	}
	if ok, _ := s.HasID(0, 1); ok {
		t.Error("the refused snapshot's id was stored")
	}
	if n := 0; s.Replay(0, func(uint64, []byte) error { n++; return nil }) != nil || n != 0 {
		t.Errorf("the refused batch is in the log")
	}
	if st := s.Stats(); st.DiskFull != 2 {
		t.Errorf("DiskFull = %d, want 2", st.DiskFull)
	}
}
