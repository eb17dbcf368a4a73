package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/agentmeter/agentmeter/config"
)

func TestRunCommands(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("log:\n  level: debug\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("receiver:\n  max_events_per_request: 0\n  dedupe_window: soon\nlog:\n  colour: red\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badWeb := filepath.Join(dir, "badweb.yaml")
	if err := os.WriteFile(badWeb, []byte("http:\n  web_config_file: web.yml\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "web.yml"), []byte("basic_auth_users:\n  prometheus: plaintext\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		args      []string
		code      int
		stdout    string
		stderrAll []string
	}{
		{"version", []string{"version"}, exitOK, "agentmeter collector", nil},
		{"validate good", []string{"validate", "--config", good}, exitOK, "good.yaml: ok", nil},
		{"validate the shipped config", []string{"validate", "--config", "../../config.yaml"}, exitOK, "ok", nil},
		{"validate bad lists every problem", []string{"validate", "--config", bad}, exitUsage, "", []string{
			"receiver.max_events_per_request", "receiver.dedupe_window", "log.colour",
		}},
		{"missing file", []string{"validate", "--config", filepath.Join(dir, "nope.yaml")}, exitUsage, "", []string{"nope.yaml"}},
		{"validate a bad web config file", []string{"validate", "--config", badWeb}, exitUsage, "", []string{
			"http.web_config_file", "web.yml", "hashedSecret",
		}},
		{"run with a bad web config file", []string{"--config", badWeb}, exitUsage, "", []string{"http.web_config_file"}},
		{"run with a bad config", []string{"--config", bad}, exitUsage, "", []string{"receiver.dedupe_window"}},
		{"unknown flag", []string{"--colour"}, exitUsage, "", []string{"flag provided but not defined", "usage: collector"}},
		{"unexpected argument", []string{"validate", "extra"}, exitUsage, "", []string{`unexpected argument "extra"`}},
		{"help", []string{"-h"}, exitOK, "", []string{"usage: collector"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit code %d, want %d; stderr: %s", code, tc.code, stderr.String())
			}
			if !strings.Contains(stdout.String(), tc.stdout) {
				t.Errorf("stdout %q, want it to contain %q", stdout.String(), tc.stdout)
			}
			for _, want := range tc.stderrAll {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr %q, want it to contain %q", stderr.String(), want)
				}
			}
		})
	}
}

func TestSetMemoryLimit(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
	log := slog.New(slog.DiscardHandler)

	setMemoryLimit(config.Memory{LimitMiB: 77}, func(string) (string, bool) { return "", false }, log)
	if got, want := debug.SetMemoryLimit(-1), int64(77<<20-77<<18); got != want {
		t.Errorf("runtime memory limit = %d, want %d (3/4 of 77 MiB)", got, want)
	}
	// GOMEMLIMIT in the environment: the runtime's own limit stays.
	debug.SetMemoryLimit(55 << 20)
	setMemoryLimit(config.Memory{LimitMiB: 77}, func(k string) (string, bool) { return "55MiB", k == "GOMEMLIMIT" }, log)
	if got := debug.SetMemoryLimit(-1); got != 55<<20 {
		t.Errorf("runtime memory limit with GOMEMLIMIT set = %d, want %d", got, 55<<20)
	}
}

func TestSetProcs(t *testing.T) {
	def := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(def) })
	noEnv := func(string) (string, bool) { return "", false }
	for _, tc := range []struct {
		name    string
		storage config.Storage
		env     func(string) (string, bool)
		want    int
	}{
		{"memory only", config.Storage{Sync: true}, noEnv, def},
		{"storage without sync", config.Storage{Directory: "state"}, noEnv, def},
		{"storage with sync", config.Storage{Directory: "state", Sync: true}, noEnv, def + 1},
		{"GOMAXPROCS set", config.Storage{Directory: "state", Sync: true},
			func(k string) (string, bool) { return "1", k == "GOMAXPROCS" }, def},
		// Values the runtime ignores: the rule applies, with a warning.
		{"GOMAXPROCS garbage", config.Storage{Directory: "state", Sync: true},
			func(k string) (string, bool) { return "abc", k == "GOMAXPROCS" }, def + 1},
		{"GOMAXPROCS zero", config.Storage{Directory: "state", Sync: true},
			func(k string) (string, bool) { return "0", k == "GOMAXPROCS" }, def + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runtime.GOMAXPROCS(def)
			var out bytes.Buffer
			setProcs(tc.storage, tc.env, slog.New(slog.NewTextHandler(&out, nil)))
			if got := runtime.GOMAXPROCS(0); got != tc.want {
				t.Errorf("GOMAXPROCS = %d, want %d", got, tc.want)
			}
			env, _ := tc.env("GOMAXPROCS")
			if ignored := strings.Contains(out.String(), "the Go runtime ignored it"); ignored != (env == "abc" || env == "0") {
				t.Errorf("log %q: warning about an ignored GOMAXPROCS %v, want %v", out.String(), ignored, !ignored)
			}
		})
	}
}
