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
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"golang.org/x/sync/singleflight"
)

// scrapeHandler serves /metrics so that its memory does not grow with the
// number of scrapers. A scrape gathers the registry and encodes the
// exposition straight into a gzip buffer; every scrape that arrives while
// that runs (for the same format) joins it and is sent the same bytes.
// Scrapers that accept gzip (Prometheus does) get the buffer as it is;
// others get it decompressed as it is written, in a few KiB.
//
// At the 2000-series cap the exposition is ~72 MB of text but ~0.9 MB
// gzipped: promhttp's handler gathered and encoded once per scraper and,
// behind http.TimeoutHandler, buffered each whole response, so eight
// scrapers took the heap past 600 MB.
type scrapeHandler struct {
	gatherer prometheus.Gatherer
	log      *slog.Logger
	// timeout bounds how long a scraper waits for the exposition; the
	// gather itself cannot be cancelled and serves whoever waits for it.
	timeout time.Duration
	flights singleflight.Group
	waiting atomic.Int64 // scrapers waiting for an exposition, for tests
}

// exposition is one gathered and encoded snapshot.
type exposition struct {
	format expfmt.Format
	gz     []byte // the exposition, gzip-compressed
}

func newScrapeHandler(g prometheus.Gatherer, log *slog.Logger, timeout time.Duration) *scrapeHandler {
	return &scrapeHandler{gatherer: g, log: log, timeout: timeout}
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

// render gathers the registry and encodes it in format, gzipped. A gather
// error with families still gathered is logged and the families are served,
// as promhttp's ContinueOnError does.
func (h *scrapeHandler) render(format expfmt.Format) (*exposition, error) {
	mfs, err := h.gatherer.Gather()
	if err != nil {
		if len(mfs) == 0 {
			return nil, err
		}
		h.log.Error("gather metrics; serving those gathered", "err", err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	enc := expfmt.NewEncoder(zw, format)
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return nil, fmt.Errorf("encode %s: %w", mf.GetName(), err)
		}
	}
	if c, ok := enc.(expfmt.Closer); ok {
		if err := c.Close(); err != nil {
			return nil, fmt.Errorf("close the encoder: %w", err)
		}
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compress the exposition: %w", err)
	}
	return &exposition{format: format, gz: bytes.Clone(buf.Bytes())}, nil
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
