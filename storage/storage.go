// Package storage is the processor's durable state on local disk: a log of
// accepted batches, per-conversation ledger entries and periodic snapshots
// of the aggregate totals in one Pebble database
// (github.com/cockroachdb/pebble/v2), and the event ids of the dedupe window
// in files of sorted ids that Pebble lists (idruns.go).
//
// Why Pebble: its commit pipeline groups the synced batches of concurrent
// writers into one WAL write and one fsync (group commit), its WAL records
// are CRC-framed and a torn tail is dropped at open, DeleteRange drops the
// log a snapshot covers in one tombstone, and compaction reclaims the
// space. bbolt would give one fsync per coalesced transaction too, but
// rewrites B+tree pages for every transaction.
//
// Key layout (the first byte is the kind):
//
//	'm' + name              metadata (start time, hash seed)
//	'e' + seq (8 bytes BE)  a batch record: the events accepted by one request
//	'r' + gen + run (8+8)   a run of dedupe ids of generation gen: its size and
//	                        the first id of each page (idruns.go)
//	'd' + gen + hash (8+8)  an id of a database written before the runs; moved
//	                        into runs at open
//	'c' + conversation id   a conversation's ledger entry
//	's'                     the snapshot: aggregate totals as of a log seq
//	'o' + conv + 0 + item   an item of the OpenHands feed's state (openhands.go)
//
// A Store is safe for concurrent use.
package storage

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/agentmeter/agentmeter/catalog"
)

// Config configures the store.
type Config struct {
	// Directory holds the database; created when missing.
	Directory string
	// MinFreeBytes is the free space under which writes are refused with
	// ErrDiskFull before they reach the disk.
	MinFreeBytes uint64
	// NoSync acknowledges without waiting for fsync (data survives a
	// process crash, not a machine crash). For tests and benchmarks.
	NoSync bool
	// CacheBytes is the size of Pebble's block cache; 0 = 8 MiB.
	CacheBytes int64
	// MemTableBytes is the size of each of Pebble's memtables; 0 =
	// DefaultMemTableBytes.
	MemTableBytes uint64
}

// Pebble holds at most MaxMemTables memtables (the mutable one and those
// waiting to be flushed) before it stalls writes. With the block cache,
// that is the memory the store may hold.
const (
	DefaultMemTableBytes = 8 << 20
	MaxMemTables         = 2
)

// ErrDiskFull is returned by writes refused because the disk is (nearly) full.
var ErrDiskFull = errors.New("storage: disk full")

// Store is the Pebble database of one collector.
type Store struct {
	cfg  Config
	db   *pebble.DB
	log  *slog.Logger
	wo   *pebble.WriteOptions
	seed uint64
	// start is the start time of the cumulative series, kept across restarts.
	start time.Time

	// runs holds the dedupe ids.
	runs *idRuns

	// roomAt is when checkSpace last found room (Unix ns); 0 = not lately.
	roomAt atomic.Int64

	writeErrors atomic.Int64
	diskFull    atomic.Int64
}

// Key kinds.
const (
	kindMeta      = 'm'
	kindEntry     = 'e'
	kindID        = 'd'
	kindConv      = 'c'
	kindSnapshot  = 's'
	kindOpenHands = 'o'
	kindRun       = 'r'
)

var (
	keyStart    = []byte("mstart")
	keySeed     = []byte("mseed")
	keySnapshot = []byte{kindSnapshot}
)

// Open opens (or creates) the database in cfg.Directory. A torn or corrupt
// tail of the write-ahead log (a write cut off by a crash) is dropped; other
// corruption is an error.
func Open(cfg Config, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Directory, 0o750); err != nil {
		return nil, fmt.Errorf("create storage.directory %q: %w", cfg.Directory, err)
	}
	opts := &pebble.Options{
		Logger:             pebbleLogger{log: log},
		FormatMajorVersion: pebble.FormatNewest,
		// A log entry still live when its memtable is flushed (not yet
		// dropped by a snapshot) is written to an sstable and compacted
		// away later; the larger the memtable, the fewer of them.
		MemTableSize:                DefaultMemTableBytes,
		MemTableStopWritesThreshold: MaxMemTables,
		CacheSize:                   8 << 20,
	}
	if cfg.CacheBytes > 0 {
		opts.CacheSize = cfg.CacheBytes
	}
	if cfg.MemTableBytes > 0 {
		opts.MemTableSize = cfg.MemTableBytes
	}
	// Bloom filters spare a conversation reload (a point read of a key
	// that may not exist) a look into every table that cannot hold it.
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	db, err := pebble.Open(filepath.Join(cfg.Directory, "db"), opts)
	if err != nil {
		return nil, fmt.Errorf("open storage in %q: %w", cfg.Directory, err)
	}
	s := &Store{cfg: cfg, db: db, log: log, wo: pebble.Sync}
	if cfg.NoSync {
		s.wo = pebble.NoSync
	}
	if err := s.loadMeta(); err != nil {
		_ = db.Close()
		return nil, err
	}
	s.runs = newIDRuns(filepath.Join(cfg.Directory, runsDir), log)
	err = s.runs.load(db)
	if err == nil {
		err = s.migrateIDKeys()
	}
	if err != nil {
		s.runs.closeAll()
		_ = db.Close()
		return nil, fmt.Errorf("open storage in %q: %w", cfg.Directory, err)
	}
	go s.mergeLoop()
	s.runs.kick <- struct{}{} // merge what a restart found, if anything
	return s, nil
}

// loadMeta reads the start time and hash seed, creating them on first open.
func (s *Store) loadMeta() error {
	start, okStart, err := s.get(keyStart)
	if err != nil {
		return err
	}
	seed, okSeed, err := s.get(keySeed)
	if err != nil {
		return err
	}
	if okStart && okSeed && len(start) == 8 && len(seed) == 8 {
		s.start = time.Unix(0, int64(binary.BigEndian.Uint64(start)))
		s.seed = binary.BigEndian.Uint64(seed)
		return nil
	}
	if okStart || okSeed {
		return fmt.Errorf("open storage in %q: metadata is damaged", s.cfg.Directory)
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("make storage hash seed: %w", err)
	}
	s.seed = binary.BigEndian.Uint64(b[:])
	s.start = time.Now()
	batch := s.db.NewBatch()
	defer batch.Close()
	_ = batch.Set(keySeed, b[:], nil)
	_ = batch.Set(keyStart, binary.BigEndian.AppendUint64(nil, uint64(s.start.UnixNano())), nil)
	if err := batch.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("write storage metadata: %w", err)
	}
	return nil
}

// Close closes the database. Safe to call once.
func (s *Store) Close() error {
	close(s.runs.stop)
	<-s.runs.done
	s.runs.closeAll()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close storage: %w", err)
	}
	return nil
}

// Start is the start time of the cumulative series: when this database was
// created.
func (s *Store) Start() time.Time { return s.start }

// Seed is the random seed of the event-id hash, fixed for the database's life.
func (s *Store) Seed() uint64 { return s.seed }

func (s *Store) get(key []byte) ([]byte, bool, error) {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read storage key %q: %w", key, err)
	}
	out := append([]byte(nil), v...)
	_ = closer.Close()
	return out, true, nil
}

// checkSpace refuses a write when the disk is nearly full, so that Pebble
// never meets ENOSPC in its WAL (which it treats as fatal). A check that
// found room is trusted for roomCheckEvery: the log's commits come
// thousands of times a second, and a statfs each took ~1% of durable
// mode's CPU. At full load the collector writes ~86 MB/s in all (README,
// Failure modes), so under 1 MB goes past a check, far inside the free
// space kept (storage.min_free_mib).
func (s *Store) checkSpace() error {
	if at := s.roomAt.Load(); at != 0 && time.Now().UnixNano()-at < int64(roomCheckEvery) {
		return nil
	}
	if err := s.checkRoom(0); err != nil {
		s.roomAt.Store(0)
		return err
	}
	s.roomAt.Store(time.Now().UnixNano())
	return nil
}

// roomCheckEvery is how long checkSpace trusts a check that found room.
const roomCheckEvery = 10 * time.Millisecond

// checkRoom refuses a write of extra bytes that would leave less than
// MinFreeBytes free.
func (s *Store) checkRoom(extra uint64) error {
	if s.cfg.MinFreeBytes == 0 {
		return nil
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.cfg.Directory, &st); err != nil {
		return fmt.Errorf("statfs storage.directory: %w", err)
	}
	if free := st.Bavail * uint64(st.Bsize); free < s.cfg.MinFreeBytes+extra {
		s.diskFull.Add(1)
		return fmt.Errorf("%w: %d bytes free in storage.directory, less than storage.min_free_mib", ErrDiskFull, free)
	}
	return nil
}

// EntryKey is the key of log entry seq.
func entryKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{kindEntry}, seq)
}

// Commit durably writes log entry seq. Concurrent Commits share one WAL
// write and fsync. When it returns nil the entry survives a crash. The
// event ids in the entry reach the id runs with the next snapshot.
func (s *Store) Commit(seq uint64, entry []byte) error {
	if err := s.checkSpace(); err != nil {
		return err
	}
	b := s.db.NewBatch()
	defer b.Close()
	_ = b.Set(entryKey(seq), entry, nil)
	if err := b.Commit(s.wo); err != nil {
		s.writeErrors.Add(1)
		return fmt.Errorf("write storage batch: %w", err)
	}
	return nil
}

// HasID reports whether id hash h was stored in generation gen.
func (s *Store) HasID(gen int64, h uint64) (bool, error) { return s.runs.has(gen, h) }

// IDs calls fn for every id hash stored in generation gen, up to limit of
// them; it reports whether it saw them all.
func (s *Store) IDs(gen int64, limit int, fn func(h uint64)) (bool, error) {
	return s.runs.scan(gen, limit, fn)
}

// Snapshot is the aggregate state as of log entry Seq (every entry up to
// Seq is in it), and the conversation records changed since the last one.
type Snapshot struct {
	Seq       uint64
	Aggregate []byte
	// Conversations are the ledger entries to write; a nil value deletes.
	Conversations map[string][]byte
	// IDs are the dedupe id hashes to store, by generation: those of the
	// log entries the snapshot covers that are not stored yet.
	IDs []GenIDs
	// DropBefore deletes the ids of every generation before it (after
	// writing IDs, so that it covers them too); 0 deletes none.
	DropBefore int64
}

// GenIDs are id hashes of one dedupe generation.
type GenIDs struct {
	Gen    int64
	Hashes []uint64
}

// WriteSnapshot durably replaces the snapshot, writes its conversations and
// ids, and deletes the log entries it covers and the expired ids,
// atomically.
func (s *Store) WriteSnapshot(snap Snapshot) error {
	if err := s.checkSpace(); err != nil {
		return err
	}
	// The ids of each generation still kept, sorted, as a new run each,
	// written and synced before the batch that lists them.
	n := make(map[int64]int)
	for _, g := range snap.IDs {
		if g.Gen >= snap.DropBefore {
			n[g.Gen] += len(g.Hashes)
		}
	}
	byGen := make(map[int64][]uint64, len(n))
	for _, g := range snap.IDs {
		if g.Gen >= snap.DropBefore {
			if byGen[g.Gen] == nil {
				byGen[g.Gen] = make([]uint64, 0, n[g.Gen])
			}
			byGen[g.Gen] = append(byGen[g.Gen], g.Hashes...)
		}
	}
	for _, hashes := range byGen {
		slices.Sort(hashes)
	}
	s.runs.wmu.Lock()
	defer s.runs.wmu.Unlock()
	runs, err := s.runs.writeNew(byGen)
	if err != nil {
		s.writeErrors.Add(1)
		return fmt.Errorf("write storage snapshot: %w", err)
	}
	size := len(snap.Aggregate) + 64
	for id, rec := range snap.Conversations {
		size += len(id) + len(rec) + 8
	}
	metas := make([][]byte, len(runs))
	for i, rn := range runs {
		metas[i] = encodeRunMeta(rn)
		size += len(metas[i]) + 32
	}
	b := s.db.NewBatchWithSize(size)
	defer b.Close()
	for id, rec := range snap.Conversations {
		k := append([]byte{kindConv}, id...)
		if rec == nil {
			_ = b.Delete(k, nil)
		} else {
			_ = b.Set(k, rec, nil)
		}
	}
	for i, rn := range runs {
		_ = b.Set(runKey(rn.gen, rn.num), metas[i], nil)
	}
	if snap.DropBefore > 0 {
		_ = b.DeleteRange(runKey(0, 0), runKey(snap.DropBefore, 0), nil)
	}
	v := binary.BigEndian.AppendUint64(nil, snap.Seq)
	_ = b.Set(keySnapshot, append(v, snap.Aggregate...), nil)
	_ = b.DeleteRange(entryKey(0), entryKey(snap.Seq+1), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		s.writeErrors.Add(1)
		s.runs.remove(runs)
		return fmt.Errorf("write storage snapshot: %w", err)
	}
	s.runs.install(runs, snap.DropBefore)
	return nil
}

// LoadSnapshot returns the last snapshot's aggregate and seq; ok is false
// when none was written yet.
func (s *Store) LoadSnapshot() (seq uint64, aggregate []byte, ok bool, err error) {
	v, ok, err := s.get(keySnapshot)
	if err != nil || !ok {
		return 0, nil, false, err
	}
	if len(v) < 8 {
		return 0, nil, false, fmt.Errorf("storage snapshot is damaged: %d bytes", len(v))
	}
	return binary.BigEndian.Uint64(v), v[8:], true, nil
}

// Replay calls fn for every log entry after seq, in order.
func (s *Store) Replay(after uint64, fn func(seq uint64, entry []byte) error) error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: entryKey(after + 1), UpperBound: []byte{kindEntry + 1}})
	if err != nil {
		return fmt.Errorf("read storage log: %w", err)
	}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != 9 {
			_ = it.Close()
			return fmt.Errorf("storage log key %x is damaged", k)
		}
		if err := fn(binary.BigEndian.Uint64(k[1:]), it.Value()); err != nil {
			_ = it.Close()
			return err
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("read storage log: %w", err)
	}
	return nil
}

// Conversation returns the stored record of conversation id.
func (s *Store) Conversation(id string) ([]byte, bool, error) {
	return s.get(append([]byte{kindConv}, id...))
}

// ScanConversations calls fn for every stored conversation record, in id
// order; the record is only valid during the call.
func (s *Store) ScanConversations(fn func(id string, rec []byte) error) error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{kindConv}, UpperBound: []byte{kindConv + 1}})
	if err != nil {
		return fmt.Errorf("scan stored conversations: %w", err)
	}
	for it.First(); it.Valid(); it.Next() {
		if err := fn(string(it.Key()[1:]), it.Value()); err != nil {
			_ = it.Close()
			return err
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("scan stored conversations: %w", err)
	}
	return nil
}

// DeleteConversations deletes stored conversation records (not synced: a
// lost delete is redone by the next retention pass).
func (s *Store) DeleteConversations(ids []string) error {
	b := s.db.NewBatch()
	defer b.Close()
	for _, id := range ids {
		_ = b.Delete(append([]byte{kindConv}, id...), nil)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("delete expired conversations: %w", err)
	}
	return nil
}

// Stats are the store's self-metrics.
type Stats struct {
	// DiskBytes is the space the database takes on disk.
	DiskBytes uint64
	// WriteErrors counts failed writes; DiskFull counts writes refused for
	// lack of free space.
	WriteErrors, DiskFull int64
}

// Stats returns the current self-metrics.
func (s *Store) Stats() Stats {
	return Stats{
		DiskBytes:   s.db.Metrics().DiskSpaceUsage() + uint64(max(s.runs.bytes.Load(), 0)),
		WriteErrors: s.writeErrors.Load(),
		DiskFull:    s.diskFull.Load(),
	}
}

// pebbleLogger routes Pebble's log to slog.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug("pebble", "msg", fmt.Sprintf(format, args...))
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error("pebble error", "err", fmt.Sprintf(format, args...))
}

// Fatalf is called by Pebble when its commit pipeline cannot go on (a WAL
// write failed). Pebble's contract is that Fatalf does not return: the
// process exits, and what was acknowledged is on disk for the next start.
func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.log.Error("pebble fatal error; exiting so that a restart recovers from the durable state",
		"err", fmt.Sprintf(format, args...))
	os.Exit(70)
}

// RegisterMetrics reports the store's size and failed writes on m.
func (s *Store) RegisterMetrics(m metric.Meter) error {
	size, err := catalog.StorageSize.Int64ObservableGauge(m)
	if err != nil {
		return err
	}
	failures, err := catalog.StorageWriteFailures.Int64ObservableCounter(m)
	if err != nil {
		return err
	}
	full := metric.WithAttributeSet(attribute.NewSet(catalog.AttrCloseReason.String("disk_full")))
	other := metric.WithAttributeSet(attribute.NewSet(catalog.AttrCloseReason.String("error")))
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		st := s.Stats()
		o.ObserveInt64(size, int64(min(st.DiskBytes, math.MaxInt64)))
		o.ObserveInt64(failures, st.DiskFull, full)
		o.ObserveInt64(failures, st.WriteErrors, other)
		return nil
	}, size, failures)
	if err != nil {
		return fmt.Errorf("register storage callback: %w", err)
	}
	return nil
}
