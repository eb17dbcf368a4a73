package exporter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"

	"github.com/agentmeter/agentmeter/config"
)

// The formats a scrape may negotiate (expfmt.DefaultAcceptedFormats), by
// the Accept header that asks for each.
var streamFormats = map[string]string{
	"text":         "text/plain;version=0.0.4",
	"protodelim":   "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited",
	"prototext":    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text",
	"protocompact": "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=compact-text",
}

// smallRegistry has families of 1 to 7 metrics, a histogram among them, so
// that small chunks split them every way.
func smallRegistry(t *testing.T) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	a := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "a_total", Help: "Seven series."}, []string{"k"})
	b := prometheus.NewGauge(prometheus.GaugeOpts{Name: "b", Help: "One series."})
	c := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "c_seconds", Help: "Five histograms.", Buckets: []float64{0.1, 1, 10}}, []string{"k", "l"})
	d := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "d_total", Help: "Three series."}, []string{"k"})
	reg.MustRegister(a, b, c, d)
	for i := range 7 {
		a.WithLabelValues(fmt.Sprint(i)).Add(float64(i))
	}
	b.Set(42)
	for i := range 5 {
		c.WithLabelValues(fmt.Sprint(i), "x").Observe(float64(i) / 2)
	}
	for i := range 3 {
		d.WithLabelValues(fmt.Sprint(i)).Inc()
	}
	return reg
}

// renderAs scrapes h in the named format and returns the decoded body.
func renderAs(t testing.TB, h http.Handler, format string) []byte {
	t.Helper()
	rec := scrapeWith(h, map[string]string{"Accept": streamFormats[format], "Accept-Encoding": "gzip"})
	if rec.Code != http.StatusOK {
		t.Fatalf("%s: status %d: %s", format, rec.Code, rec.Body)
	}
	return decodedBody(t, rec)
}

// familyLines is each family of mfs as its sorted text sample lines, with
// its HELP and TYPE: what must match whatever the order of the metrics.
func familyLines(t testing.TB, mfs []*dto.MetricFamily) map[string]string {
	t.Helper()
	out := make(map[string]string, len(mfs))
	for _, mf := range mfs {
		var b strings.Builder
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatalf("encode %s: %v", mf.GetName(), err)
		}
		lines := strings.Split(strings.TrimSpace(b.String()), "\n")
		slices.Sort(lines)
		if _, dup := out[mf.GetName()]; dup {
			t.Errorf("family %s twice", mf.GetName())
		}
		out[mf.GetName()] = strings.Join(lines, "\n")
	}
	return out
}

// parseExposition decodes body in format into its families and fails if a
// family is not written in one piece: in the text format, a HELP and TYPE
// once and every sample of the family after them before the next family
// begins; in a protobuf format, the messages of one family one after
// another (a family split across chunks is sent as several), merged here.
func parseExposition(t testing.TB, body []byte, format string) []*dto.MetricFamily {
	t.Helper()
	if format == "text" {
		p := expfmt.NewTextParser(model.UTF8Validation) // refuses a second HELP or TYPE of a family
		all, err := p.TextToMetricFamilies(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("parse the text exposition: %v", err)
		}
		// Each block from a HELP line to the next is exactly one family.
		blocks := strings.Split(string(body), "\n# HELP ")
		for i, block := range blocks {
			if i > 0 {
				block = "# HELP " + block
			}
			bp := expfmt.NewTextParser(model.UTF8Validation)
			mfs, err := bp.TextToMetricFamilies(strings.NewReader(block + "\n"))
			if err != nil || len(mfs) != 1 {
				t.Fatalf("block %d is not one family (%v, %d families):\n%.400s", i, err, len(mfs), block)
			}
		}
		out := make([]*dto.MetricFamily, 0, len(all))
		for _, mf := range all {
			out = append(out, mf)
		}
		return out
	}
	var fmtType expfmt.Format
	switch format {
	case "protodelim":
		fmtType = expfmt.NewFormat(expfmt.TypeProtoDelim)
	case "prototext":
		fmtType = expfmt.NewFormat(expfmt.TypeProtoText)
	default:
		fmtType = expfmt.NewFormat(expfmt.TypeProtoCompact)
	}
	if format != "protodelim" {
		// expfmt cannot decode the debug formats; check that the pieces
		// of a family (each a message naming it, at the start of a line)
		// come one after another.
		seen := map[string]bool{}
		last := ""
		for _, line := range strings.Split(string(body), "\n") {
			name, ok := strings.CutPrefix(line, `name: "`) // text
			if !ok {
				name, ok = strings.CutPrefix(line, `name:"`) // compact text
			}
			if !ok {
				continue
			}
			name, _, _ = strings.Cut(name, `"`)
			if name != last && seen[name] {
				t.Fatalf("family %s written in two places", name)
			}
			seen[name], last = true, name
		}
		return nil
	}
	dec := expfmt.NewDecoder(bytes.NewReader(body), fmtType)
	var out []*dto.MetricFamily
	for {
		mf := &dto.MetricFamily{}
		if err := dec.Decode(mf); errors.Is(err, io.EOF) {
			return out
		} else if err != nil {
			t.Fatalf("decode the protobuf exposition: %v", err)
		}
		if n := len(out); n > 0 && out[n-1].GetName() == mf.GetName() {
			out[n-1].Metric = append(out[n-1].Metric, mf.Metric...)
			continue
		}
		for _, prev := range out {
			if prev.GetName() == mf.GetName() {
				t.Fatalf("family %s written in two places", mf.GetName())
			}
		}
		out = append(out, mf)
	}
}

// checkStreamed scrapes h in every format and checks that each exposition
// holds exactly the families g gathers, each in one piece.
func checkStreamed(t *testing.T, h http.Handler, g prometheus.Gatherer, skip func(name string) bool) {
	t.Helper()
	want, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	wantLines := familyLines(t, want)
	for format := range streamFormats {
		got := parseExposition(t, renderAs(t, h, format), format)
		if got == nil {
			continue // a debug format: checked for pieces only
		}
		gotLines := familyLines(t, got)
		for name, w := range wantLines {
			if skip(name) {
				continue
			}
			if g := gotLines[name]; g != w {
				t.Errorf("%s: family %s\n%.600s\nwant\n%.600s", format, name, g, w)
			}
		}
		if len(gotLines) != len(wantLines) {
			t.Errorf("%s: %d families, want %d", format, len(gotLines), len(wantLines))
		}
	}
}

// TestScrapeStreamsFamiliesWhole: whatever the chunk size, so wherever the
// chunks split the families, every format holds each family once, whole,
// in one piece, with the registry's HELP and TYPE.
func TestScrapeStreamsFamiliesWhole(t *testing.T) {
	reg := smallRegistry(t)
	for _, chunk := range []int{1, 2, 3, 4, 5, 7, 11, 16, 100} {
		t.Run(fmt.Sprintf("chunk=%d", chunk), func(t *testing.T) {
			h := newScrapeHandler(reg, slog.New(slog.DiscardHandler), 10*time.Second)
			h.chunk = chunk
			checkStreamed(t, h, reg, func(string) bool { return false })
		})
	}
}

// TestScrapeStreamsTheExporter: the exporter's own registry (the OTel
// exporter's families, the Go and process collectors) streamed in small
// chunks is what its Gather returns.
func TestScrapeStreamsTheExporter(t *testing.T) {
	e, err := New(context.Background(), config.Default(), Deps{Resource: resource.Empty(), Producers: []sdkmetric.Producer{seriesProcessor(t, 40)}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = e.Shutdown(context.Background()) }()
	h := newScrapeHandler(e.registry, slog.New(slog.DiscardHandler), 10*time.Second)
	h.chunk = 7
	// The runtime's own figures change between two gathers.
	changes := func(name string) bool {
		return strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_")
	}
	checkStreamed(t, h, e.registry, changes)
}

// repeatingCollector sends family a, then b, then a again: a collector
// that breaks the contiguity streamFamilies relies on.
type repeatingCollector struct{ a, b *prometheus.Desc }

func (repeatingCollector) Describe(chan<- *prometheus.Desc) {}

func (r repeatingCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(r.a, prometheus.CounterValue, 1, "1")
	ch <- prometheus.MustNewConstMetric(r.b, prometheus.GaugeValue, 2, "1")
	ch <- prometheus.MustNewConstMetric(r.a, prometheus.CounterValue, 3, "2")
}

// TestScrapeFamilyCollectedTwice: a family sent again after another began
// is left out and logged, never written twice.
func TestScrapeFamilyCollectedTwice(t *testing.T) {
	src := repeatingCollector{
		a: prometheus.NewDesc("a_total", "A.", []string{"k"}, nil),
		b: prometheus.NewDesc("b", "B.", []string{"k"}, nil),
	}
	var logged bytes.Buffer
	h := newScrapeHandler(src, slog.New(slog.NewTextHandler(&logged, nil)), 10*time.Second)
	h.chunk = 1
	body := renderAs(t, h, "text")
	got := familyLines(t, parseExposition(t, body, "text"))
	if !strings.Contains(got["a_total"], `a_total{k="1"} 1`) || strings.Contains(got["a_total"], `k="2"`) || got["b"] == "" {
		t.Errorf("exposition\n%s\nwant a_total{k=\"1\"} and b only", body)
	}
	if !strings.Contains(logged.String(), "a_total collected again") {
		t.Errorf("log %q, want the family collected again named", logged.String())
	}
}

// livePeak runs f with the collector at GOGC=10, so that the heap is
// collected every few MiB, and returns the live heap before and the
// highest live heap a collection found during f.
func livePeak(f func()) (before, peak uint64) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	read := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	runtime.GC()
	before = read()
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	var (
		mu      sync.Mutex
		highest = before
		stop    = make(chan struct{})
		done    = make(chan struct{})
	)
	observe := func() {
		v := read()
		mu.Lock()
		highest = max(highest, v)
		mu.Unlock()
	}
	go func() {
		defer close(done)
		tick := time.NewTicker(200 * time.Microsecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				observe()
			}
		}
	}()
	f()
	close(stop)
	<-done
	observe()
	mu.Lock()
	defer mu.Unlock()
	return before, highest
}

// TestScrapeMemory measures, at the 2000-series cap, how far the live heap
// rises above idle while /metrics is served: one scrape, eight concurrent
// scrapes, and the registry's Gather that promhttp's handler holds whole
// (every family as dto.MetricFamily trees). The streamed scrape must stay
// under a third of the Gather's, and eight scrapers under one and a half
// times one scraper's:
//
//	go test -v -run TestScrapeMemory ./exporter/
func TestScrapeMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("measures the heap at the series cap")
	}
	e, err := New(context.Background(), config.Default(), Deps{Resource: resource.Empty(), Producers: []sdkmetric.Producer{fullProcessor(t)}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = e.Shutdown(context.Background()) }()
	// A long timeout: at GOGC=10, and under -race, a scrape is slow.
	h := newScrapeHandler(e.registry, slog.New(slog.DiscardHandler), 5*time.Minute)
	scrapeOnce(t, h) // warm: the first collection creates the SDK's state
	const mib = 1 << 20
	rise := func(f func()) float64 {
		before, peak := livePeak(f)
		return float64(peak-before) / mib
	}
	var families int
	gather := rise(func() {
		mfs, err := e.registry.Gather()
		if err != nil {
			t.Error(err)
		}
		families = len(mfs)
	})
	one := rise(func() { scrapeOnce(t, h) })
	eight := rise(func() {
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() { scrapeOnce(t, h) })
		}
		wg.Wait()
	})
	t.Logf("live heap above idle at the %d-series cap (%d families): Gather held whole %.1f MiB; "+
		"streamed scrape %.1f MiB; eight concurrent streamed scrapes %.1f MiB", seriesCap, families, gather, one, eight)
	if one > gather/3 {
		t.Errorf("a streamed scrape raised the live heap %.1f MiB, over a third of the whole Gather's %.1f MiB", one, gather)
	}
	if eight > 1.5*one+2 {
		t.Errorf("eight concurrent scrapes raised the live heap %.1f MiB, against %.1f MiB for one", eight, one)
	}
}
