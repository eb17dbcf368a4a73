package storage

import (
	"testing"

	"github.com/agentmeter/agentmeter/config"
)

// TestMemoryCountedByConfig: the memory config sets aside for the store
// (config.Config.StorageMemoryMiB, taken from the in-flight bounds) is
// its block cache, what Open lets Pebble's memtables hold, and the
// processor's id filters.
func TestMemoryCountedByConfig(t *testing.T) {
	c := config.Default()
	c.Storage.Directory = t.TempDir()
	memtablesMiB := MaxMemTables * c.StorageMemTableMiB()
	if got := c.StorageMemoryMiB() - c.StorageCacheMiB() - c.DedupeFiltersMiB(); got != memtablesMiB {
		t.Errorf("config counts %d MiB of memtables, Open allows %d × %d MiB", got, MaxMemTables, c.StorageMemTableMiB())
	}
}
