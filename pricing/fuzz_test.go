package pricing

import (
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzParse checks that the table parser never panics, in either format,
// and that a table it accepts can be queried and priced.
func FuzzParse(f *testing.F) {
	f.Add([]byte(matchTable), false)
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

// FuzzLiteLLM checks that the LiteLLM reader never panics, and that a table
// it accepts prices every entry it lists without a negative or NaN cost.
func FuzzLiteLLM(f *testing.F) {
	if data, err := os.ReadFile(filepath.Join("testdata", "litellm", "small.json")); err == nil {
		f.Add(data)
	}
	f.Add([]byte(`{"m": {"litellm_provider": "xai", "mode": "chat", "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06, "input_cost_per_token_above_1k_tokens": 3e-06, "cache_read_input_token_cost_above_99999999999999k_tokens": 1}}`))
	f.Add([]byte(`{"q": {"litellm_provider": "dashscope", "tiered_pricing": [{"range": [0, 10], "input_cost_per_token": 1, "output_cost_per_token": 1}, {"range": [10, 1e300], "input_cost_per_token": 2, "output_cost_per_token": 2}]}}`))
	f.Add([]byte(`{"a": {"b": {"c": [[[[[]]]]]}}, "d": null}`))
	f.Add([]byte(`{"d": {"litellm_provider": "deepseek", "mode": "chat", "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06, "off_peak_pricing": {"input_cost_per_token": 5e-07, "weekday_timezone": "Asia/Shanghai", "hours_utc": "16:30-00:30", "windows": [{"hours_utc": ["00:00-01:00", "10:00-00:00"], "weekdays": [1, "sat", 9]}]}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tab, err := Parse(data, FormatLiteLLM)
		if err != nil {
			if tab != nil {
				t.Fatal("Parse returned a table with an error")
			}
			return
		}
		for _, idx := range tab.providers {
			for name := range idx.exact {
				l := tab.Lookup(idx.exact[name].provider, name)
				for _, p := range l.Versions() {
					for _, prompt := range []int64{0, 1, 1000, 200000, 1 << 40} {
						c, s := p.CostAt(Usage{Prompt: prompt, Completion: 7, Reasoning: 3, CacheRead: prompt / 2, CacheWrite: 1, CacheWrite1h: 1}, time.Unix(prompt%(1<<31), 0))
						if c < 0 || s < 0 || math.IsNaN(c) || math.IsNaN(s) {
							t.Fatalf("%s at %d: cost %v savings %v", name, prompt, c, s)
						}
					}
				}
			}
		}
	})
}
