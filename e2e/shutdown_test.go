package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// TestSIGTERMDrain: with a stream flooding the collector, SIGTERM turns
// readiness off at once, ends the stream, refuses new RPCs, sends a final
// OTLP export carrying every accepted event, and exits 0 within the grace
// period.
func TestSIGTERMDrain(t *testing.T) {
	t.Parallel()
	const (
		grace       = 10 * time.Second
		batchSize   = 10
		promptEach  = 7
		minAccepted = 300
	)
	s := &sink{}
	addr, _ := serveOTLPGRPC(t, "127.0.0.1:0", s)
	// A long interval: the export that arrives after SIGTERM is the final
	// one from the shutdown, not a periodic one.
	c := startCollector(t, options{
		GracePeriod: grace,
		OTLP:        &otlpOptions{Endpoint: addr, Protocol: "grpc", Interval: time.Hour, Timeout: 5 * time.Second},
	})

	// Watch gRPC health from before the signal.
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	watch, err := c.health.Watch(watchCtx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("health Watch: %v", err)
	}
	if first, err := watch.Recv(); err != nil || first.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health Watch first status: %v, %v; want SERVING", first.GetStatus(), err)
	}
	// The watch stays open until the test has seen /readyz answer 503: an
	// in-flight RPC the drain must wait for, so readiness has to go off
	// before the receiver finishes draining, not after.
	notServing := make(chan time.Time, 1)
	go func() {
		for {
			r, err := watch.Recv()
			if err != nil {
				return
			}
			if r.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
				notServing <- time.Now()
				return
			}
		}
	}()

	// The flood: one stream, a batch every 5 ms, each answered before the
	// next is sent. accepted counts what the collector answered as applied.
	var accepted atomic.Int64
	var floodErr error
	floodDone := make(chan struct{})
	streamCtx, cancelStream := context.WithCancel(context.Background())
	defer cancelStream()
	stream, err := c.ingest.RecordStream(streamCtx)
	if err != nil {
		t.Fatalf("RecordStream: %v", err)
	}
	go func() {
		defer close(floodDone)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for b := 0; ; b++ {
			req := &pb.RecordRequest{Events: make([]*pb.Event, batchSize)}
			for i := range req.Events {
				req.Events[i] = simpleCall(fmt.Sprintf("flood-%d-%d", b, i), "flood-model", promptEach, 1)
			}
			if err := stream.Send(req); err != nil {
				_, floodErr = stream.Recv() // the status that ended the stream
				return
			}
			resp, err := stream.Recv()
			if err != nil {
				floodErr = err
				return
			}
			if resp.GetAccepted() != batchSize {
				floodErr = fmt.Errorf("batch %d: accepted %d of %d", b, resp.GetAccepted(), batchSize)
				return
			}
			accepted.Add(int64(resp.GetAccepted()))
			<-tick.C
		}
	}()
	eventually(t, 20*time.Second, fmt.Sprintf("%d events accepted by the flood", minAccepted), func() (bool, string) {
		select {
		case <-floodDone:
			t.Fatalf("flood ended before SIGTERM: %v", floodErr)
		default:
		}
		return accepted.Load() >= minAccepted, fmt.Sprint(accepted.Load())
	})

	// A slow backend keeps the final export (and so the process, whose HTTP
	// server stops last) busy for a while, so that /readyz can be seen
	// answering 503 before the port closes.
	s.delay.Store(int64(1500 * time.Millisecond))
	sent := c.sigterm()

	var saw503 bool
	var lastProbe string
	probe := &http.Client{Timeout: 500 * time.Millisecond}
	for deadline := sent.Add(3 * time.Second); !saw503 && time.Now().Before(deadline) && !c.hasExited(); {
		resp, err := probe.Get("http://" + c.httpAddr + "/readyz")
		if err != nil {
			lastProbe = err.Error()
		} else {
			resp.Body.Close()
			lastProbe = resp.Status
			saw503 = resp.StatusCode == http.StatusServiceUnavailable
		}
		if !saw503 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if saw503 {
		t.Logf("/readyz answered 503 %v after SIGTERM", time.Since(sent))
	} else {
		t.Errorf("/readyz did not answer 503 within 3s of SIGTERM, while an RPC was still in flight; last probe: %s", lastProbe)
	}
	select {
	case at := <-notServing:
		t.Logf("gRPC health NOT_SERVING %v after SIGTERM", at.Sub(sent))
	case <-time.After(3 * time.Second):
		t.Errorf("gRPC health Watch did not report NOT_SERVING within 3s of SIGTERM")
	}
	stopWatch() // the in-flight watch ends; the drain can finish

	select {
	case <-floodDone:
		t.Logf("flood stream ended after SIGTERM: %v", floodErr)
	case <-time.After(grace):
		t.Errorf("flood stream still open %v after SIGTERM", grace)
	}

	// The final export: after the signal, with every accepted event.
	var final export
	eventually(t, grace, "a final OTLP export after SIGTERM", func() (bool, string) {
		for _, e := range s.all() {
			if e.at.After(sent) {
				final = e
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d exports, none after the signal", len(s.all()))
	})
	// The gRPC server was stopped before the exporter: new RPCs are refused.
	conn, err := grpc.NewClient(c.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, err = pb.NewIngestServiceClient(conn).Record(ctx, &pb.RecordRequest{Events: []*pb.Event{simpleCall("late", "flood-model", 1, 1)}})
	cancel()
	if err == nil {
		t.Errorf("Record after SIGTERM succeeded; want it refused")
	}

	code := c.waitExit(grace + 5*time.Second)
	took := time.Since(sent)
	if code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0", code)
	}
	if took > grace {
		t.Errorf("exited %v after SIGTERM, more than shutdown.grace_period %v", took, grace)
	}
	t.Logf("accepted %d events; exited %v after SIGTERM", accepted.Load(), took)

	want := float64(accepted.Load())
	if got, _ := sumOf(final.req, otelEvents, labels{"event_type": "llm_call", "outcome": "accepted"}); got != want {
		t.Errorf("final export: %s{llm_call, accepted} = %v, want %v (every batch answered)", otelEvents, got, want)
	}
	if got := tokensIn(final.req, "input"); got != want*promptEach {
		t.Errorf("final export: input tokens %v, want %v", got, want*promptEach)
	}
	if after := exportsAfter(s, sent); after != 1 {
		t.Errorf("%d exports after SIGTERM, want exactly 1 (the final one)", after)
	}
}

func exportsAfter(s *sink, t0 time.Time) int {
	n := 0
	for _, e := range s.all() {
		if e.at.After(t0) {
			n++
		}
	}
	return n
}
