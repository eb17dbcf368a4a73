package config

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// problemLine is the shape of every line of a Parse error: a line number
// and a message, or (for a value the file leaves at a default that another
// value makes wrong, and for YAML without a line) the path or the kind.
var problemLine = regexp.MustCompile(`^(line [1-9][0-9]*: .|(receiver|http|exporters|conversations|pricing|shutdown|log)[. ]|invalid YAML: )`)

// FuzzParse checks that Parse never panics, that what it accepts is valid,
// and that every problem it reports has the documented shape.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	files = append(files, filepath.Join("..", "config.yaml"))
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		"",
		"receiver: ${env:HOME}",
		"log:\n  level: ${env:X:-debug}$$${",
		"a: &a [*a]\nreceiver: *a",
		"exporters: {otlp: {headers: {? [a]: b, <<: {c: d}}}}",
		"conversations: {default_max_budget_usd: 1e400}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			if !reflect.DeepEqual(cfg, Config{}) {
				t.Errorf("Parse returned a non-zero Config with an error")
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !problemLine.MatchString(line) {
					t.Errorf("problem %q names neither a line nor a path", line)
				}
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Errorf("Parse accepted a config that Validate rejects: %v", err)
		}
		again, err := Parse(data)
		if err != nil || !reflect.DeepEqual(again, cfg) {
			t.Errorf("Parse is not deterministic: %+v, %v then %+v", cfg, err, again)
		}
	})
}
