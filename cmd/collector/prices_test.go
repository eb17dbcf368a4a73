package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPricesCommands(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	small := filepath.Join("..", "..", "pricing", "testdata", "litellm", "small.json")
	over := write("over.yaml", `
models:
  - provider: openai
    name: gpt-private
    patterns: ["gpt-private-*"]
    input: 1
    output: 2
    tiers: [{threshold: 1000, input: 2, output: 4}]
  - provider: openai
    name: gpt-private
    effective_from: 2026-06-01
    input: 0.5
    output: 1
`)
	goodCfg := write("good.yaml", "pricing:\n  overrides: over.yaml\n")
	badTable := write("bad.json", `{"m": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1e-06`)
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout []string
		stderr []string
	}{
		{"version names the snapshot", []string{"version"}, exitOK, []string{"built-in price table litellm-", "pypi:litellm=="}, nil},
		{"bedrock regional id", []string{"prices", "lookup", "--provider", "aws.bedrock", "--model", "us.anthropic.claude-opus-4-6-v1"}, exitOK,
			[]string{`match:  exact "us.anthropic.claude-opus-4-6-v1" of provider aws.bedrock`, "litellm:us.anthropic.claude-opus-4-6-v1", "5.5e-06 (5.5)"}, nil},
		{"litellm-style model", []string{"prices", "lookup", "--model", "anthropic/claude-opus-4-6"}, exitOK,
			[]string{`exact "claude-opus-4-6" of provider anthropic`}, nil},
		{"tiers", []string{"prices", "lookup", "--provider", "openai", "--model", "gpt-5.6"}, exitOK,
			[]string{"up to 272000", "above 272000"}, nil},
		{"alias", []string{"prices", "lookup", "--provider", "bedrock", "--model", "us.vendor.model-v1", "--table", small}, exitOK,
			[]string{`match:  alias "us.vendor.model-v1:0"`}, nil},
		{"pattern", []string{"prices", "lookup", "--provider", "openai", "--model", "gpt-private-2", "--overrides", over, "--at", "2026-01-01"}, exitOK,
			[]string{`match:  pattern "gpt-private-*"`, "overrides:models[0]", "not lent"}, nil},
		{"effective_from", []string{"prices", "lookup", "--provider", "openai", "--model", "gpt-private", "--config", goodCfg, "--at", "2026-06-02T00:00:00Z"}, exitOK,
			[]string{"overrides:models[1]", "in force since 2026-06-01T00:00:00Z", "5e-07 (0.5)"}, nil},
		{"off-peak open", []string{"prices", "lookup", "--provider", "deepseek", "--model", "deepseek-v4-pro", "--at", "2026-12-05T03:00:00Z"}, exitOK,
			[]string{"off-peak, open now", "6.6e-07 (0.66)", "off-peak row applies"}, nil},
		{"off-peak closed", []string{"prices", "lookup", "--provider", "deepseek", "--model", "deepseek-v4-pro", "--at", "2026-12-02T03:00:00Z"}, exitOK,
			[]string{"closed at that time"}, nil},
		{"unpriced", []string{"prices", "lookup", "--provider", "openai", "--model", "no-such-model"}, exitRuntime,
			[]string{"match:  none"}, nil},
		{"lookup needs a model", []string{"prices", "lookup", "--provider", "openai"}, exitUsage, nil, []string{"--model is required"}},
		{"bad --at", []string{"prices", "lookup", "--model", "m", "--at", "soon"}, exitUsage, nil, []string{"--at"}},
		{"bad format", []string{"prices", "lookup", "--model", "m", "--table", small, "--format", "csv"}, exitRuntime, nil, []string{`unknown price table format "csv"`}},
		{"check litellm", []string{"prices", "check", small}, exitOK,
			[]string{"ok: sha256:", "8 priced", "mode embedding", "negative: input_cost_per_token: must not be negative", "mistral_ai clash", "input_cost_per_token_flex"}, nil},
		{"check agentmeter", []string{"prices", "check", over}, exitOK, []string{"ok:", "(agentmeter,"}, nil},
		{"check refuses a truncated file", []string{"prices", "check", badTable}, exitRuntime, []string{"refused"}, []string{"invalid JSON"}},
		{"check a missing file", []string{"prices", "check", filepath.Join(dir, "nope.json")}, exitRuntime, []string{"refused"}, []string{"nope.json"}},
		{"check needs one file", []string{"prices", "check"}, exitUsage, nil, []string{"name one table file"}},
		{"unknown subcommand", []string{"prices", "list"}, exitUsage, nil, []string{"usage:"}},
		{"validate refuses a bad table", []string{"validate", "--config", write("badcfg.yaml", "pricing:\n  table: bad.json\n")}, exitUsage, nil, []string{"pricing:", "invalid JSON"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit code %d, want %d; stdout:\n%s\nstderr:\n%s", code, tc.code, stdout.String(), stderr.String())
			}
			for _, want := range tc.stdout {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
				}
			}
			for _, want := range tc.stderr {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
				}
			}
		})
	}
}
