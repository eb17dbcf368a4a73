package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// collectorBin is the collector built by TestMain; "" in -short mode.
var collectorBin string

func TestMain(m *testing.M) {
	if path := os.Getenv(socketClientEnv); path != "" {
		// A child started by TestIngestSocketPermission as another user.
		os.Exit(socketClient(path))
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	flag.Parse()
	if testing.Short() || listOnly() {
		// Every test skips through needBinary; listing runs none.
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "agentmeter-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: create build dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	bin := filepath.Join(dir, "collector")
	build := exec.Command("go", "build", "-o", bin, "./cmd/collector")
	build.Dir = root
	// As the Dockerfile and the Makefile build it: without cgo, Pebble's
	// memtables and block cache are Go memory, under the runtime's limit
	// (with cgo they are C memory that the limit does not see).
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/collector: %v\n%s", err, out)
		return 1
	}
	collectorBin = bin
	return m.Run()
}

// listOnly reports whether the test binary only lists tests (go test -list).
func listOnly() bool {
	f := flag.Lookup("test.list")
	return f != nil && f.Value.String() != ""
}

// moduleRoot is the directory of the main module's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("go env GOMOD: not inside a module (got %q)", gomod)
	}
	return filepath.Dir(gomod), nil
}

// needBinary skips t when the collector was not built (-short).
func needBinary(t *testing.T) {
	t.Helper()
	if collectorBin == "" {
		t.Skip("end-to-end test: needs the collector binary, not built in -short mode")
	}
}
