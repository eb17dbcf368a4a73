// Package testtool finds the external tools that tests run for real
// (prometheus, promtool, kubectl-validate), with one rule for every test:
// a missing tool skips the test and says how to install it, except under
// CI=true, where a skipped check would hide a broken setup, so it fails.
package testtool

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Need returns the path of tool name, looked up on PATH and then in
// $(go env GOPATH)/bin, where scripts/test.sh installs the Go tools.
// install says how to get it.
func Need(t testing.TB, name, install string) string {
	t.Helper()
	if path, err := exec.LookPath(name); err == nil {
		return path
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for dir := range strings.SplitSeq(strings.TrimSpace(string(out)), string(os.PathListSeparator)) {
			path := filepath.Join(dir, "bin", name)
			if _, err := os.Stat(path); err == nil {
				return path
			}
		}
	}
	msg := fmt.Sprintf("%s not found on PATH or in $(go env GOPATH)/bin (%s); install it or run ./scripts/test.sh, which does", name, install)
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true: %s", msg)
	}
	t.Skip(msg)
	return ""
}
