package exporter

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// blockingCollector counts collections and holds each until release is
// closed.
type blockingCollector struct {
	c       prometheus.Collector
	calls   atomic.Int64
	release chan struct{}
}

func (b *blockingCollector) Describe(chan<- *prometheus.Desc) {}

func (b *blockingCollector) Collect(ch chan<- prometheus.Metric) {
	b.calls.Add(1)
	<-b.release
	b.c.Collect(ch)
}

func testRegistry(t *testing.T) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "test_total", Help: "A test counter."}, []string{"k"})
	reg.MustRegister(c)
	for _, k := range []string{"a", "b", "c"} {
		c.WithLabelValues(k).Add(3)
	}
	return reg
}

func scrapeWith(h http.Handler, header map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestScrapeSharesOneGather: eight scrapers arriving while a gather runs
// get that gather's exposition; nobody gathers again.
func TestScrapeSharesOneGather(t *testing.T) {
	g := &blockingCollector{c: testRegistry(t), release: make(chan struct{})}
	h := newScrapeHandler(g, slog.New(slog.DiscardHandler), 10*time.Second)
	const scrapers = 8
	bodies := make([]string, scrapers)
	var wg sync.WaitGroup
	for i := range scrapers {
		wg.Go(func() {
			rec := scrapeWith(h, map[string]string{"Accept-Encoding": "gzip"})
			if rec.Code != http.StatusOK {
				t.Errorf("scraper %d: status %d: %s", i, rec.Code, rec.Body)
			}
			bodies[i] = rec.Body.String()
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for h.waiting.Load() < scrapers {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d scrapers waiting", h.waiting.Load(), scrapers)
		}
		time.Sleep(time.Millisecond)
	}
	close(g.release)
	wg.Wait()
	if n := g.calls.Load(); n != 1 {
		t.Errorf("%d gathers for %d concurrent scrapers, want 1", n, scrapers)
	}
	for i := range bodies {
		if bodies[i] != bodies[0] || bodies[i] == "" {
			t.Errorf("scraper %d got a different or empty body", i)
		}
	}
	// The next scrape, after the flight, gathers afresh.
	scrapeWith(h, nil)
	if n := g.calls.Load(); n != 2 {
		t.Errorf("%d gathers after a later scrape, want 2", n)
	}
}

func TestScrapeEncodings(t *testing.T) {
	h := newScrapeHandler(testRegistry(t), slog.New(slog.DiscardHandler), 10*time.Second)
	const want = "# HELP test_total A test counter.\n# TYPE test_total counter\n" +
		"test_total{k=\"a\"} 3\ntest_total{k=\"b\"} 3\ntest_total{k=\"c\"} 3\n"
	for _, tc := range []struct {
		name, acceptEncoding string
		gzipped              bool
	}{
		{"gzip", "gzip", true},
		{"prometheus", "gzip, deflate, br", true},
		{"any", "*", true},
		{"identity", "", false},
		{"gzip refused", "gzip;q=0, identity", false},
		{"other only", "br", false},
		{"gzip with q", "br;q=1.0, GZIP;q=0.5", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := scrapeWith(h, map[string]string{"Accept-Encoding": tc.acceptEncoding})
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
				t.Errorf("Content-Type %q, want the text format", ct)
			}
			body := rec.Body.Bytes()
			if got := rec.Header().Get("Content-Encoding") == "gzip"; got != tc.gzipped {
				t.Fatalf("Content-Encoding %q, want gzip=%v", rec.Header().Get("Content-Encoding"), tc.gzipped)
			}
			if tc.gzipped {
				zr, err := gzip.NewReader(bytes.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				if body, err = io.ReadAll(zr); err != nil {
					t.Fatal(err)
				}
			}
			if string(body) != want {
				t.Errorf("body\n%s\nwant\n%s", body, want)
			}
		})
	}
	// Protobuf on request, as Prometheus asks for native histograms.
	rec := scrapeWith(h, map[string]string{"Accept": "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"})
	if got := expfmt.ResponseFormat(rec.Header()).FormatType(); got != expfmt.TypeProtoDelim {
		t.Errorf("format %v for a protobuf Accept, want delimited protobuf", got)
	}
}

// failingCollector sends what c collects (if anything), then a metric that
// cannot be written.
type failingCollector struct{ c prometheus.Collector }

func (failingCollector) Describe(chan<- *prometheus.Desc) {}

func (f failingCollector) Collect(ch chan<- prometheus.Metric) {
	if f.c != nil {
		f.c.Collect(ch)
	}
	err := errors.New("collector broke")
	ch <- prometheus.NewInvalidMetric(prometheus.NewInvalidDesc(err), err)
}

func TestScrapeGatherErrors(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	rec := scrapeWith(newScrapeHandler(failingCollector{}, log, time.Second), nil)
	if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), "collector broke") {
		t.Errorf("nothing gathered: status %d %q, want 500 naming the error", rec.Code, rec.Body)
	}
	rec = scrapeWith(newScrapeHandler(failingCollector{c: testRegistry(t)}, log, time.Second), nil)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `test_total{k="a"} 3`) {
		t.Errorf("some gathered: status %d %q, want 200 with what was gathered", rec.Code, rec.Body)
	}
}

func TestScrapeTimeout(t *testing.T) {
	g := &blockingCollector{c: testRegistry(t), release: make(chan struct{})}
	defer close(g.release)
	rec := scrapeWith(newScrapeHandler(g, slog.New(slog.DiscardHandler), 50*time.Millisecond), nil)
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "scrape timeout") {
		t.Errorf("status %d %q, want 503 naming the timeout", rec.Code, rec.Body)
	}
}

// decodedBody is the response body, gunzipped when it says gzip.
func decodedBody(t testing.TB, rec *httptest.ResponseRecorder) []byte {
	t.Helper()
	body := rec.Body.Bytes()
	if rec.Header().Get("Content-Encoding") != "gzip" {
		return body
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("gzip body: %v", err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gzip body: %v", err)
	}
	return out
}

// TestScrapeGarbageHeaders: whatever Accept and Accept-Encoding say, the
// scrape answers 200 with the whole exposition in a format it names.
func TestScrapeGarbageHeaders(t *testing.T) {
	h := newScrapeHandler(testRegistry(t), slog.New(slog.DiscardHandler), 10*time.Second)
	want := decodedBody(t, scrapeWith(h, nil))
	for _, hdr := range []map[string]string{
		{"Accept-Encoding": ";;;,,,q=2"},
		{"Accept-Encoding": "gzip;q=abc"},
		{"Accept-Encoding": "gzip;q=-1"},
		{"Accept-Encoding": "\xff\xfe"},
		{"Accept": "text/html"},
		{"Accept": "*/*;q=nonsense, application/json"},
		{"Accept": "text/plain;version=9.9.9"},
		{"Accept": "\x00\x01", "Accept-Encoding": "identity;q=0"},
	} {
		rec := scrapeWith(h, hdr)
		if rec.Code != http.StatusOK {
			t.Errorf("%q: status %d", hdr, rec.Code)
			continue
		}
		if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
			t.Errorf("%q: Content-Type %q, want the text format", hdr, ct)
		}
		if got := decodedBody(t, rec); !bytes.Equal(got, want) {
			t.Errorf("%q: body\n%s\nwant\n%s", hdr, got, want)
		}
	}
}

// FuzzScrapeHeaders: any Accept and Accept-Encoding get a 200 whose body,
// decoded as its headers say, parses in the format they name.
func FuzzScrapeHeaders(f *testing.F) {
	for _, seed := range [][2]string{
		{"", ""}, {"text/plain;version=0.0.4", "gzip"}, {"*/*", "gzip;q=0, identity"},
		{"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited", "br, *"},
		{"application/openmetrics-text;version=1.0.0", "GZIP;Q=0.5"},
	} {
		f.Add(seed[0], seed[1])
	}
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fuzz_total", Help: "A counter."}, []string{"k"})
	reg.MustRegister(c)
	c.WithLabelValues("a").Inc()
	h := newScrapeHandler(reg, slog.New(slog.DiscardHandler), 10*time.Second)
	f.Fuzz(func(t *testing.T, accept, acceptEncoding string) {
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		req.Header["Accept"] = []string{accept}
		req.Header["Accept-Encoding"] = []string{acceptEncoding}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		body := decodedBody(t, rec)
		dec := expfmt.NewDecoder(bytes.NewReader(body), expfmt.ResponseFormat(rec.Header()))
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); err != nil || mf.GetName() != "fuzz_total" {
			t.Fatalf("decode the exposition (%s): %v, %q", rec.Header().Get("Content-Type"), err, mf.GetName())
		}
	})
}
