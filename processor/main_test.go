package processor

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind (the
// idle-expiry sweep must stop on Shutdown).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
