package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runCollector runs the collector binary with args to completion and returns
// its exit code, stdout and stderr.
func runCollector(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	needBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, collectorBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &exit) && ctx.Err() == nil:
		return exit.ExitCode(), stdout.String(), stderr.String()
	default:
		t.Fatalf("collector %s: %v\nstderr:\n%s", strings.Join(args, " "), err, stderr.String())
		return -1, "", ""
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestValidateCommand(t *testing.T) {
	t.Parallel()
	good := configYAML(options{}.withDefaults(), "127.0.0.1:4317", "127.0.0.1:9464")
	goodOTLP := configYAML(options{OTLP: &otlpOptions{
		Endpoint: "127.0.0.1:4317", Protocol: "grpc", Interval: 10 * time.Second, Timeout: 5 * time.Second,
	}}.withDefaults(), "127.0.0.1:4317", "127.0.0.1:9464")

	tests := []struct {
		name      string
		config    string
		wantOK    bool
		wantInErr []string // each must appear on stderr
	}{
		{name: "good", config: good, wantOK: true},
		{name: "good with otlp", config: goodOTLP, wantOK: true},
		{
			name: "three problems",
			config: strings.NewReplacer(
				"max_recv_msg_size_mib: 4", "max_recv_msg_size_mib: -1",
				"protocol: grpc", "protocol: carrier-pigeon",
				"level: debug", "level: shouty",
			).Replace(goodOTLP),
			wantInErr: []string{"receiver.grpc.max_recv_msg_size_mib", "exporters.otlp.protocol", "log.level"},
		},
		{
			name:      "unknown key",
			config:    strings.Replace(good, "  max_events_per_request:", "  max_events_per_requets:", 1),
			wantInErr: []string{"max_events_per_requets"},
		},
		{
			name:      "bad duration",
			config:    strings.Replace(good, "grace_period: 10s", "grace_period: soon", 1),
			wantInErr: []string{"shutdown.grace_period"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, "config.yaml", tc.config)
			code, stdout, stderr := runCollector(t, "validate", "--config", path)
			if tc.wantOK {
				if code != 0 {
					t.Errorf("validate exit code %d, want 0\nstderr:\n%s\nconfig:\n%s", code, stderr, tc.config)
				}
				return
			}
			if code == 0 {
				t.Errorf("validate exit code 0, want non-zero\nstdout:\n%s\nconfig:\n%s", stdout, tc.config)
			}
			for _, key := range tc.wantInErr {
				if !strings.Contains(stderr, key) {
					t.Errorf("validate stderr does not name %q:\n%s", key, stderr)
				}
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		t.Parallel()
		code, _, stderr := runCollector(t, "validate", "--config", filepath.Join(t.TempDir(), "absent.yaml"))
		if code == 0 || !strings.Contains(stderr, "absent.yaml") {
			t.Errorf("validate of a missing file: exit %d, stderr %q; want non-zero naming the file", code, stderr)
		}
	})
	t.Run("unknown flag", func(t *testing.T) {
		t.Parallel()
		for _, args := range [][]string{{"--no-such-flag"}, {"validate", "--no-such-flag"}} {
			code, _, stderr := runCollector(t, args...)
			if code == 0 {
				t.Errorf("collector %v: exit 0, want non-zero", args)
			}
			if !strings.Contains(strings.ToLower(stderr), "usage") || !strings.Contains(stderr, "no-such-flag") {
				t.Errorf("collector %v: stderr does not show the usage and the bad flag:\n%s", args, stderr)
			}
		}
	})
}
