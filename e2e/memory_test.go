package e2e

import (
	"testing"
)

// TestMemoryLimitSetsRuntimeLimit checks memory.limit_mib as the Go runtime
// sees it (go_gc_gomemlimit_bytes on /metrics), and that GOMEMLIMIT in the
// environment wins for the runtime, as the README says.
func TestMemoryLimitSetsRuntimeLimit(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts options
		want float64
	}{
		{"memory.limit_mib", options{MemoryLimitMiB: 80}, 60 << 20}, // 3/4 of it, see Memory.RuntimeLimitBytes
		{"memory.limit_mib, large", options{MemoryLimitMiB: 1024}, 992 << 20},
		{"GOMEMLIMIT wins", options{MemoryLimitMiB: 100, Env: []string{"GOMEMLIMIT=50MiB"}}, 50 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startCollector(t, tc.opts)
			fams, _ := c.scrape()
			got, n := fams.value("go_gc_gomemlimit_bytes", nil)
			if n != 1 || got != tc.want {
				t.Errorf("go_gc_gomemlimit_bytes = %v (%d series), want %v", got, n, tc.want)
			}
			c.stop()
		})
	}
}
