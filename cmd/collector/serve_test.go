package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentmeter/agentmeter/config"
)

// testConfig listens on free loopback ports.
func testConfig() config.Config {
	cfg := config.Default()
	cfg.Receiver.GRPC.Endpoint = "127.0.0.1:0"
	cfg.HTTP.Endpoint = "127.0.0.1:0"
	cfg.Shutdown.GracePeriod = 5 * time.Second
	return cfg
}

// dyingListener serves until die is closed, then its Accept fails for good.
type dyingListener struct {
	net.Listener
	accepting atomic.Bool
	die       chan struct{}
}

var errDied = errors.New("listener died")

func (l *dyingListener) Accept() (net.Conn, error) {
	l.accepting.Store(true)
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := l.Listener.Accept()
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-l.die:
		_ = l.Listener.Close() // ends the Accept above
		if r := <-ch; r.c != nil {
			_ = r.c.Close()
		}
		return nil, errDied
	}
}

// TestListenerDeathShutsDown: a gRPC listener that dies takes the whole
// collector to a clean shutdown, and serve returns the listener's error
// (which run turns into exit code 1), with no goroutine left behind.
func TestListenerDeathShutsDown(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	lis := &dyingListener{die: make(chan struct{})}
	listen := func(network, addr string) (net.Listener, error) {
		ln, err := net.Listen(network, addr)
		lis.Listener = ln
		return lis, err
	}
	done := make(chan error, 1)
	go func() { done <- serve(context.Background(), testConfig(), slog.New(slog.DiscardHandler), listen) }()
	deadline := time.Now().Add(10 * time.Second)
	for !lis.accepting.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the gRPC server never accepted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(lis.die)
	select {
	case err := <-done:
		if !errors.Is(err, errDied) || !strings.Contains(err.Error(), "grpc") {
			t.Fatalf("serve = %v, want the gRPC listener's error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve still running 10s after its gRPC listener died")
	}
}

// TestStartFailureReleasesEverything: a port already taken fails the start,
// and what had started (the HTTP server, the processor's sweep) is stopped.
func TestStartFailureReleasesEverything(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := testConfig()
	cfg.Receiver.GRPC.Endpoint = taken.Addr().String()
	err = serve(context.Background(), cfg, slog.New(slog.DiscardHandler), net.Listen)
	if err == nil || !strings.Contains(err.Error(), "receiver.grpc.endpoint") {
		t.Fatalf("serve = %v, want the gRPC listen error", err)
	}
}

// TestBuildFailureReleasesEverything: a constructor failing midway (here
// the gRPC server, given a bound that config validation would refuse)
// releases what was built before it: the OTLP exporter's client.
func TestBuildFailureReleasesEverything(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	cfg := testConfig()
	cfg.Exporters.OTLP.Enabled = true
	cfg.Exporters.OTLP.Endpoint = "127.0.0.1:1"
	cfg.Receiver.GRPC.ReceiveTimeout = 0
	err := serve(context.Background(), cfg, slog.New(slog.DiscardHandler), net.Listen)
	if err == nil || !strings.Contains(err.Error(), "grpcserver") {
		t.Fatalf("serve = %v, want the gRPC server's constructor error", err)
	}
}

// TestSignalStopsCleanly: the end of the run context (SIGTERM) stops
// everything and serve returns nil.
func TestSignalStopsCleanly(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, testConfig(), slog.New(slog.DiscardHandler), net.Listen) }()
	time.Sleep(200 * time.Millisecond) // let it start; a stop during start is fine too
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve still running 10s after its context ended")
	}
}
