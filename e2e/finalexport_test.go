package e2e

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// TestOTLPFinalExportRetries: SIGTERM while the OTLP endpoint is down. When
// the endpoint comes back within shutdown.grace_period, the final export
// reaches it and carries every event; when it stays down, the collector
// still exits 0 within the grace period and logs that the final export
// failed.
func TestOTLPFinalExportRetries(t *testing.T) {
	t.Parallel()
	const (
		batches    = 10
		perBatch   = 100
		prompt     = 50
		completion = 5
	)
	ingest := func(c *collector, prefix string) {
		for b := range batches {
			events := make([]*pb.Event, perBatch)
			for i := range events {
				events[i] = simpleCall(fmt.Sprintf("%s-%d-%d", prefix, b, i), "final-export-model", prompt, completion)
			}
			if resp := c.record(events...); resp.GetAccepted() != perBatch {
				t.Fatalf("batch %d: accepted %d of %d", b, resp.GetAccepted(), perBatch)
			}
		}
	}

	for _, protocol := range []string{"grpc", "http/protobuf"} {
		t.Run("endpoint back within the grace period/"+protocol, func(t *testing.T) {
			t.Parallel()
			const grace = 10 * time.Second
			addr := freePort(t) // nothing listens here until after SIGTERM
			endpoint, serve := addr, func(s *sink) { serveOTLPGRPC(t, addr, s) }
			if protocol == "http/protobuf" {
				endpoint, serve = "http://"+addr+"/v1/metrics", func(s *sink) { serveOTLPHTTP(t, addr, s) }
			}
			// An interval far beyond the test: the only export is the final one.
			c := startCollector(t, options{GracePeriod: grace,
				OTLP: &otlpOptions{Endpoint: endpoint, Protocol: protocol, Interval: time.Hour, Timeout: 2 * time.Second}})
			ingest(c, "back")
			sent := c.sigterm()
			// The endpoint comes up 2s into the grace period.
			time.Sleep(2 * time.Second) // the outage being simulated, not a wait for a condition
			s := &sink{}
			serve(s)
			code := c.waitExit(grace + 5*time.Second)
			took := time.Since(sent)
			t.Logf("exit %d after %v (grace %v); %d exports received", code, took.Round(time.Millisecond), grace, len(s.all()))
			if code != 0 {
				t.Errorf("exit code %d, want 0", code)
			}
			if took > grace {
				t.Errorf("took %v to exit, more than the grace period %v", took, grace)
			}
			ex := s.all()
			if len(ex) == 0 {
				t.Fatalf("no export reached the endpoint that came back within the grace period\n%s", c.stderr.String())
			}
			last := ex[len(ex)-1].req
			if got, want := tokensIn(last, "input"), float64(batches*perBatch*prompt); got != want {
				t.Errorf("final export: input tokens %v, want %v", got, want)
			}
			if got, want := tokensIn(last, "output"), float64(batches*perBatch*completion); got != want {
				t.Errorf("final export: output tokens %v, want %v", got, want)
			}
			if got, _ := sumOf(last, otelEvents, labels{"outcome": "accepted"}); got != batches*perBatch {
				t.Errorf("final export: %s{outcome=accepted} = %v, want %d", otelEvents, got, batches*perBatch)
			}
			checkCumulative(t, last)
			if log := c.stderr.String(); !strings.Contains(log, "final otlp export succeeded") {
				t.Errorf("no \"final otlp export succeeded\" in the log:\n%s", log)
			}
		})
	}

	t.Run("endpoint down until the grace period ends", func(t *testing.T) {
		t.Parallel()
		const grace = 3 * time.Second
		addr := freePort(t)
		c := startCollector(t, options{GracePeriod: grace,
			OTLP: &otlpOptions{Endpoint: addr, Protocol: "grpc", Interval: time.Hour, Timeout: time.Second}})
		ingest(c, "down")
		c.stop() // exit 0 within the grace period
		if log := c.stderr.String(); !strings.Contains(log, "final otlp export failed") {
			t.Errorf("no \"final otlp export failed\" in the log:\n%s", log)
		}
	})
}

// serveOTLPHTTP serves OTLP/HTTP protobuf exports at /v1/metrics on addr
// into s until the test ends.
func serveOTLPHTTP(t *testing.T, addr string, s *sink) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("otlp http sink: listen on %s: %v", addr, err)
	}
	// Refused requests are answered 4xx; the test judges by what s received.
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: otlpHTTPHandler(s, new(atomic.Int64))}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
}
