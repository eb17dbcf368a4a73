//go:build linux

package e2e

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/agentmeter/agentmeter/internal/testtool"
)

// TestDeadListenerExitsNonZero kills the collector's gRPC listening socket
// from outside (`ss -K`, the kernel's SOCK_DESTROY: accept then fails for
// good): the collector shuts down as on SIGTERM (components stopped in
// order, the final export) and exits 1, instead of running on without its
// port. Go listens with MPTCP where the kernel has it, and SOCK_DESTROY
// does not apply to MPTCP sockets: GODEBUG=multipathtcp=0 makes the
// listener plain TCP, which changes nothing else.
func TestDeadListenerExitsNonZero(t *testing.T) {
	ss := testtool.Need(t, "ss", "Debian package iproute2")
	c := startCollector(t, options{Env: []string{"GODEBUG=multipathtcp=0"}})
	if resp := c.record(llmEvent("before")); resp.Accepted != 1 {
		t.Fatalf("a batch before: %v", resp)
	}
	_, port, err := net.SplitHostPort(c.grpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(ss, "-K", "-t", "state", "listening", "sport", "=", ":"+port).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ":"+port) {
		msg := "ss -K killed no listening socket on :" + port + " (a kernel without CONFIG_INET_DIAG_DESTROY, or no CAP_NET_ADMIN): " + string(out)
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true: %s (err %v)", msg, err)
		}
		t.Skip(msg)
	}
	select {
	case <-c.exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("collector still running 15s after its gRPC listener died\n%s", c.stderr.String())
	}
	if c.exitCode != 1 {
		t.Errorf("exit code %d, want 1", c.exitCode)
	}
	log := c.stderr.String()
	died := strings.Index(log, "server stopped serving; shutting down")
	exporterStopped := strings.Index(log, `msg=stopped component=exporter`)
	if died < 0 || exporterStopped < died {
		t.Errorf("want the listener's death logged, then a clean shutdown through the exporter; log:\n%s", log)
	}
	if !strings.Contains(log, "collector failed") {
		t.Errorf("the exit is not logged as a failure; log:\n%s", log)
	}
}
