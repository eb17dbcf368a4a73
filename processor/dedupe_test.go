package processor

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// TestDedupeMemory measures the heap that dedupe_max_ids ids take at the
// default bound (the README's "about 2 MiB") and keeps it under 4 MiB.
func TestDedupeMemory(t *testing.T) {
	const maxIDs = 100_000
	ids := make([]string, 3*maxIDs)
	for i := range ids {
		ids[i] = fmt.Sprintf("5f0c2a9e-1b7d-4e3a-9c1f-%012d", i)
	}
	heap := func() int64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	d := newDedupe(time.Hour, maxIDs)
	for _, id := range ids { // three times the bound: both generations full
		d.duplicate(id, 1)
	}
	held := d.len()
	with := heap()
	runtime.KeepAlive(d)
	d = nil
	used := float64(with-heap()) / (1 << 20)
	t.Logf("%d ids held in %.2f MiB of heap (%.1f bytes each)", held, used, used*(1<<20)/float64(held))
	if held > maxIDs {
		t.Errorf("%d ids held, more than the bound %d", held, maxIDs)
	}
	if used <= 0 || used > 4 {
		t.Errorf("%d ids take %.2f MiB, want more than 0 and at most 4", held, used)
	}
	runtime.KeepAlive(ids)
}
