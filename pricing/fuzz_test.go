package pricing

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that the table parser never panics, in either format,
// and that a table it accepts can be queried and priced.
func FuzzParse(f *testing.F) {
	f.Add(defaultPricesYAML, false)
	f.Add([]byte(matchTable), false)
	f.Add([]byte(`{"models": [{"provider": "p", "name": "m", "input": 1, "output": 2, "tiers": [{"threshold": 10, "input": 2, "output": 3}]}]}`), true)
	f.Add([]byte("models: [{provider: p, name: m, patterns: ['m-*'], input: .inf, output: 1}]"), false)
	f.Add([]byte("a: &a [*a]"), false)
	for _, dir := range []string{"bad", "golden"} {
		files, _ := filepath.Glob(filepath.Join("testdata", dir, "*"))
		for _, file := range files {
			if data, err := os.ReadFile(file); err == nil {
				f.Add(data, filepath.Ext(file) == ".json")
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, isJSON bool) {
		format := "yaml"
		if isJSON {
			format = "json"
		}
		tab, err := Parse(data, format)
		if err != nil {
			if tab != nil {
				t.Fatal("Parse returned a table with an error")
			}
			return
		}
		_ = tab.Version()
		for _, provider := range append([]string{""}, tab.providerNames...) {
			for _, idx := range tab.providers {
				for name := range idx.exact {
					p, ok := tab.Price(provider, name)
					if ok {
						p.Cost(Usage{Prompt: 1 << 40, Completion: 1 << 20, CacheRead: 1 << 30, CacheWrite: 5, CacheWrite1h: 7})
					}
				}
			}
		}
	})
}
