package storage

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
)

// The dedupe ids are kept in runs: files of sorted id hashes, 8 bytes an
// id, each listed in Pebble by a key of its own ('r' + gen + run number)
// whose value holds the run's size and the first hash of each of its pages.
// A snapshot writes its ids as one new run per generation (the file synced
// before the Pebble batch that lists it and drops the log entries holding
// those ids), and a merger in the background merges runFanIn runs of one
// tier into one run of the next, so that a generation of n ids has
// O(log n) runs. A lookup reads one page of each run whose range holds the
// hash (the pages' first hashes are in memory), newest run first.
//
// Why not one Pebble key per id, as before: each such key cost ~1 µs of CPU
// through the memtable, the flush and the compactions that merge the
// random keys into the base level, about a quarter of durable mode's CPU at
// full load (README, Storage). A run costs an id 8 bytes, a sort, and one
// sequential rewrite per merge tier.
//
// A run's file is created, written and synced before the Pebble batch that
// lists it commits; a file no key lists (a crash before that commit, or
// after a merge's commit, before its inputs were removed) is removed at
// open. A page carries a CRC-32C of itself: a damaged page is an error,
// never a wrong answer.

// Run files are made of pages: a CRC-32C (Castagnoli) of the rest of the
// page, the number of ids in it (2 bytes), 2 reserved bytes, then the ids,
// little-endian, ascending; zeros after them. Every page but a run's last
// is full.
const (
	pageSize   = 4096
	pageHeader = 8
	pageIDs    = (pageSize - pageHeader) / 8 // 511
	// runFanIn runs of one tier are merged into one run of the next.
	runFanIn = 4
	// runsDir is the directory of the run files, in Config.Directory.
	runsDir = "ids"
	// runMetaFixed is the size of a run's Pebble value before its fences:
	// tier (1), ids (8), last id (8).
	runMetaFixed = 17
)

// run is one file of sorted ids of a generation.
type run struct {
	gen  int64
	num  uint64
	tier uint8
	n    int
	// fence holds the first id of each page; last is the run's last id.
	fence []uint64
	last  uint64
	f     *os.File
}

func (r *run) pages() int { return len(r.fence) }

func (r *run) size() int64 { return int64(r.pages()) * pageSize }

// idRuns is the Store's dedupe ids on disk.
type idRuns struct {
	dir        string
	log        *slog.Logger
	castagnoli *crc32.Table
	pagePool   sync.Pool // *[pageSize]byte

	// wmu orders the changes to the set of runs (a snapshot's new runs, a
	// merge, dropping expired generations) with the Pebble commits that
	// list them; nextNum is the next run's number.
	wmu     sync.Mutex
	nextNum uint64

	// mu guards gens (each generation's runs, oldest first) and trash (runs
	// no key lists any more, whose files the merger removes); lookups hold
	// it for reading.
	mu    sync.RWMutex
	gens  map[int64][]*run
	trash []*run

	bytes atomic.Int64 // the run files' size
	kick  chan struct{}
	stop  chan struct{}
	done  chan struct{}
}

func newIDRuns(dir string, log *slog.Logger) *idRuns {
	r := &idRuns{
		dir:        dir,
		log:        log,
		castagnoli: crc32.MakeTable(crc32.Castagnoli),
		gens:       make(map[int64][]*run),
		kick:       make(chan struct{}, 1),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	r.pagePool.New = func() any { return new([pageSize]byte) }
	return r
}

// runKey is the Pebble key listing run num of generation gen.
func runKey(gen int64, num uint64) []byte {
	k := binary.BigEndian.AppendUint64([]byte{kindRun}, uint64(gen))
	return binary.BigEndian.AppendUint64(k, num)
}

func (r *idRuns) path(gen int64, num uint64) string {
	return filepath.Join(r.dir, fmt.Sprintf("%016x-%016x.ids", uint64(gen), num))
}

// encodeRunMeta is run's Pebble value.
func encodeRunMeta(rn *run) []byte {
	v := make([]byte, runMetaFixed, runMetaFixed+8*len(rn.fence))
	v[0] = rn.tier
	binary.LittleEndian.PutUint64(v[1:], uint64(rn.n))
	binary.LittleEndian.PutUint64(v[9:], rn.last)
	for _, h := range rn.fence {
		v = binary.LittleEndian.AppendUint64(v, h)
	}
	return v
}

// decodeRunMeta parses a run's Pebble value, checking that its parts agree.
func decodeRunMeta(v []byte) (tier uint8, n int, last uint64, fence []uint64, err error) {
	if len(v) < runMetaFixed || (len(v)-runMetaFixed)%8 != 0 {
		return 0, 0, 0, nil, fmt.Errorf("run record of %d bytes", len(v))
	}
	tier = v[0]
	n64 := binary.LittleEndian.Uint64(v[1:])
	last = binary.LittleEndian.Uint64(v[9:])
	pages := (len(v) - runMetaFixed) / 8
	if n64 == 0 || n64 > uint64(pages)*pageIDs || n64 <= uint64(pages-1)*pageIDs {
		return 0, 0, 0, nil, fmt.Errorf("run record: %d ids in %d pages", n64, pages)
	}
	fence = make([]uint64, pages)
	for i := range fence {
		fence[i] = binary.LittleEndian.Uint64(v[runMetaFixed+8*i:])
		if i > 0 && fence[i] <= fence[i-1] {
			return 0, 0, 0, nil, errors.New("run record: pages out of order")
		}
	}
	if last < fence[pages-1] {
		return 0, 0, 0, nil, errors.New("run record: last id before the last page")
	}
	return tier, int(n64), last, fence, nil
}

// decodePage checks page (pageSize bytes) and returns its ids' bytes.
func (r *idRuns) decodePage(page []byte) ([]byte, error) {
	if len(page) != pageSize {
		return nil, fmt.Errorf("id page of %d bytes", len(page))
	}
	if crc32.Checksum(page[4:], r.castagnoli) != binary.LittleEndian.Uint32(page) {
		return nil, errors.New("id page checksum mismatch")
	}
	n := int(binary.LittleEndian.Uint16(page[4:]))
	if n == 0 || n > pageIDs {
		return nil, fmt.Errorf("id page holds %d ids", n)
	}
	return page[pageHeader : pageHeader+8*n], nil
}

// readPage reads page i of rn into buf and returns its ids' bytes.
func (r *idRuns) readPage(rn *run, i int, buf *[pageSize]byte) ([]byte, error) {
	if _, err := rn.f.ReadAt(buf[:], int64(i)*pageSize); err != nil {
		return nil, fmt.Errorf("read dedupe ids %s page %d: %w", filepath.Base(rn.f.Name()), i, err)
	}
	ids, err := r.decodePage(buf[:])
	if err != nil {
		return nil, fmt.Errorf("dedupe ids %s page %d: %w", filepath.Base(rn.f.Name()), i, err)
	}
	if binary.LittleEndian.Uint64(ids) != rn.fence[i] {
		return nil, fmt.Errorf("dedupe ids %s page %d: does not start at its listed id", filepath.Base(rn.f.Name()), i)
	}
	return ids, nil
}

// has reports whether h is in a run of generation gen.
func (r *idRuns) has(gen int64, h uint64) (bool, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	runs := r.gens[gen]
	if len(runs) == 0 {
		return false, nil
	}
	buf := r.pagePool.Get().(*[pageSize]byte)
	defer r.pagePool.Put(buf)
	for _, rn := range slices.Backward(runs) { // the newest first: resends are recent
		if h < rn.fence[0] || h > rn.last {
			continue
		}
		i := sort.Search(len(rn.fence), func(i int) bool { return rn.fence[i] > h }) - 1
		ids, err := r.readPage(rn, i, buf)
		if err != nil {
			return false, err
		}
		n := len(ids) / 8
		j := sort.Search(n, func(j int) bool { return binary.LittleEndian.Uint64(ids[8*j:]) >= h })
		if j < n && binary.LittleEndian.Uint64(ids[8*j:]) == h {
			return true, nil
		}
	}
	return false, nil
}

// scan calls fn for every id of generation gen, up to limit of them, and
// reports whether it saw them all.
func (r *idRuns) scan(gen int64, limit int, fn func(h uint64)) (bool, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	seen := 0
	for _, rn := range r.gens[gen] {
		it := r.newRunIter(rn)
		for it.next() {
			if seen == limit {
				return false, nil
			}
			fn(it.h)
			seen++
		}
		if it.err != nil {
			return false, it.err
		}
	}
	return true, nil
}

// runIter reads a run's ids in order.
type runIter struct {
	r    *idRuns
	rn   *run
	page int
	buf  [pageSize]byte
	ids  []byte
	h    uint64
	err  error
}

func (r *idRuns) newRunIter(rn *run) *runIter { return &runIter{r: r, rn: rn} }

func (it *runIter) next() bool {
	if len(it.ids) == 0 {
		if it.err != nil || it.page == it.rn.pages() {
			return false
		}
		it.ids, it.err = it.r.readPage(it.rn, it.page, &it.buf)
		if it.err != nil {
			return false
		}
		it.page++
	}
	it.h = binary.LittleEndian.Uint64(it.ids)
	it.ids = it.ids[8:]
	return true
}

// runWriter writes a new run file; add takes ascending ids. As with a
// bufio.Writer, the first failure is kept, and finish returns it.
type runWriter struct {
	r    *idRuns
	rn   *run
	bw   *bufio.Writer
	page [pageSize]byte
	k    int // ids in page
	err  error
}

// create starts run num of generation gen at tier.
func (r *idRuns) create(gen int64, num uint64, tier uint8) (*runWriter, error) {
	if err := os.MkdirAll(r.dir, 0o750); err != nil {
		return nil, fmt.Errorf("create dedupe id directory: %w", err)
	}
	f, err := os.OpenFile(r.path(gen, num), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return nil, fmt.Errorf("create dedupe id run: %w", err)
	}
	return &runWriter{r: r, rn: &run{gen: gen, num: num, tier: tier, f: f}, bw: bufio.NewWriterSize(f, 16*pageSize)}, nil
}

// add appends h; an id equal to the last one is written once.
func (w *runWriter) add(h uint64) {
	if w.err != nil {
		return
	}
	if w.rn.n > 0 && h <= w.rn.last {
		if h < w.rn.last {
			w.err = fmt.Errorf("dedupe id run %s: ids out of order", filepath.Base(w.rn.f.Name()))
		}
		return
	}
	if w.k == pageIDs {
		w.flushPage()
	}
	if w.k == 0 {
		w.rn.fence = append(w.rn.fence, h)
	}
	binary.LittleEndian.PutUint64(w.page[pageHeader+8*w.k:], h)
	w.k++
	w.rn.n++
	w.rn.last = h
}

func (w *runWriter) flushPage() {
	clear(w.page[pageHeader+8*w.k:])
	binary.LittleEndian.PutUint16(w.page[4:], uint16(w.k))
	binary.LittleEndian.PutUint32(w.page[:], crc32.Checksum(w.page[4:], w.r.castagnoli))
	w.k = 0
	if _, err := w.bw.Write(w.page[:]); err != nil && w.err == nil {
		w.err = fmt.Errorf("write dedupe id run: %w", err)
	}
}

// finish syncs the file and returns the run, open for reading; nil when no
// id was added. On a failure (its own or add's) the file is removed.
func (w *runWriter) finish() (*run, error) {
	if w.err == nil && w.rn.n == 0 {
		w.abort()
		return nil, nil
	}
	if w.err == nil {
		w.flushPage()
	}
	err := w.err
	if err == nil {
		err = w.bw.Flush()
	}
	if err == nil {
		err = w.rn.f.Sync()
	}
	if err != nil {
		w.abort()
		return nil, fmt.Errorf("write dedupe id run: %w", err)
	}
	w.r.bytes.Add(w.rn.size())
	return w.rn, nil
}

// abort removes the file being written.
func (w *runWriter) abort() {
	_ = w.rn.f.Close()
	_ = os.Remove(w.rn.f.Name())
}

// remove closes and deletes runs that no key lists.
func (r *idRuns) remove(runs []*run) {
	for _, rn := range runs {
		_ = rn.f.Close()
		if err := os.Remove(rn.f.Name()); err != nil && !errors.Is(err, os.ErrNotExist) {
			r.log.Warn("remove a merged or expired dedupe id run", "err", err)
			continue
		}
		r.bytes.Add(-rn.size())
	}
}

// syncDir makes the run files' names durable.
func (r *idRuns) syncDir() error {
	d, err := os.Open(r.dir)
	if err != nil {
		return fmt.Errorf("sync dedupe id directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dedupe id directory: %w", err)
	}
	return nil
}

// writeNew writes the sorted ids of each generation as a new tier-0 run,
// synced, for a snapshot; r.wmu is held. The caller lists them in its
// batch (encodeRunMeta) and installs them after its commit, or removes
// them.
func (r *idRuns) writeNew(byGen map[int64][]uint64) ([]*run, error) {
	var out []*run
	for _, gen := range slices.Sorted(maps.Keys(byGen)) {
		w, err := r.create(gen, r.nextNum, 0)
		var rn *run
		if err == nil {
			r.nextNum++
			for _, h := range byGen[gen] {
				w.add(h)
			}
			rn, err = w.finish()
		}
		if err != nil {
			r.remove(out)
			return nil, err
		}
		if rn != nil {
			out = append(out, rn)
		}
	}
	if len(out) > 0 {
		if err := r.syncDir(); err != nil {
			r.remove(out)
			return nil, err
		}
	}
	return out, nil
}

// install makes committed runs visible to lookups, and moves the runs of
// generations before dropBefore (0: none) to the trash.
func (r *idRuns) install(add []*run, dropBefore int64) {
	r.mu.Lock()
	for _, rn := range add {
		r.gens[rn.gen] = append(r.gens[rn.gen], rn)
	}
	for gen, runs := range r.gens {
		if gen < dropBefore {
			r.trash = append(r.trash, runs...)
			delete(r.gens, gen)
		}
	}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// load opens the runs db lists, and removes the run files it does not.
func (r *idRuns) load(db *pebble.DB) error {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{kindRun}, UpperBound: []byte{kindRun + 1}})
	if err != nil {
		return fmt.Errorf("read dedupe id runs: %w", err)
	}
	defer it.Close()
	listed := make(map[string]bool)
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != 17 {
			return fmt.Errorf("dedupe id run key %x is damaged", k)
		}
		rn := &run{gen: int64(binary.BigEndian.Uint64(k[1:])), num: binary.BigEndian.Uint64(k[9:])}
		if rn.tier, rn.n, rn.last, rn.fence, err = decodeRunMeta(it.Value()); err != nil {
			return fmt.Errorf("dedupe id run %d of generation %d: %w", rn.num, rn.gen, err)
		}
		p := r.path(rn.gen, rn.num)
		if rn.f, err = os.Open(p); err != nil {
			return fmt.Errorf("open dedupe id run: %w", err)
		}
		st, err := rn.f.Stat()
		if err == nil && st.Size() != rn.size() {
			err = fmt.Errorf("%d bytes, its record says %d pages", st.Size(), rn.pages())
		}
		if err != nil {
			_ = rn.f.Close()
			return fmt.Errorf("dedupe id run %s: %w", p, err)
		}
		r.gens[rn.gen] = append(r.gens[rn.gen], rn)
		r.nextNum = max(r.nextNum, rn.num+1)
		r.bytes.Add(rn.size())
		listed[filepath.Base(p)] = true
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("read dedupe id runs: %w", err)
	}
	entries, err := os.ReadDir(r.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list dedupe id runs: %w", err)
	}
	for _, e := range entries {
		if name := e.Name(); !listed[name] && strings.HasSuffix(name, ".ids") {
			if err := os.Remove(filepath.Join(r.dir, name)); err != nil {
				return fmt.Errorf("remove an unlisted dedupe id run: %w", err)
			}
		}
	}
	return nil
}

// closeAll closes every run file, and removes the trash's; the merger has
// stopped.
func (r *idRuns) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.remove(r.trash)
	r.trash = nil
	for _, runs := range r.gens {
		for _, rn := range runs {
			_ = rn.f.Close()
		}
	}
	r.gens = nil
}

// errMergeStopped ends a merge the Store's Close interrupted.
var errMergeStopped = errors.New("storage closing")

// emptyTrash removes the files of the runs no key lists any more.
func (r *idRuns) emptyTrash() {
	r.mu.Lock()
	t := r.trash
	r.trash = nil
	r.mu.Unlock()
	r.remove(t)
}

// pickMerge returns the runFanIn oldest runs of the lowest tier that has
// that many, in the oldest generation with such a tier; nil when none has.
func (r *idRuns) pickMerge() []*run {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.pickMergeLocked()
}

// pickMergeLocked is pickMerge with r.mu held.
func (r *idRuns) pickMergeLocked() []*run {
	for _, gen := range slices.Sorted(maps.Keys(r.gens)) {
		var count [256]int
		lowest := -1
		for _, rn := range r.gens[gen] {
			if count[rn.tier]++; count[rn.tier] == runFanIn && (lowest < 0 || int(rn.tier) < lowest) {
				lowest = int(rn.tier)
			}
		}
		if lowest < 0 {
			continue
		}
		var in []*run
		for _, rn := range r.gens[gen] {
			if int(rn.tier) == lowest && len(in) < runFanIn {
				in = append(in, rn)
			}
		}
		return in
	}
	return nil
}

// mergeLoop merges runs in the background until Close, after each change
// to the set of runs.
func (s *Store) mergeLoop() {
	r := s.runs
	defer close(r.done)
	lastErr := ""
	for {
		select {
		case <-r.stop:
			return
		case <-r.kick:
		}
		for {
			r.emptyTrash()
			in := r.pickMerge()
			if in == nil {
				break
			}
			err := s.merge(in)
			if errors.Is(err, errMergeStopped) {
				return
			}
			if err != nil { // the next snapshot tries again
				if err.Error() != lastErr {
					s.log.Warn("merging dedupe id runs failed; lookups read more runs until it succeeds", "err", err)
					lastErr = err.Error()
				}
				break
			}
			lastErr = ""
		}
	}
}

// merge writes the ids of in (runs of one generation and tier) as one run
// of the next tier, and replaces them with it.
func (s *Store) merge(in []*run) error {
	r := s.runs
	var need int64
	for _, rn := range in {
		need += rn.size()
	}
	if err := s.checkRoom(uint64(need)); err != nil {
		return err
	}
	gen := in[0].gen
	r.wmu.Lock()
	num := r.nextNum
	r.nextNum++
	r.wmu.Unlock()
	w, err := r.create(gen, num, in[0].tier+1)
	if err != nil {
		return err
	}
	its := make([]*runIter, 0, len(in))
	for _, rn := range in {
		if it := r.newRunIter(rn); it.next() {
			its = append(its, it)
		} else if it.err != nil {
			w.abort()
			return it.err
		}
	}
	for n := 0; len(its) > 0; n++ {
		if n%(1<<16) == 0 {
			select {
			case <-r.stop:
				w.abort()
				return errMergeStopped
			default:
			}
		}
		m := 0
		for i := 1; i < len(its); i++ {
			if its[i].h < its[m].h {
				m = i
			}
		}
		w.add(its[m].h)
		if !its[m].next() {
			if its[m].err != nil {
				w.abort()
				return its[m].err
			}
			its = slices.Delete(its, m, m+1)
		}
	}
	out, err := w.finish()
	if err == nil {
		err = r.syncDir()
	}
	if err != nil {
		if out != nil {
			r.remove([]*run{out})
		}
		return err
	}

	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.mu.RLock()
	listed := 0
	for _, rn := range r.gens[gen] {
		if slices.Contains(in, rn) {
			listed++
		}
	}
	r.mu.RUnlock()
	if listed != len(in) { // the generation expired meanwhile
		r.remove([]*run{out})
		return nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	_ = b.Set(runKey(gen, out.num), encodeRunMeta(out), nil)
	for _, rn := range in {
		_ = b.Delete(runKey(gen, rn.num), nil)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		s.writeErrors.Add(1)
		r.remove([]*run{out})
		return fmt.Errorf("list merged dedupe id run: %w", err)
	}
	r.mu.Lock()
	runs := r.gens[gen]
	at := slices.Index(runs, in[0])
	runs = slices.DeleteFunc(runs, func(rn *run) bool { return slices.Contains(in, rn) })
	r.gens[gen] = slices.Insert(runs, at, out)
	r.trash = append(r.trash, in...)
	r.mu.Unlock()
	return nil
}

// migrateIDKeys moves the ids of a database written before the runs (one
// Pebble key each, kind 'd') into runs, one a generation.
func (s *Store) migrateIDKeys() error {
	r := s.runs
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{kindID}, UpperBound: []byte{kindID + 1}})
	if err != nil {
		return fmt.Errorf("read stored ids: %w", err)
	}
	defer it.Close()
	var out []*run
	var w *runWriter
	fail := func(err error) error {
		if w != nil {
			w.abort()
		}
		r.remove(out)
		return fmt.Errorf("move stored ids into runs: %w", err)
	}
	next := func() error {
		if w == nil {
			return nil
		}
		rn, err := w.finish()
		w = nil
		if rn != nil {
			out = append(out, rn)
		}
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != 17 {
			return fail(fmt.Errorf("id key %x is damaged", k))
		}
		gen := int64(binary.BigEndian.Uint64(k[1:]))
		if w == nil || w.rn.gen != gen {
			if err := next(); err != nil {
				return fail(err)
			}
			if w, err = r.create(gen, r.nextNum, 0); err != nil {
				return fail(err)
			}
			r.nextNum++
		}
		w.add(binary.BigEndian.Uint64(k[9:]))
	}
	if err := it.Error(); err != nil {
		return fail(err)
	}
	if err := next(); err != nil {
		return fail(err)
	}
	if len(out) == 0 {
		return nil
	}
	if err := r.syncDir(); err != nil {
		return fail(err)
	}
	b := s.db.NewBatch()
	defer b.Close()
	for _, rn := range out {
		_ = b.Set(runKey(rn.gen, rn.num), encodeRunMeta(rn), nil)
	}
	_ = b.DeleteRange([]byte{kindID}, []byte{kindID + 1}, nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return fail(err)
	}
	s.log.Info("moved the stored dedupe ids into runs", "runs", len(out))
	r.install(out, 0)
	return nil
}
