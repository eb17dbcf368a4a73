package e2e

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
)

// TestServiceSurface: the HTTP endpoints (a non-default metrics path
// included) and the gRPC services the ingest port offers, as listed by
// server reflection.
func TestServiceSurface(t *testing.T) {
	t.Parallel()
	c := startCollector(t, options{MetricsPath: "/custom/metrics"})

	for path, want := range map[string]int{
		"/healthz":        http.StatusOK,
		"/readyz":         http.StatusOK,
		"/custom/metrics": http.StatusOK,
		"/metrics":        http.StatusNotFound, // not the configured path
	} {
		code, err := c.get(path)
		if err != nil || code != want {
			t.Errorf("GET %s: %d, %v; want %d", path, code, err, want)
		}
	}
	if fams, _ := c.scrape(); fams["agentmeter_receiver_events_total"] == nil {
		t.Errorf("%s has no agentmeter_receiver_events_total before any event", c.opts.MetricsPath)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(c.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatalf("ServerReflectionInfo: %v", err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}); err != nil {
		t.Fatalf("reflection ListServices: %v", err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("reflection ListServices: %v", err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"agentmeter.v1.IngestService", "grpc.health.v1.Health"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, without %s", names, want)
		}
	}
	_ = stream.CloseSend()
	c.stop()
}
