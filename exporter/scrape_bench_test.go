package exporter

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	"google.golang.org/protobuf/proto"

	"github.com/agentmeter/agentmeter/config"
	"github.com/agentmeter/agentmeter/processor"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// seriesCap is the processor's default bound on LLM attribute sets.
const seriesCap = 2000

// fullProcessor returns a processor holding seriesCap LLM series, each with
// every token type, a cost, both token-usage histograms and a success and
// an error duration histogram: the largest /metrics the defaults allow.
func fullProcessor(tb testing.TB) *processor.Processor {
	tb.Helper()
	return seriesProcessor(tb, seriesCap)
}

// seriesProcessor returns a processor holding n such LLM series.
func seriesProcessor(tb testing.TB, n int) *processor.Processor {
	tb.Helper()
	p, err := processor.New(processor.Config{IdleExpiry: time.Hour, MaxTracked: 10000}, processor.Deps{})
	if err != nil {
		tb.Fatal(err)
	}
	events := make([]*pb.Event, 0, 2*n)
	for i := range n {
		for j, errType := range []string{"", "timeout"} {
			events = append(events, &pb.Event{
				EventId: fmt.Sprintf("e-%d-%d", i, j), ConversationId: fmt.Sprintf("c-%d", i%100), Agent: "CodeActAgent",
				Payload: &pb.Event_LlmCall{LlmCall: &pb.LLMCall{
					Provider: "anthropic", RequestModel: fmt.Sprintf("model-%04d", i), ResponseModel: fmt.Sprintf("model-%04d-20250514", i),
					PromptTokens: 1000, CompletionTokens: 200, CacheReadTokens: 600, CacheWriteTokens: 100, ReasoningTokens: 50,
					ContextWindow: 200_000, LatencySeconds: 2.5, TimeToFirstTokenSeconds: 0.4, CostUsd: proto.Float64(0.0123),
					ErrorType: errType,
				}},
			})
		}
	}
	res := make([]processor.Result, len(events))
	p.Consume(context.Background(), events, time.Now(), res)
	for i, r := range res {
		if r.Outcome != processor.Accepted {
			tb.Fatalf("event %d: %v", i, r)
		}
	}
	return p
}

// scrapeHandlers are the /metrics handlers compared at the series cap:
// "shared" is Handler's; "promhttp" is the handler it replaced (one gather
// and encoding per scraper, each response buffered whole by
// http.TimeoutHandler), its timeout raised so that it finishes on a loaded
// machine.
func scrapeHandlers(tb testing.TB) (map[string]http.Handler, func()) {
	tb.Helper()
	e, err := New(context.Background(), config.Default(), Deps{Resource: resource.Empty(), Producers: []sdkmetric.Producer{fullProcessor(tb)}})
	if err != nil {
		tb.Fatal(err)
	}
	return map[string]http.Handler{
		"shared": e.Handler(),
		"promhttp": promhttp.HandlerFor(e.registry, promhttp.HandlerOpts{
			ErrorHandling: promhttp.ContinueOnError,
			Timeout:       2 * time.Minute,
		}),
	}, func() { _ = e.Shutdown(context.Background()) }
}

// scrapeOnce fetches /metrics the way Prometheus asks for it (gzip).
func scrapeOnce(tb testing.TB, h http.Handler) int {
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept", "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
	req.Header.Set("Accept-Encoding", "gzip")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		tb.Fatalf("scrape: status %d: %s", rec.Code, rec.Body)
	}
	n, _ := io.Copy(io.Discard, rec.Body)
	return int(n)
}

// BenchmarkScrape is scrapes at the series cap, one at a time and eight at
// once, by each handler; B/op is what one scrape, or one round of eight,
// allocates:
//
//	go test -run '^$' -bench Scrape -benchtime 3x ./exporter/
func BenchmarkScrape(b *testing.B) {
	handlers, stop := scrapeHandlers(b)
	defer stop()
	for _, name := range []string{"promhttp", "shared"} {
		h := handlers[name]
		b.Run("handler="+name+"/scrapers=1", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				scrapeOnce(b, h)
			}
		})
		b.Run("handler="+name+"/scrapers=8", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var wg sync.WaitGroup
				for range 8 {
					wg.Go(func() { scrapeOnce(b, h) })
				}
				wg.Wait()
			}
		})
	}
}
