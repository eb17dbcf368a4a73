package storage

import (
	"encoding/binary"
	"hash/crc32"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// settle waits until the merger has nothing left to merge, and the run
// files on disk are the runs listed.
func settle(t *testing.T, s *Store) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s.runs.mu.RLock()
		listed := 0
		for _, runs := range s.runs.gens {
			listed += len(runs)
		}
		idle := len(s.runs.trash) == 0 && s.runs.pickMergeLocked() == nil
		s.runs.mu.RUnlock()
		entries, err := os.ReadDir(s.runs.dir)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if idle && len(entries) == listed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the id runs were still being merged after 20 s: %d files, %d runs listed", len(entries), listed)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func runCount(s *Store, gen int64) int {
	s.runs.mu.RLock()
	defer s.runs.mu.RUnlock()
	return len(s.runs.gens[gen])
}

func runFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, runsDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestIDRunsMergeAndFind: ids written by many snapshots are all found,
// through the merges and a reopen; ids never written are not; a generation
// keeps O(log n) runs; IDs lists each id once.
func TestIDRunsMergeAndFind(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 0)
	rng := rand.New(rand.NewPCG(1, 2))
	const snaps, per = 150, 700 // pages of 511 ids: some runs end mid-page
	var all []uint64
	for i := range snaps {
		hashes := make([]uint64, per)
		for j := range hashes {
			hashes[j] = rng.Uint64()
		}
		all = append(all, hashes...)
		if err := s.WriteSnapshot(Snapshot{Seq: uint64(i + 1), IDs: []GenIDs{{Gen: 3, Hashes: hashes}}}); err != nil {
			t.Fatal(err)
		}
	}
	settle(t, s)
	// 150 tier-0 runs merge into tiers of 4, 16, 64: at most 3 left in each
	// of tiers 0-2 and 2 in tier 3.
	if n := runCount(s, 3); n > 11 {
		t.Errorf("%d runs after merging, want <= 11", n)
	}
	check := func(s *Store) {
		t.Helper()
		for i, h := range all {
			if i%7 != 0 { // a seventh of them: each lookup reads a page a run
				continue
			}
			if ok, err := s.HasID(3, h); !ok || err != nil {
				t.Fatalf("HasID(3, %x) = %v, %v: a written id is lost", h, ok, err)
			}
		}
		for range 2000 {
			h := rng.Uint64()
			if ok, err := s.HasID(3, h); ok || err != nil {
				t.Fatalf("HasID(3, %x) = %v, %v for an id never written", h, ok, err)
			}
		}
		if ok, _ := s.HasID(4, all[0]); ok {
			t.Fatal("an id found in another generation")
		}
		var listed []uint64
		done, err := s.IDs(3, len(all), func(h uint64) { listed = append(listed, h) })
		if err != nil || !done {
			t.Fatalf("IDs = %v, %v", done, err)
		}
		slices.Sort(listed)
		want := slices.Sorted(slices.Values(all))
		if !slices.Equal(listed, want) {
			t.Fatalf("IDs listed %d ids, want the %d written, once each", len(listed), len(want))
		}
		if done, _ := s.IDs(3, len(all)-1, func(uint64) {}); done {
			t.Fatal("IDs with a limit below the count reported all seen")
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, 0)
	defer s.Close()
	check(s)
	if st := s.Stats(); st.DiskBytes < uint64(8*len(all)) {
		t.Errorf("DiskBytes = %d, less than the ids' %d bytes", st.DiskBytes, 8*len(all))
	}
}

// TestIDRunsOrphansRemoved: run files no key lists (a crash between
// writing a run and the commit listing it, or between a merge's commit and
// the removal of its inputs) are removed at open; the listed ones stay.
func TestIDRunsOrphansRemoved(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 0)
	if err := s.WriteSnapshot(Snapshot{Seq: 1, IDs: []GenIDs{{Gen: 1, Hashes: []uint64{5, 6}}}}); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	orphan := filepath.Join(dir, runsDir, "0000000000000001-00000000000000ff.ids")
	if err := os.WriteFile(orphan, make([]byte, pageSize), 0o640); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, 0)
	defer s.Close()
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Errorf("the unlisted run file is still there (%v)", err)
	}
	if names := runFiles(t, dir); len(names) != 1 {
		t.Errorf("run files %v, want the one listed", names)
	}
	if ok, err := s.HasID(1, 6); !ok || err != nil {
		t.Errorf("HasID(1, 6) = %v, %v after the cleanup", ok, err)
	}
}

// TestIDRunsDamaged: a damaged page is an error for the lookup that reads
// it, never a "not seen"; a run file of the wrong size fails the open with
// its name.
func TestIDRunsDamaged(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 0)
	if err := s.WriteSnapshot(Snapshot{Seq: 1, IDs: []GenIDs{{Gen: 1, Hashes: []uint64{5, 6}}}}); err != nil {
		t.Fatal(err)
	}
	names := runFiles(t, dir)
	if len(names) != 1 {
		t.Fatalf("run files %v", names)
	}
	path := filepath.Join(dir, runsDir, names[0])
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff}, pageHeader+8+3); err != nil { // inside id 6
		t.Fatal(err)
	}
	_ = f.Close()
	if ok, err := s.HasID(1, 6); ok || err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("HasID on a damaged page = %v, %v; want a checksum error", ok, err)
	}
	_ = s.Close()
	if err := os.Truncate(path, pageSize/2); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Config{Directory: dir}, nil); err == nil || !strings.Contains(err.Error(), names[0]) {
		t.Errorf("Open with a truncated run: %v, want an error naming %s", err, names[0])
	}
}

// idKey is the key of id hash h in dedupe generation gen in a database
// written before the runs.
func idKey(dst []byte, gen int64, h uint64) []byte {
	dst = append(dst[:0], kindID)
	dst = binary.BigEndian.AppendUint64(dst, uint64(gen))
	return binary.BigEndian.AppendUint64(dst, h)
}

// TestIDKeysMigrated: a database written before the runs (one key per id)
// has its ids moved into runs at open, and its id keys deleted.
func TestIDKeysMigrated(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 0)
	b := s.db.NewBatch()
	var k [17]byte
	for _, gh := range [][2]uint64{{4, 10}, {4, 11}, {5, 10}, {5, 1 << 63}} {
		_ = b.Set(idKey(k[:0], int64(gh[0]), gh[1]), nil, nil)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	s = open(t, dir, 0)
	defer s.Close()
	for _, gh := range [][2]uint64{{4, 10}, {4, 11}, {5, 10}, {5, 1 << 63}} {
		if ok, err := s.HasID(int64(gh[0]), gh[1]); !ok || err != nil {
			t.Errorf("HasID(%d, %x) = %v, %v after the move", gh[0], gh[1], ok, err)
		}
	}
	if ok, _ := s.HasID(4, 1<<63); ok {
		t.Error("an id moved into the wrong generation")
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{kindID}, UpperBound: []byte{kindID + 1}})
	if err != nil {
		t.Fatal(err)
	}
	if it.First() {
		t.Errorf("id key %x is still in Pebble", it.Key())
	}
	_ = it.Close()
}

// TestIDRunsDrop: a generation dropped by a snapshot loses its runs and
// their files, merged or not.
func TestIDRunsDrop(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 0)
	defer s.Close()
	for i := range 9 {
		ids := []GenIDs{{Gen: 1, Hashes: []uint64{uint64(i)}}, {Gen: 2, Hashes: []uint64{uint64(i)}}}
		if err := s.WriteSnapshot(Snapshot{Seq: uint64(i + 1), IDs: ids}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.WriteSnapshot(Snapshot{Seq: 10, DropBefore: 2}); err != nil {
		t.Fatal(err)
	}
	settle(t, s)
	if ok, _ := s.HasID(1, 3); ok {
		t.Error("an id of the dropped generation is still found")
	}
	if ok, _ := s.HasID(2, 3); !ok {
		t.Error("an id of the kept generation is lost")
	}
	for _, name := range runFiles(t, dir) {
		if strings.HasPrefix(name, "0000000000000001-") {
			t.Errorf("run file %s of the dropped generation is still there", name)
		}
	}
}

// TestIDDiskCost measures what one dedupe id takes on disk once merged:
// the figure behind README's disk bound (go test -v -run TestIDDiskCost
// ./storage/).
func TestIDDiskCost(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 0)
	defer s.Close()
	const n, perBatch = 200_000, 4000
	hashes := make([]uint64, perBatch)
	for b := range n / perBatch {
		for i := range hashes {
			hashes[i] = uint64(b*perBatch+i) * 0x9E3779B97F4A7C15 // spread like hashes
		}
		if err := s.WriteSnapshot(Snapshot{Seq: uint64(b + 1), IDs: []GenIDs{{Gen: 1, Hashes: hashes}}}); err != nil {
			t.Fatal(err)
		}
	}
	settle(t, s)
	var size int64
	for _, name := range runFiles(t, dir) {
		st, err := os.Stat(filepath.Join(dir, runsDir, name))
		if err != nil {
			t.Fatal(err)
		}
		size += st.Size()
	}
	per := float64(size) / n
	t.Logf("%.2f bytes on disk per dedupe id (%d ids in %d runs)", per, n, runCount(s, 1))
	if per > 8.5 {
		t.Errorf("%.2f bytes per id, more than the 8.5 README's disk bound assumes", per)
	}
}

// FuzzRunRecord: a run's Pebble record and its pages, as read back from
// disk, are either accepted consistent or refused, never a panic.
func FuzzRunRecord(f *testing.F) {
	r := newIDRuns("", nil)
	meta := encodeRunMeta(&run{tier: 1, n: 600, last: 900, fence: []uint64{1, 800}})
	var page [pageSize]byte
	binary.LittleEndian.PutUint16(page[4:], 2)
	binary.LittleEndian.PutUint64(page[pageHeader:], 1)
	binary.LittleEndian.PutUint64(page[pageHeader+8:], 2)
	binary.LittleEndian.PutUint32(page[:], crc32.Checksum(page[4:], r.castagnoli))
	f.Add(meta, page[:])
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, meta, page []byte) {
		if tier, n, last, fence, err := decodeRunMeta(meta); err == nil {
			if n < 1 || n > len(fence)*pageIDs || last < fence[len(fence)-1] || !slices.IsSorted(fence) {
				t.Fatalf("accepted an inconsistent record: tier %d, %d ids, last %x, fences %x", tier, n, last, fence)
			}
			if got := encodeRunMeta(&run{tier: tier, n: n, last: last, fence: fence}); string(got) != string(meta) {
				t.Fatalf("record %x re-encodes as %x", meta, got)
			}
		}
		if ids, err := r.decodePage(page); err == nil {
			if len(ids) == 0 || len(ids)%8 != 0 || len(ids) > 8*pageIDs {
				t.Fatalf("accepted a page of %d id bytes", len(ids))
			}
		}
	})
}

// TestIDRunRecordsDamaged: a run record that does not parse (too short, its
// counts disagreeing with its pages, pages out of order) or a run key of
// the wrong length fails the open with an error naming it, and the
// database is left as it was.
func TestIDRunRecordsDamaged(t *testing.T) {
	good := encodeRunMeta(&run{tier: 0, n: 2, last: 9, fence: []uint64{5}})
	for name, tc := range map[string]struct {
		key, value []byte
		want       string // in the error: what was found wrong, not a missing file
	}{
		"short record":   {runKey(1, 1), good[:5], "run record of 5 bytes"},
		"count vs pages": {runKey(1, 1), encodeRunMeta(&run{n: 600, last: 9, fence: []uint64{5}}), "600 ids in 1 pages"},
		"pages unsorted": {runKey(1, 1), encodeRunMeta(&run{n: 600, last: 9, fence: []uint64{5, 3}}), "pages out of order"},
		"key length":     {append(runKey(1, 1), 0), good, "dedupe id run key"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir, 0)
			if err := s.db.Set(tc.key, tc.value, pebble.Sync); err != nil {
				t.Fatal(err)
			}
			_ = s.Close()
			_, err := Open(Config{Directory: dir}, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open with a damaged run record: %v, want an error saying %q", err, tc.want)
			}
			// Nothing was removed: the record is still there for whoever mends it.
			db, err := pebble.Open(filepath.Join(dir, "db"), &pebble.Options{Logger: pebbleLogger{log: slog.New(slog.DiscardHandler)}})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, closer, err := db.Get(tc.key); err != nil {
				t.Errorf("the damaged record is gone: %v", err)
			} else {
				_ = closer.Close()
			}
		})
	}
}
