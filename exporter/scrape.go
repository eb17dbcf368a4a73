package exporter

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"golang.org/x/sync/singleflight"
)

// scrapeHandler serves /metrics so that its memory is small and does not
// grow with the number of scrapers. A scrape collects the registry as a
// stream of metrics, gathers it a chunk at a time (streamFamilies) and
// encodes each chunk's families straight into a gzip buffer, so that no
// more than two chunks of metrics are held at once, whatever the number of
// series. Every scrape that arrives while that runs (for the same format)
// joins it and is sent the same bytes, and one render runs at a time
// whatever the format. Scrapers that accept gzip (Prometheus does) get the
// buffer as it is; others get it decompressed as it is written, in a few
// KiB.
//
// At the 2000-series cap the exposition is ~72 MB of text but ~0.9 MB
// gzipped. The registry's Gather held all 24,000 series at once as
// dto.MetricFamily trees (~37 MiB), and its largest family alone is
// ~12 MiB; streamed, a scrape's heap peaks ~10 MiB above idle
// (go test -v -run TestScrapeMemory ./exporter/).
type scrapeHandler struct {
	source prometheus.Collector
	log    *slog.Logger
	// timeout bounds how long a scraper waits for the exposition; the
	// gather itself cannot be cancelled and serves whoever waits for it.
	timeout time.Duration
	// chunk is how many metrics one Gather of the stream takes.
	chunk   int
	flights singleflight.Group
	waiting atomic.Int64 // scrapers waiting for an exposition, for tests
	// rendering is held by the one render in progress, so that scrapers
	// asking for different formats gather one after the other.
	rendering sync.Mutex
}

// exposition is one gathered and encoded snapshot.
type exposition struct {
	format expfmt.Format
	gz     []byte // the exposition, gzip-compressed
}

// streamChunk is how many metrics one Gather of the stream takes: about
// 1 MiB of dto.Metric at most (a histogram of 14 buckets and 9 labels is
// ~2 KiB), and ~50 Gathers at the series cap.
const streamChunk = 500

// newScrapeHandler serves what source collects; a prometheus.Registry is
// one.
func newScrapeHandler(source prometheus.Collector, log *slog.Logger, timeout time.Duration) *scrapeHandler {
	return &scrapeHandler{source: source, log: log, timeout: timeout, chunk: streamChunk}
}

func (h *scrapeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	format := expfmt.NegotiateAccept(r.Header, expfmt.DefaultAcceptedFormats()...)
	h.waiting.Add(1)
	ch := h.flights.DoChan(string(format), func() (any, error) { return h.render(format) })
	timer := time.NewTimer(h.timeout)
	defer timer.Stop()
	var res singleflight.Result
	select {
	case res = <-ch:
		h.waiting.Add(-1)
	case <-r.Context().Done():
		h.waiting.Add(-1)
		return
	case <-timer.C:
		h.waiting.Add(-1)
		http.Error(w, fmt.Sprintf("exceeded the scrape timeout of %v", h.timeout), http.StatusServiceUnavailable)
		return
	}
	if res.Err != nil {
		http.Error(w, "gather metrics: "+res.Err.Error(), http.StatusInternalServerError)
		return
	}
	exp := res.Val.(*exposition)
	hdr := w.Header()
	hdr.Add("Vary", "Accept")
	hdr.Add("Vary", "Accept-Encoding")
	hdr.Set("Content-Type", string(exp.format))
	if acceptsGzip(r.Header) {
		hdr.Set("Content-Encoding", "gzip")
		hdr.Set("Content-Length", strconv.Itoa(len(exp.gz)))
		_, _ = w.Write(exp.gz)
		return
	}
	zr, err := gzip.NewReader(bytes.NewReader(exp.gz))
	if err != nil { // cannot happen: render wrote it
		http.Error(w, "decompress the exposition: "+err.Error(), http.StatusInternalServerError)
		return
	}
	_, _ = io.Copy(w, zr)
}

// render gathers the source and encodes it in format, gzipped, a chunk at
// a time. Gather errors with families still gathered are logged and the
// families are served, as promhttp's ContinueOnError does.
func (h *scrapeHandler) render(format expfmt.Format) (*exposition, error) {
	h.rendering.Lock()
	defer h.rendering.Unlock()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	enc := expfmt.NewEncoder(zw, format)
	text := format.FormatType() == expfmt.TypeTextPlain
	families := 0
	gatherErr, err := streamFamilies(h.source, h.chunk, func(mf *dto.MetricFamily, continued bool) error {
		e := enc
		if continued && text {
			// The rest of a family already begun: its samples only, as
			// the text format allows one HELP and TYPE a family.
			mf.Help = nil
			e = expfmt.NewEncoder(&skipFirstLine{w: zw}, format)
		}
		if !continued {
			families++
		}
		if err := e.Encode(mf); err != nil {
			return fmt.Errorf("encode %s: %w", mf.GetName(), err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if gatherErr != nil {
		if families == 0 {
			return nil, gatherErr
		}
		h.log.Error("gather metrics; serving those gathered", "err", gatherErr)
	}
	if c, ok := enc.(expfmt.Closer); ok {
		if err := c.Close(); err != nil {
			return nil, fmt.Errorf("close the encoder: %w", err)
		}
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compress the exposition: %w", err)
	}
	return &exposition{format: format, gz: buf.Bytes()}, nil
}

// skipFirstLine passes on what is written to it after the first newline:
// the text encoder's "# TYPE" line of a family whose help was removed.
type skipFirstLine struct {
	w    io.Writer
	past bool
}

func (s *skipFirstLine) Write(p []byte) (int, error) {
	n := len(p)
	if !s.past {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			return n, nil
		}
		s.past, p = true, p[i+1:]
	}
	if _, err := s.w.Write(p); err != nil {
		return 0, err
	}
	return n, nil
}

// streamFamilies collects source and hands emit its metric families as they
// are gathered, a chunk of `chunk` metrics at a time, so that no more than
// two chunks are held at once. A prometheus.Registry gathers each chunk
// (converting, checking and grouping its metrics, sorted within the
// chunk). A family that continues from one chunk into the next is emitted
// last of the first chunk and first of the next, with continued set for
// its later parts, so that each family's metrics are emitted one after
// another. That relies on a collector sending a family's metrics in a row,
// as the OTel exporter (one metric's data points in a row), the Go and
// process collectors and a Registry's Collect do; a family sent again after
// another one began is reported in gatherErr and left out, never emitted
// in two places.
//
// gatherErr joins what the Gathers reported (the families are still
// emitted, as far as they were gathered); err is emit's, which ends the
// stream.
func streamFamilies(source prometheus.Collector, chunk int, emit func(mf *dto.MetricFamily, continued bool) error) (gatherErr, err error) {
	metrics := make(chan prometheus.Metric, 64)
	go func() {
		defer close(metrics)
		defer func() {
			// As prometheus.Registry's Gather does for a collector that panics.
			if r := recover(); r != nil {
				perr := fmt.Errorf("collector panic: %v", r)
				metrics <- prometheus.NewInvalidMetric(prometheus.NewInvalidDesc(perr), perr)
			}
		}()
		source.Collect(metrics)
	}()
	// Whatever happens, the collector gets to finish.
	defer func() {
		for range metrics {
		}
	}()
	next := &chunkCollector{metrics: metrics, size: chunk}
	reg := prometheus.NewRegistry()
	reg.MustRegister(next)
	var (
		errs    prometheus.MultiError
		held    []*dto.MetricFamily // the chunk gathered before, not yet emitted
		cont    string              // the family that held continues from the chunk before it
		emitted = map[string]bool{}
	)
	write := func(mf *dto.MetricFamily, continued bool) error {
		if !continued && emitted[mf.GetName()] {
			errs.Append(fmt.Errorf("metric family %s collected again after another began; %d metrics left out",
				mf.GetName(), len(mf.Metric)))
			return nil
		}
		emitted[mf.GetName()] = true
		return emit(mf, continued)
	}
	for {
		var mfs []*dto.MetricFamily
		if !next.ended.Load() {
			var gerr error
			if mfs, gerr = reg.Gather(); gerr != nil {
				errs.Append(gerr)
			}
		}
		inNext := make(map[string]bool, len(mfs))
		for _, mf := range mfs {
			inNext[mf.GetName()] = true
		}
		// held in stream order: the family continued from the chunk
		// before, the others, and the one the next chunk continues.
		prev := cont
		cont = ""
		for _, mf := range held {
			if mf.GetName() != prev {
				continue
			}
			if err := write(mf, true); err != nil {
				return errs.MaybeUnwrap(), err
			}
			if inNext[prev] { // the whole chunk was the middle of this family
				cont = prev
			}
		}
		var span *dto.MetricFamily
		for _, mf := range held {
			name := mf.GetName()
			if name == prev {
				continue
			}
			if inNext[name] && span == nil && cont == "" {
				span = mf
				continue
			}
			if err := write(mf, false); err != nil {
				return errs.MaybeUnwrap(), err
			}
		}
		if span != nil {
			if err := write(span, false); err != nil {
				return errs.MaybeUnwrap(), err
			}
			cont = span.GetName()
		}
		held = mfs
		if len(held) == 0 && next.ended.Load() {
			return errs.MaybeUnwrap(), nil
		}
	}
}

// chunkCollector passes on the next size metrics of a stream, each time it
// is collected, until the stream ends. It describes nothing: an unchecked
// collector, as the OTel exporter's is.
type chunkCollector struct {
	metrics <-chan prometheus.Metric
	size    int
	ended   atomic.Bool
}

func (*chunkCollector) Describe(chan<- *prometheus.Desc) {}

func (c *chunkCollector) Collect(ch chan<- prometheus.Metric) {
	for range c.size {
		m, ok := <-c.metrics
		if !ok {
			c.ended.Store(true)
			return
		}
		ch <- m
	}
}

// acceptsGzip reports whether an Accept-Encoding header allows gzip: named
// (or "*") with a q-value other than 0.
func acceptsGzip(h http.Header) bool {
	for _, v := range h.Values("Accept-Encoding") {
		for part := range strings.SplitSeq(v, ",") {
			coding, params, _ := strings.Cut(part, ";")
			coding = strings.ToLower(strings.TrimSpace(coding))
			if coding != "gzip" && coding != "*" {
				continue
			}
			q := 1.0
			for p := range strings.SplitSeq(params, ";") {
				if k, v, ok := strings.Cut(strings.TrimSpace(p), "="); ok && strings.EqualFold(k, "q") {
					if f, err := strconv.ParseFloat(v, 64); err == nil {
						q = f
					}
				}
			}
			return q > 0
		}
	}
	return false
}
