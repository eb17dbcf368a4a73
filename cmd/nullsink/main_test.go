package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentmeter/agentmeter/cmd/loadgen/load"
)

// startSink serves the null sink on a loopback port until the returned stop
// is called; stop fails the test unless serve stops cleanly and in time.
func startSink(t *testing.T) (addr string, stop func()) {
	t.Helper()
	addr, _, stop = startCountingSink(t)
	return addr, stop
}

// startCountingSink is startSink that also reports how many bytes the sink
// has read from its connections.
func startCountingSink(t *testing.T) (addr string, read *atomic.Int64, stop func()) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis := &countingListener{Listener: inner, read: new(atomic.Int64)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, lis, slog.New(slog.DiscardHandler)) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(stopTimeout + 2*time.Second):
			t.Error("serve did not stop")
		}
	}
	t.Cleanup(stop)
	return lis.Addr().String(), lis.read, stop
}

// countingListener counts the bytes read from every connection it accepts.
type countingListener struct {
	net.Listener
	read *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, read: l.read}, nil
}

type countingConn struct {
	net.Conn
	read *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

func TestSinkUnderLoad(t *testing.T) {
	tests := []struct {
		name                   string
		mode                   load.Mode
		batch, streams, window int
		events                 int64
	}{
		{"stream batch 100", load.ModeStream, 100, 2, 8, 50_000},
		{"stream batch 1 window 1", load.ModeStream, 1, 1, 1, 500},
		{"stream partial last batch", load.ModeStream, 1000, 1, 4, 4_321},
		{"unary", load.ModeUnary, 50, 2, 2, 5_000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, stop := startSink(t)
			c := load.Default()
			c.Target, c.Mode, c.Batch, c.Streams, c.Window = addr, tt.mode, tt.batch, tt.streams, tt.window
			c.Duration, c.Events, c.Progress, c.Timeout = 0, tt.events, 0, time.Minute
			r, err := load.Run(t.Context(), c)
			if err != nil {
				t.Fatal(err)
			}
			wantReq := (tt.events + int64(tt.batch) - 1) / int64(tt.batch)
			if r.Events != tt.events || r.Accepted != tt.events || r.Requests != wantReq ||
				r.Duplicates != 0 || r.Rejected != 0 || r.Errors != 0 {
				t.Fatalf("result %+v, want %d events in %d requests, all accepted", r, tt.events, wantReq)
			}
			stop()
		})
	}
}

func TestSinkStopsWithOpenStreams(t *testing.T) {
	addr, read, stop := startCountingSink(t)
	c := load.Default()
	c.Target, c.Streams, c.Duration, c.Progress = addr, 4, time.Minute, 0
	res := make(chan load.Result, 1)
	go func() {
		r, _ := load.Run(context.Background(), c) // the stop may cut the run short
		res <- r
	}()
	// Stop once batches are flowing: several batches of 100 events have
	// been read, however slow the machine is.
	deadline := time.Now().Add(30 * time.Second)
	for read.Load() < 256<<10 {
		if time.Now().After(deadline) {
			t.Fatalf("the load sent %d bytes in 30s", read.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	stop()
	if took := time.Since(start); took > stopTimeout+time.Second {
		t.Fatalf("stop took %s", took)
	}
	if r := <-res; r.Events == 0 {
		t.Fatalf("no events went through before the stop: %+v", r)
	}
}

func TestRunUsage(t *testing.T) {
	for _, args := range [][]string{{"--nope"}, {"extra"}, {"--listen", "not-an-address"}} {
		if code := run(args, io.Discard); code == 0 {
			t.Errorf("run(%q) = 0, want failure", args)
		}
	}
	if code := run([]string{"--help"}, io.Discard); code != 0 {
		t.Errorf("run(--help) = %d, want 0", code)
	}
}
