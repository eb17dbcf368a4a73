package pricing

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseErrors(t *testing.T) {
	tests := []struct {
		file string
		want []string // each must appear in the one error
	}{
		{"many_problems.yaml", []string{
			`line 3: as_of: must be a date YYYY-MM-DD, got "2025-13-45"`,
			`line 4: sources[0]: must be an http(s) URL, got "ftp://example.com/prices"`,
			`line 10: models[0].cache_read: must not be negative, got -0.5`,
			`line 13: models[1].input: must be a finite number, got .nan`,
			`line 14: models[1].output: must be a finite number, got .inf`,
			`line 15: models[2].name: duplicate model "gpt-x" for provider "openai", already declared at models[0].name`,
			`line 17: models[2].aliases[1]: duplicate model "gpt-z" for provider "openai", already declared at models[2].aliases[0]`,
			`line 21: models[3].name: must not be empty`,
			`line 26: models[4].patterns[0]: bad pattern "gpt-[a-*": syntax error in pattern`,
			`line 26: models[4].patterns[1]: pattern "gpt-plain" has no wildcard; list it under aliases`,
			`line 24: models[4].output: required`,
			`line 33: models[5].tiers[0].threshold: required: a tier applies above a prompt size`,
			`line 35: models[5].tiers[1].threshold: must be a whole number of prompt tokens > 0, got 0`,
			`line 36: models[5].tiers[1].input: must be a number`,
			`line 38: models[6].provider: required`,
		}},
		{"unknown_key.yaml", []string{
			`line 7: models[0].cache_reed: unknown key`,
			`line 12: models[0].tiers[0].outptu: unknown key`,
			`line 13: pricing_unit: unknown key`,
		}},
		{"unknown_key.json", []string{`line 9: models[0].cache_write_1hr: unknown key`}},
		{"duplicate_key.json", []string{`line 3: models[0].input: repeated key (first at line 3)`}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", "bad", tt.file)
			_, err := Load(path)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error lacks %q", w)
				}
			}
			if t.Failed() {
				t.Logf("error:\n%s", msg)
			}
			// Every line of the error names a path: nothing unlocated.
			if n := strings.Count(msg, "\n") + 1; n < len(tt.want) {
				t.Errorf("%d problems reported, want at least %d", n, len(tt.want))
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name, format, data, want string
	}{
		{"empty yaml", "yaml", "", "price table is empty"},
		{"empty json", "json", "  ", "price table is empty"},
		{"no models", "yaml", "version: x\n", "models: required"},
		{"models not a list", "yaml", "models: 3\n", "line 1: models: must be a list"},
		{"root not a mapping", "yaml", "- a\n", ": must be a mapping"},
		{"two documents", "yaml", "models: []\n---\nmodels: []\n", "a file holds one YAML document, found a second"},
		{"bad format", "toml", "", `unknown price table format "toml"`},
		{"yaml syntax", "yaml", "models: [\n", "line 1: invalid YAML"},
		{"json syntax", "json", `{"models": [}`, "line 1: invalid JSON"},
		{"json trailing", "json", `{"models": []} {}`, "unexpected data after the top-level value"},
		{"json too deep", "json", strings.Repeat("[", 100), "nested more than"},
		{"merge key", "yaml", "base: &b {input: 1}\n", "base: unknown key"},
		{"yaml merge", "yaml", "models:\n  - <<: {input: 1}\n    provider: p\n    name: m\n    output: 1\n", "merge keys (<<) are not supported"},
		{"quoted price", "yaml", "models: [{provider: p, name: m, input: '1', output: 1}]", "models[0].input: must be a number"},
		{"float threshold", "yaml", "models: [{provider: p, name: m, input: 1, output: 1, tiers: [{threshold: 1.5, input: 1, output: 1}]}]", "tiers[0].threshold: must be a whole number"},
		{"duplicate thresholds", "yaml", "models: [{provider: p, name: m, input: 1, output: 1, tiers: [{threshold: 5, input: 1, output: 1}, {threshold: 5, input: 2, output: 2}]}]", "two tiers have the threshold 5"},
		{"duplicate pattern", "yaml", "models: [{provider: p, name: m, patterns: [a*], input: 1, output: 1}, {provider: p, name: n, patterns: [A*], input: 1, output: 1}]", `duplicate pattern "a*"`},
		{"alias clashes across aliased provider", "yaml", "models: [{provider: bedrock, name: m, input: 1, output: 1}, {provider: aws.bedrock, name: m, input: 1, output: 1}]", `duplicate model "m" for provider "aws.bedrock"`},
		{"too many tiers", "yaml", "models: [{provider: p, name: m, input: 1, output: 1, tiers: [" + strings.Repeat("{threshold: 1, input: 1, output: 1},", maxTiersPerModel+1) + "]}]", "more than the limit"},
		{"too large", "yaml", strings.Repeat(" ", maxTableBytes+1), "more than the limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.data), tt.format)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	tests := []struct{ name, format, data string }{
		{"underscore threshold, anchors", "yaml", `
models:
  - {provider: p, name: m, input: 1, output: 1, tiers: [&long {threshold: 200_000, input: 2, output: 2}]}
  - {provider: p, name: n, input: 1, output: 1, tiers: [*long]}`},
		{"free model", "yaml", "models: [{provider: p, name: m, input: 0, output: 0}]"},
		{"json exponent", "json", `{"models": [{"provider": "p", "name": "m", "input": 1.5e0, "output": 2E1}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse([]byte(tt.data), tt.format); err != nil {
				t.Errorf("Parse: %v", err)
			}
		})
	}
}

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
