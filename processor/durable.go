package processor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/greatroar/blobloom"
	"github.com/klauspost/compress/s2"
	"google.golang.org/protobuf/proto"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
	"github.com/agentmeter/agentmeter/storage"
)

// Durable mode (Deps.Store set). A batch goes through four steps:
//
//  1. reserve: under dmu, each event id is looked up (memory, then disk when
//     memory does not hold the whole window) and the new ones are reserved
//     as pending for this batch, which gets the next log sequence number. A
//     batch meeting an id pending in another batch waits for that one to
//     end, then looks again: it is a duplicate only if the other was stored.
//  2. write: the new LLM calls are priced (outside mu), and the new events
//     go to the storage log with those prices in one synced write;
//     concurrent batches share the fsync (group commit).
//  3. apply: in sequence order (the order of the log, so that a replay
//     after a crash rebuilds the same state), under mu, with the prices
//     stored: a replay applies the same prices even when the price table
//     changed in between.
//  4. release: the ids become committed (in the same mu section as the
//     apply), or, when the write failed, are forgotten, and nothing was
//     applied: the client's retry is not a duplicate.
//
// A committed id is held in memory (unflushed) until the next snapshot
// writes it, with the snapshot's other ids, as a sorted run of ids that the
// snapshot's batch lists as it drops the log entries holding them
// (storage/idruns.go): until then the log has it, and a restart's replay
// commits it again.
//
// The receiver acknowledges after Consume returns nil, so every
// acknowledged event is on disk. A crash between write and acknowledgement
// leaves an event stored but unacknowledged: its resend is a duplicate.
//
// Restart = the last snapshot (aggregate totals and the list of conversations
// in memory) + a replay of the log entries after it. Conversations are stored
// one record each, written by snapshots; between two snapshots, those dropped
// from memory wait in p.evicted, so that the records on disk always match the
// snapshot the log is replayed onto.

// ErrPanic is returned for a batch whose application panicked (a bug).
var ErrPanic = errors.New("processor: internal error")

// errStopped is returned for batches after Shutdown.
var errStopped = errors.New("processor: shut down")

// inflight is a batch between reserve and release.
type inflight struct {
	done chan struct{}
}

// memGen is the memory copy of one dedupe generation's ids.
type memGen struct {
	gen int64
	ids map[uint64]struct{}
	// complete: ids holds every id of gen stored so far, so a miss needs no
	// disk lookup.
	complete bool
	// filter is a bloom filter of every id of gen stored so far, while
	// filterN <= filterOverfill × filterCap: an id it does not hold is not
	// on disk either, so most new ids need no disk lookup. Past that (or
	// when a restart found more ids than that) it is not used.
	filter  *blobloom.Filter
	filterN int
	usable  bool
}

// newMemGen returns an empty generation whose filter holds filterCap ids.
func newMemGen(gen int64, filterCap int) memGen {
	return memGen{gen: gen, ids: make(map[uint64]struct{}),
		filter: blobloom.New(uint64(filterCap)*filterBitsPerID, filterHashes), usable: true}
}

// filterHas reports whether h may be in the filter; true when it is unusable.
func (m *memGen) filterHas(h uint64) bool {
	return !m.usable || m.filter.Has(h)
}

func (m *memGen) filterAdd(h uint64, capacity int) {
	if !m.usable {
		return
	}
	if m.filterN >= filterOverfill*capacity {
		m.usable = false // saturated: it would rule out ever fewer ids
		return
	}
	m.filter.Add(h)
	m.filterN++
}

// filterPerMemID is the filter's capacity per id the memory maps hold: a
// filter takes 1.25 bytes an id, so it covers twenty times the ids for
// about the memory of the map.
const filterPerMemID = 20

// The id filters are blocked bloom filters (github.com/greatroar/blobloom):
// an id's bits are all in one 64-byte block, so adding or testing an id
// touches one cache line where a classic filter touches one per bit (the
// filters are megabytes, far larger than the CPU caches: with
// bits-and-blooms/bloom and 4 bits an id they took a tenth of durable
// mode's CPU). The id is already a keyed 64-bit hash, which blobloom takes
// as it is. At filterBitsPerID bits an id at capacity, filterHashes bits
// give about 1% false positives (blobloom.FPRate; TestIDFilterFPRate).
//
// Past its capacity a filter still rules out most ids that are not in it,
// each a disk lookup spared (a Pebble get, microseconds): it is used up to
// filterOverfill times its capacity, where about a third of those ids get
// through (TestIDFilterFPRate), and dropped after.
const (
	filterBitsPerID = 10
	filterHashes    = 6
	filterOverfill  = 3
)

// durableDedupe finds the ids of the dedupe window in storage, with the
// most recent of them in memory. Ids are kept in generations of one window:
// an id is remembered for at least the window and at most twice that. The
// hash is keyed by a random seed kept in the store. Guarded by
// Processor.dmu.
type durableDedupe struct {
	window    int64
	memMax    int
	filterCap int
	seed      uint64
	digest    *xxhash.Digest
	gens      [2]memGen
	pending   map[uint64]*inflight
	// dropBefore: disk generations before it are expired; the next
	// snapshot deletes them.
	dropBefore int64

	// Scratch of classify, reused batch after batch: every event's id
	// hash, and the generations that may hold it (mayHold).
	all []uint64
	may []uint8

	// Committed ids not on disk yet: by batch, the ids of the batches
	// since the last snapshot (unflushed), and those the snapshot being
	// written holds (flushing); the ones that did not fit in gens' maps
	// are also in the overflow sets, for lookups.
	unflushed        []storage.GenIDs
	unflushedN       int
	overflow         *idSet
	flushingOverflow *idSet
}

// idSet holds the committed ids past the memory maps until a snapshot
// stores them: added to batch after batch, looked up only for the ids the
// filters cannot rule out (a few in a thousand), and emptied whole. The
// hashes go into 256 lists by their top byte: an add appends to one of
// them, whose ends stay in the CPU cache, where inserting a random hash
// into a map missed it (a map insert was about 60% of the commit of a
// batch's ids in the perf profile of the README's Storage section); a
// lookup scans one list, 1/256 of the set; and an id takes 8 bytes, 16
// at most with the lists' spare room, against ~40 in a map.
type idSet struct {
	lists [256][]uint64
}

func (s *idSet) add(h uint64) { s.lists[h>>56] = append(s.lists[h>>56], h) }

func (s *idSet) has(h uint64) bool { return slices.Contains(s.lists[h>>56], h) }

// len is the number of ids held.
func (s *idSet) len() int {
	n := 0
	for _, l := range s.lists {
		n += len(l)
	}
	return n
}

// addAll adds every id of o (none of them in s).
func (s *idSet) addAll(o *idSet) {
	for i := range o.lists {
		s.lists[i] = append(s.lists[i], o.lists[i]...)
	}
}

// reset empties s, keeping its lists' room for the next ids.
func (s *idSet) reset() {
	for i := range s.lists {
		s.lists[i] = s.lists[i][:0]
	}
}

// idFlushEvery is the number of unflushed ids at which a snapshot is taken;
// past idBacklogMax, new batches are refused until one succeeds.
const (
	idFlushEvery = 1 << 16
	idBacklogMax = 4 * idFlushEvery
)

// errIDBacklog refuses a batch while snapshots fail to write the ids.
var errIDBacklog = fmt.Errorf("%w: the dedupe ids could not be written for a while", ErrStorageFull)

func newDurableDedupe(window time.Duration, maxIDs, filterBytes int, store *storage.Store, now int64) (*durableDedupe, error) {
	if window <= 0 {
		return nil, nil
	}
	seed := store.Seed()
	d := &durableDedupe{
		window:           int64(window),
		memMax:           max(maxIDs/2, 1),
		filterCap:        max(max(maxIDs/2, 1)*filterPerMemID, filterBytes*8/filterBitsPerID),
		seed:             seed,
		digest:           xxhash.NewWithSeed(seed),
		pending:          make(map[uint64]*inflight),
		overflow:         new(idSet),
		flushingOverflow: new(idSet),
	}
	// After a restart, memory starts with the ids stored in the window's
	// generations when they fit; otherwise it misses go to disk until
	// the generation ends.
	g := d.gen(now)
	for _, gg := range []int64{g - 1, g} {
		m := newMemGen(gg, d.filterCap)
		all, err := store.IDs(gg, filterOverfill*d.filterCap, func(h uint64) {
			if len(m.ids) < d.memMax {
				m.ids[h] = struct{}{}
			}
			m.filterAdd(h, d.filterCap)
		})
		if err != nil {
			return nil, err
		}
		m.complete = all && len(m.ids) == m.filterN
		m.usable = m.usable && all
		d.gens[gg&1] = m
	}
	return d, nil
}

func (d *durableDedupe) gen(now int64) int64 { return now / d.window }

func (d *durableDedupe) hash(id string) uint64 {
	d.digest.ResetWithSeed(d.seed)
	_, _ = d.digest.WriteString(id)
	return d.digest.Sum64()
}

// slot returns the memory generation gen, starting it when it is newer than
// the one in its slot; nil when gen is older than what memory holds.
func (d *durableDedupe) slot(gen int64) *memGen {
	m := &d.gens[gen&1]
	switch {
	case m.gen == gen:
		return m
	case m.gen > gen:
		return nil
	}
	m.gen, m.complete = gen, true
	clear(m.ids)
	m.filter.Clear()
	m.filterN, m.usable = 0, true
	// Both slots now hold gen-1 or newer: older disk generations expired.
	d.dropBefore = max(d.dropBefore, gen-1)
	return m
}

// Which generations may hold an id, as mayHold finds them: none when both
// filters rule it out (they hold every committed id), which is so for most
// new ids.
const (
	mayGen     = 1 << iota // generation gen
	mayPrevGen             // generation gen-1
)

// mayHold sets may[i] to the generations, gen and the one before, that may
// hold hashes[i]. The filters are tested in one pass of their own, so that
// the cache misses of consecutive ids overlap.
func (d *durableDedupe) mayHold(hashes []uint64, gen int64, may []uint8) {
	m0, m1 := d.slot(gen), d.slot(gen-1)
	for i, h := range hashes {
		// Both tested, so that the loads do not wait on a branch.
		var in uint8
		if m0 == nil || m0.filterHas(h) {
			in |= mayGen
		}
		if m1 == nil || m1.filterHas(h) {
			in |= mayPrevGen
		}
		may[i] = in
	}
}

// seen reports whether hash h was stored in generation gen or the one
// before; may (from mayHold, not 0) says which of them may hold it.
func (d *durableDedupe) seen(h uint64, gen int64, may uint8, store *storage.Store) (bool, error) {
	var mem [2]*memGen
	for i, g := range [2]int64{gen, gen - 1} {
		mem[i] = d.slot(g)
	}
	for _, m := range mem {
		if m != nil {
			if _, ok := m.ids[h]; ok {
				return true, nil
			}
		}
	}
	if d.overflow.has(h) || d.flushingOverflow.has(h) {
		return true, nil
	}
	for i, g := range [2]int64{gen, gen - 1} {
		if may&(mayGen<<i) == 0 || (mem[i] != nil && mem[i].complete) {
			continue
		}
		ok, err := store.HasID(g, h)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

// commit moves the batch's pending ids to memory generation gen (its
// filter counts each id once: a refused batch retried added nothing), and
// to the ids the next snapshot stores. hashes is kept.
func (d *durableDedupe) commit(hashes []uint64, gen int64) {
	m := d.slot(gen)
	if m != nil { // a pass of its own, as in mayHold
		for _, h := range hashes {
			m.filterAdd(h, d.filterCap)
		}
	}
	for _, h := range hashes {
		delete(d.pending, h)
		if m == nil {
			continue // expired already
		}
		if len(m.ids) >= d.memMax {
			m.complete = false // the rest is on disk (or in overflow) only
			d.overflow.add(h)
			continue
		}
		m.ids[h] = struct{}{}
	}
	if m != nil && len(hashes) > 0 {
		d.unflushed = append(d.unflushed, storage.GenIDs{Gen: gen, Hashes: hashes})
		d.unflushedN += len(hashes)
	}
}

// takeUnflushed hands the unflushed ids to a snapshot; they stay visible
// to lookups until flushed says how its write went.
func (d *durableDedupe) takeUnflushed() (ids []storage.GenIDs, dropBefore int64) {
	ids = d.unflushed
	d.unflushed, d.unflushedN = nil, 0
	// flushingOverflow is empty after the last flushed: the two sets swap,
	// instead of copying every id.
	d.flushingOverflow, d.overflow = d.overflow, d.flushingOverflow
	return ids, d.dropBefore
}

// flushed ends a takeUnflushed: the ids are on disk, or (when the
// snapshot failed) go back to the unflushed ones.
func (d *durableDedupe) flushed(ids []storage.GenIDs, ok bool) {
	if !ok {
		for _, g := range ids {
			d.unflushedN += len(g.Hashes)
		}
		d.unflushed = append(ids, d.unflushed...)
		d.overflow.addAll(d.flushingOverflow)
	}
	d.flushingOverflow.reset() // kept for the next swap
}

// release forgets the batch's pending ids.
func (d *durableDedupe) release(hashes []uint64) {
	for _, h := range hashes {
		delete(d.pending, h)
	}
}

// durableBatch is one Consume call in durable mode.
type durableBatch struct {
	inflight
	seq    uint64
	gen    int64
	newIdx []int
	hashes []uint64
	// prices[j] is the price of events[newIdx[j]] when it is an LLM call;
	// nil without a pricer (every call unpriced).
	prices []callPrice
}

// consumeDurable is Consume in durable mode.
func (p *Processor) consumeDurable(events []*pb.Event, now time.Time, results []Result) error {
	nowNano := now.UnixNano()
	b, err := p.reserve(events, nowNano, results)
	if err != nil || b == nil {
		return err
	}
	return p.finish(b, events, nil, nowNano, results)
}

// beginDurable is Begin in durable mode: reserve now, the rest in the
// background.
func (p *Processor) beginDurable(events []*pb.Event, encoded []byte, now time.Time, results []Result) *Pending {
	nowNano := now.UnixNano()
	b, err := p.reserve(events, nowNano, results)
	if err != nil {
		return Ended(err)
	}
	if b == nil { // duplicates only
		p.countUnlogged(events, results)
		return Ended(nil)
	}
	done := make(chan struct{})
	pd := &Pending{done: done}
	go func() {
		defer close(done)
		defer func() { // the caller's goroutine would have recovered it
			if v := recover(); v != nil {
				p.log.Error("panic applying a batch", "panic", v)
				pd.err = fmt.Errorf("%w: %v", ErrPanic, v)
			}
		}()
		if pd.err = p.finish(b, events, encoded, nowNano, results); pd.err == nil {
			p.countUnlogged(events, results)
		}
	}()
	return pd
}

// finish writes, applies and releases a reserved batch.
func (p *Processor) finish(b *durableBatch, events []*pb.Event, encoded []byte, nowNano int64, results []Result) (err error) {
	defer p.batches.Done()
	err = p.write(b, events, encoded, nowNano)

	p.waitTurn(b.seq)
	defer p.endTurn(b.seq)
	settled := false
	// settle commits the batch's ids, or forgets them when it failed, and
	// returns how many committed ids wait for a snapshot.
	settle := func() (unflushed int) {
		settled = true
		p.dmu.Lock()
		if p.dd != nil {
			if err == nil {
				p.dd.commit(b.hashes, b.gen)
			} else {
				p.dd.release(b.hashes)
			}
			unflushed = p.dd.unflushedN
		}
		close(b.done)
		p.dmu.Unlock()
		return unflushed
	}
	defer func() { // even if apply panics: nothing may wait on this batch forever
		if !settled {
			settle()
		}
	}()
	if err == nil && p.applyStored(b, events, nowNano, results, settle) {
		select {
		case p.snapshotNow <- struct{}{}:
		default:
		}
	}
	return err
}

// applyStored applies a stored batch and settles its ids, under mu, and
// reports whether a snapshot is due. A panic in the apply (a bug) releases
// mu on its way out: the batch is in the log, and finish settles its ids as
// committed, so a resend is a duplicate and the batches after it go on.
func (p *Processor) applyStored(b *durableBatch, events []*pb.Event, nowNano int64, results []Result,
	settle func() int) bool {
	var unpriced callPrice
	p.mu.Lock()
	defer p.mu.Unlock()
	for j, i := range b.newIdx {
		pr := &unpriced
		if b.prices != nil {
			pr = &b.prices[j]
		}
		results[i] = p.apply(events[i], nowNano, pr)
	}
	// With the apply, under mu: a snapshot that has this batch has its ids
	// among those it stores.
	unflushed := settle()
	p.appliedSeq = b.seq
	p.sinceSnapshot += len(b.newIdx)
	return p.sinceSnapshot >= p.snapshotEvery || len(p.evicted) >= p.cfg.MaxTracked ||
		unflushed >= idFlushEvery
}

// reserve classifies the events' ids (duplicates get their result now) and
// returns the batch of the new ones, with its sequence number; nil when
// there is none.
func (p *Processor) reserve(events []*pb.Event, now int64, results []Result) (*durableBatch, error) {
	b := &durableBatch{inflight: inflight{done: make(chan struct{})}}
	for {
		p.dmu.Lock()
		if p.stopped {
			p.dmu.Unlock()
			return nil, errStopped
		}
		wait, err := p.classify(b, events, now, results)
		if err != nil || wait != nil {
			if p.dd != nil {
				p.dd.release(b.hashes)
			}
			p.dmu.Unlock()
			if err != nil {
				return nil, err
			}
			<-wait // the other batch ends, stored or not: look again
			continue
		}
		if len(b.newIdx) == 0 {
			p.dmu.Unlock()
			return nil, nil
		}
		if p.dd != nil && p.dd.unflushedN >= idBacklogMax {
			p.dd.release(b.hashes)
			p.dmu.Unlock()
			return nil, errIDBacklog
		}
		b.seq = p.nextSeq
		p.nextSeq++
		p.batches.Add(1) // finish ends it
		p.dmu.Unlock()
		return b, nil
	}
}

// classify is one pass of reserve. p.dmu is held.
func (p *Processor) classify(b *durableBatch, events []*pb.Event, now int64, results []Result) (<-chan struct{}, error) {
	if cap(b.newIdx) < len(events) {
		b.newIdx, b.hashes = make([]int, 0, len(events)), make([]uint64, 0, len(events))
	}
	b.newIdx, b.hashes = b.newIdx[:0], b.hashes[:0]
	d := p.dd
	if d == nil { // no de-duplication
		for i := range events {
			b.newIdx = append(b.newIdx, i)
		}
		return nil, nil
	}
	b.gen = d.gen(now)
	if cap(d.all) < len(events) {
		d.all, d.may = make([]uint64, len(events)), make([]uint8, len(events))
	}
	all, may := d.all[:len(events)], d.may[:len(events)]
	for i, ev := range events {
		all[i] = d.hash(ev.GetEventId())
	}
	d.mayHold(all, b.gen, may)
	for i, h := range all {
		if other, ok := d.pending[h]; ok {
			if other == &b.inflight { // twice in this batch
				results[i] = Result{Outcome: Duplicate}
				continue
			}
			return other.done, nil
		}
		dup := false
		if may[i] != 0 {
			var err error
			if dup, err = d.seen(h, b.gen, may[i], p.store); err != nil {
				return nil, err
			}
		}
		if dup {
			results[i] = Result{Outcome: Duplicate}
			continue
		}
		d.pending[h] = &b.inflight
		b.newIdx = append(b.newIdx, i)
		b.hashes = append(b.hashes, h)
	}
	return nil, nil
}

// write prices the batch's new LLM calls (b.prices) and stores its new
// events with those prices as one log entry: encoded as it is when they are
// all of events, else encoded again.
func (p *Processor) write(b *durableBatch, events []*pb.Event, encoded []byte, now int64) (err error) {
	// A panic here (the pricer is not ours) fails the batch like a failed
	// write: nothing applied, its ids released, the next batch's turn
	// comes.
	defer func() {
		if v := recover(); v != nil {
			p.log.Error("panic writing a batch", "panic", v)
			err = fmt.Errorf("%w: %v", ErrPanic, v)
		}
	}()
	if p.pricer != nil {
		b.prices = make([]callPrice, len(b.newIdx))
		for j, i := range b.newIdx {
			if c := events[i].GetLlmCall(); c != nil {
				b.prices[j] = p.priceCall(c, eventTime(events[i], now))
			}
		}
	}
	bufs := p.entryBufs.Get().(*entryBufs)
	defer p.entryBufs.Put(bufs)
	if encoded == nil || len(b.newIdx) != len(events) {
		req := &pb.RecordRequest{Events: make([]*pb.Event, len(b.newIdx))}
		for j, i := range b.newIdx {
			req.Events[j] = events[i]
		}
		enc, err := proto.MarshalOptions{}.MarshalAppend(bufs.req[:0], req)
		if err != nil {
			return fmt.Errorf("encode batch for storage: %w", err)
		}
		bufs.req, encoded = enc, enc
	}
	return p.store.Commit(b.seq, encodeEntry(bufs, now, encoded, b.prices))
}

// A log entry is entryPriced, then an S2 block
// (github.com/klauspost/compress/s2) of:
//   - the receipt time (8 bytes, big-endian Unix nanoseconds),
//   - the length (uvarint) and bytes of the RecordRequest of the batch's
//     new events,
//   - a price record for each of its LLM calls the price table priced, in
//     event order: the event's index in the request (uvarint), the computed
//     cost and the cache savings (8 bytes each, big-endian IEEE 754 bits).
//     A call without a record was unpriced.
//
// Compressed, the log's bytes through the WAL, the memtable and the flushes
// are a third or less. The prices are those the live apply used, so that a
// replay applies them again whatever the price table is at the restart.
//
// Older entries are still read, their calls priced at the replay: entryS2,
// then an S2 block of the time and the request, without prices; before
// compression came in, the uncompressed time and request, whose first byte
// (the time's high byte, 0x18 in 2026) is neither tag.
const (
	entryS2     = 0x01
	entryPriced = 0x02
)

// priceRecordBytes is a price record's size past its index.
const priceRecordBytes = 16

// maxEntryBytes bounds an entry's decoded size (requests are at most a few
// MiB), so that a damaged length cannot ask for more.
const maxEntryBytes = 64 << 20

// entryBufs are the buffers of one write, pooled.
type entryBufs struct{ req, raw, out []byte }

// encodeEntry encodes a log entry of req, an encoded RecordRequest, and of
// prices (by event of req; nil: none priced) into bufs; the result is valid
// until bufs is used again.
func encodeEntry(bufs *entryBufs, now int64, req []byte, prices []callPrice) []byte {
	raw := binary.BigEndian.AppendUint64(bufs.raw[:0], uint64(now))
	raw = binary.AppendUvarint(raw, uint64(len(req)))
	raw = append(raw, req...)
	for j, pr := range prices {
		if pr.ok {
			raw = binary.AppendUvarint(raw, uint64(j))
			raw = binary.BigEndian.AppendUint64(raw, math.Float64bits(pr.cost))
			raw = binary.BigEndian.AppendUint64(raw, math.Float64bits(pr.savings))
		}
	}
	bufs.raw = raw
	n := 1 + s2.MaxEncodedLen(len(raw))
	if cap(bufs.out) < n {
		bufs.out = make([]byte, n)
	}
	out := bufs.out[:n]
	out[0] = entryPriced
	enc := s2.Encode(out[1:], raw)
	return out[:1+len(enc)]
}

// decodeEntry decodes a log entry. prices has one element per event of req
// (the zero value, unpriced, for all but the priced LLM calls); it is nil
// for an entry of a format without prices, whose calls are priced at the
// replay.
func decodeEntry(entry []byte) (at int64, req *pb.RecordRequest, prices []callPrice, err error) {
	raw := entry
	var tag byte
	if len(entry) > 0 && (entry[0] == entryS2 || entry[0] == entryPriced) {
		tag = entry[0]
		n, err := s2.DecodedLen(entry[1:])
		if err != nil || n > maxEntryBytes {
			return 0, nil, nil, fmt.Errorf("damaged (%d bytes decoded, %v)", n, err)
		}
		if raw, err = s2.Decode(make([]byte, n), entry[1:]); err != nil {
			return 0, nil, nil, fmt.Errorf("damaged: %w", err)
		}
	}
	if len(raw) < 8 {
		return 0, nil, nil, fmt.Errorf("damaged: %d bytes", len(raw))
	}
	body, rest := raw[8:], []byte(nil)
	if tag == entryPriced {
		n, k := binary.Uvarint(body)
		if k <= 0 || n > uint64(len(body)-k) {
			return 0, nil, nil, errors.New("damaged: bad request length")
		}
		body, rest = body[k:k+int(n)], body[k+int(n):]
	}
	req = &pb.RecordRequest{}
	if err := proto.Unmarshal(body, req); err != nil {
		return 0, nil, nil, fmt.Errorf("damaged: %w", err)
	}
	if tag == entryPriced {
		events := req.GetEvents()
		prices = make([]callPrice, len(events))
		next := uint64(0) // records are in event order, one per call at most
		for len(rest) > 0 {
			j, k := binary.Uvarint(rest)
			if k <= 0 || len(rest)-k < priceRecordBytes || j < next || j >= uint64(len(events)) ||
				events[j].GetLlmCall() == nil {
				return 0, nil, nil, errors.New("damaged: bad price record")
			}
			rec := rest[k:]
			prices[j] = callPrice{
				cost:    math.Float64frombits(binary.BigEndian.Uint64(rec)),
				savings: math.Float64frombits(binary.BigEndian.Uint64(rec[8:])),
				ok:      true,
			}
			next, rest = j+1, rec[priceRecordBytes:]
		}
	}
	return int64(binary.BigEndian.Uint64(raw)), req, prices, nil
}

// waitTurn blocks until every batch before seq was applied or failed.
func (p *Processor) waitTurn(seq uint64) {
	p.turnMu.Lock()
	if p.turn == seq {
		p.turnMu.Unlock()
		return
	}
	ch := make(chan struct{})
	p.turnWait[seq] = ch
	p.turnMu.Unlock()
	<-ch
}

// endTurn wakes the batch after seq, if it waits (and only it: with a
// stream's batches pipelined, many wait at once).
func (p *Processor) endTurn(seq uint64) {
	p.turnMu.Lock()
	p.turn = seq + 1
	if ch, ok := p.turnWait[seq+1]; ok {
		delete(p.turnWait, seq+1)
		close(ch)
	}
	p.turnMu.Unlock()
}

// restore rebuilds the state from the store: snapshot, then log replay.
func (p *Processor) restore(now int64) error {
	seq, agg, ok, err := p.store.LoadSnapshot()
	if err != nil {
		return err
	}
	if ok {
		err := p.restoreAggregate(agg, func(id string) (*conversation, error) {
			rec, ok, err := p.store.Conversation(id)
			if err != nil || !ok {
				return nil, err
			}
			return p.decodeConversation(rec)
		})
		if err != nil {
			return err
		}
	}
	last, replayed := seq, 0
	err = p.store.Replay(seq, func(s uint64, entry []byte) error {
		at, req, prices, err := decodeEntry(entry)
		if err != nil {
			return fmt.Errorf("storage log entry %d is %w", s, err)
		}
		var hashes []uint64
		for j, ev := range req.GetEvents() {
			var pr *callPrice // nil: an older entry, priced now
			if prices != nil {
				pr = &prices[j]
			}
			p.apply(ev, at, pr)
			if p.dd != nil {
				hashes = append(hashes, p.dd.hash(ev.GetEventId()))
			}
			replayed++
		}
		if p.dd != nil {
			p.dd.commit(hashes, p.dd.gen(at))
		}
		last = s
		return nil
	})
	if err != nil {
		return err
	}
	p.nextSeq, p.turn, p.appliedSeq = last+1, last+1, last
	p.sinceSnapshot = replayed
	p.log.Info("state restored from storage", "snapshot_seq", seq, "replayed_events", replayed,
		"conversations", len(p.convs.byID))
	return nil
}

// lookup returns conversation id from memory, from those dropped since the
// last snapshot, or from storage; the two last are tracked again. nil when
// it is nowhere. p.mu is held.
func (p *Processor) lookup(id string, now int64) *conversation {
	if c, ok := p.convs.byID[id]; ok {
		return c
	}
	if p.store == nil {
		return nil
	}
	c, ok := p.evicted[id]
	if ok {
		delete(p.evicted, id)
	} else {
		rec, found, err := p.store.Conversation(id)
		if err != nil {
			p.log.Error("read stored conversation", "conversation_id", id, "err", err)
			return nil
		}
		if !found {
			return nil
		}
		if c, err = p.decodeConversation(rec); err != nil {
			p.log.Error("read stored conversation", "conversation_id", id, "err", err)
			return nil
		}
	}
	c.removed, c.dirty = false, true
	c.lastSeen = max(c.lastSeen, now)
	p.insert(c)
	if c.closed {
		p.convs.closed = append(p.convs.closed, c)
	}
	return c
}

// insert tracks a stored conversation again, within the bound, and counts it
// in the gauges. p.mu is held.
func (p *Processor) insert(c *conversation) {
	if len(p.convs.byID) >= p.convs.max {
		p.convs.remove(p.convs.lru.Back().Value.(*conversation), evictCapacity, p.forget)
	}
	c.elem = p.convs.lru.PushFront(c)
	p.convs.byID[c.id] = c
	if c.closed {
		p.life.closedTracked++
	} else if c.state != pb.AgentState_AGENT_STATE_UNSPECIFIED {
		p.status.conversations[c.statusKey]++
	}
}

// snapshotLoop writes a snapshot every interval, or sooner when the log or
// the dropped conversations grew, and runs the retention pass.
func (p *Processor) snapshotLoop(interval time.Duration) {
	defer close(p.snapshotDone)
	t := time.NewTicker(interval)
	defer t.Stop()
	lastRetention := time.Now()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		case <-p.snapshotNow:
		}
		if err := p.Snapshot(); err != nil {
			p.log.Error("write storage snapshot", "err", err)
		}
		if r := p.cfg.Retention; r > 0 && time.Since(lastRetention) >= min(r/10, time.Hour) {
			lastRetention = time.Now()
			if err := p.expireStored(time.Now().Add(-r).UnixNano()); err != nil {
				p.log.Error("storage retention pass", "err", err)
			}
		}
	}
}

// Snapshot writes the aggregate state and the changed conversations, and
// drops the log they cover. Durable mode only; a no-op otherwise.
func (p *Processor) Snapshot() error {
	if p.store == nil {
		return nil
	}
	p.snapMu.Lock()
	defer p.snapMu.Unlock()
	type written struct {
		c   *conversation
		ver uint64
	}
	var done []written
	p.mu.Lock()
	seq := p.appliedSeq
	agg, err := p.saveAggregate()
	if err != nil {
		p.mu.Unlock()
		return err
	}
	convs := make(map[string][]byte)
	add := func(c *conversation) error {
		rec, err := encodeConversation(c)
		if err != nil {
			return err
		}
		convs[c.id] = rec
		done = append(done, written{c, c.version})
		return nil
	}
	for _, c := range p.convs.byID {
		if c.dirty {
			if err := add(c); err != nil {
				p.mu.Unlock()
				return err
			}
		}
	}
	for _, c := range p.evicted {
		if err := add(c); err != nil {
			p.mu.Unlock()
			return err
		}
	}
	written0 := p.sinceSnapshot
	var ids []storage.GenIDs
	var dropBefore int64
	p.dmu.Lock()
	if p.dd != nil {
		ids, dropBefore = p.dd.takeUnflushed()
	}
	p.dmu.Unlock()
	p.mu.Unlock()

	err = p.store.WriteSnapshot(storage.Snapshot{Seq: seq, Aggregate: agg, Conversations: convs, IDs: ids, DropBefore: dropBefore})
	p.dmu.Lock()
	if p.dd != nil {
		p.dd.flushed(ids, err == nil)
	}
	p.dmu.Unlock()
	if err != nil {
		return err
	}
	p.mu.Lock()
	for _, w := range done {
		if w.c.version != w.ver {
			continue // changed since: still dirty
		}
		w.c.dirty = false
		if e, ok := p.evicted[w.c.id]; ok && e == w.c {
			delete(p.evicted, w.c.id)
		}
	}
	p.sinceSnapshot -= written0
	p.mu.Unlock()
	return nil
}

// expireStored deletes the stored conversations last seen before cutoff
// that are neither in memory nor waiting for a snapshot.
func (p *Processor) expireStored(cutoff int64) error {
	var ids []string
	err := p.store.ScanConversations(func(id string, rec []byte) error {
		if seen, ok := recordLastSeen(rec); ok && seen < cutoff {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	keep := ids[:0]
	for _, id := range ids {
		_, inMemory := p.convs.byID[id]
		_, waiting := p.evicted[id]
		if !inMemory && !waiting {
			keep = append(keep, id)
		}
	}
	p.expiredStored += int64(len(keep))
	return p.store.DeleteConversations(keep)
}

// durableState is the part of the processor only durable mode uses.
type durableState struct {
	store *storage.Store

	// dmu guards dd, nextSeq and stopped.
	dmu     sync.Mutex
	dd      *durableDedupe
	nextSeq uint64
	stopped bool
	// batches are the batches between reserve and the end of finish:
	// Shutdown waits for them (they may run in the background).
	batches sync.WaitGroup

	entryBufs sync.Pool // *entryBufs

	// turnMu guards turn, the sequence number of the next batch to apply,
	// and the batches waiting for their turn.
	turnMu   sync.Mutex
	turn     uint64
	turnWait map[uint64]chan struct{}

	// Guarded by Processor.mu: the last batch applied, the events applied
	// since the last snapshot, the conversations dropped from memory since
	// then, and the stored ones deleted by retention.
	appliedSeq    uint64
	sinceSnapshot int
	snapshotEvery int
	evicted       map[string]*conversation
	expiredStored int64

	snapMu       sync.Mutex // one snapshot at a time
	snapshotNow  chan struct{}
	snapshotDone chan struct{}
}
