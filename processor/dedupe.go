package processor

import (
	"hash/maphash"
	"time"
)

// dedupe remembers the event ids seen recently, in two generations: ids go
// into the current one; when it is a window old or holds half the bound, it
// becomes the previous one and the old previous is dropped whole. So an id
// is remembered for at least the window (unless maxIDs/2 newer ids came
// first) and at most twice that, and at most maxIDs are held. Dropping a
// generation whole keeps the maps free of deletion tombstones, which made
// lookups in a delete-heavy map three times slower.
//
// It keeps 64-bit hashes (with a per-process random seed), not the ids: 8
// bytes an id, whatever the client sends. Two different ids collide with
// probability about n²/2⁶⁵ (3·10⁻⁸ at a million ids held).
//
// Not safe for concurrent use: the Processor's mutex guards it.
type dedupe struct {
	window   time.Duration
	genMax   int
	seed     maphash.Seed
	cur      map[uint64]struct{}
	prev     map[uint64]struct{}
	curStart int64 // unix nanoseconds
}

func newDedupe(window time.Duration, maxIDs int) *dedupe {
	if window <= 0 || maxIDs <= 0 {
		return nil
	}
	return &dedupe{
		window: window,
		genMax: max(maxIDs/2, 1),
		seed:   maphash.MakeSeed(),
		cur:    make(map[uint64]struct{}),
		prev:   make(map[uint64]struct{}),
	}
}

// expire drops the generations whose window ended before now.
func (d *dedupe) expire(now int64) {
	switch age := now - d.curStart; {
	case age >= 2*int64(d.window):
		clear(d.prev)
		clear(d.cur)
		d.curStart = now
	case age >= int64(d.window):
		d.rotate(now)
	}
}

func (d *dedupe) rotate(now int64) {
	d.prev, d.cur = d.cur, d.prev
	clear(d.cur)
	d.curStart = now
}

// duplicate reports whether id was seen, and remembers it when it was not.
func (d *dedupe) duplicate(id string, now int64) bool {
	h := maphash.String(d.seed, id)
	if _, ok := d.cur[h]; ok {
		return true
	}
	if _, ok := d.prev[h]; ok {
		return true
	}
	if len(d.cur) >= d.genMax {
		d.rotate(now)
	}
	d.cur[h] = struct{}{}
	return false
}

// len is the number of ids held.
func (d *dedupe) len() int { return len(d.cur) + len(d.prev) }
