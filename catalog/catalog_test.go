package catalog

import (
	"os"
	"strings"
	"testing"
)

// TestREADMECatalogue keeps the README's catalogue table equal to All: the
// same series, in the same order, with the same kinds.
func TestREADMECatalogue(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- catalogue:begin -->")
	table, _, ok2 := strings.Cut(rest, "<!-- catalogue:end -->")
	if !ok || !ok2 {
		t.Fatal("README has no catalogue markers")
	}
	var rows [][2]string
	for _, line := range strings.Split(strings.TrimSpace(table), "\n")[2:] {
		cells := strings.Split(line, "|")
		if len(cells) < 4 {
			t.Fatalf("bad catalogue row %q", line)
		}
		rows = append(rows, [2]string{strings.Trim(strings.TrimSpace(cells[1]), "`"), strings.TrimSpace(cells[2])})
	}
	if len(rows) != len(All) {
		t.Errorf("README lists %d series, the catalogue %d", len(rows), len(All))
	}
	for i, in := range All {
		if i >= len(rows) {
			break
		}
		if rows[i][0] != in.Prom || rows[i][1] != string(in.Kind) {
			t.Errorf("README row %d = %s (%s), catalogue has %s (%s)", i+1, rows[i][0], rows[i][1], in.Prom, in.Kind)
		}
	}
}

func TestCatalogueComplete(t *testing.T) {
	seen := map[string]bool{}
	for _, in := range All {
		if in.Name == "" || in.Prom == "" || in.Description == "" {
			t.Errorf("%+v: name, Prometheus name and description are required (promtool needs HELP)", in)
		}
		if seen[in.Name] || seen[in.Prom] {
			t.Errorf("%s: repeated", in.Name)
		}
		seen[in.Name], seen[in.Prom] = true, true
		if (in.Kind == Histogram) != (len(in.Buckets) > 0) {
			t.Errorf("%s: buckets only and always for histograms", in.Name)
		}
		for i := 1; i < len(in.Buckets); i++ {
			if in.Buckets[i] <= in.Buckets[i-1] {
				t.Errorf("%s: buckets not increasing", in.Name)
			}
		}
	}
}
