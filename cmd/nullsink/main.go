// Command nullsink is a do-nothing agentmeter IngestService: it decodes each
// request (gRPC does) and accepts every event without looking at it. It is the
// baseline that loadbench compares agentmeter with: the cost of gRPC and
// protobuf alone, with the gRPC server options of a production server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// Server options, as agentmeter's receiver sets them.
const (
	maxRecvMsgSize = 16 << 20
	// readAhead is how many requests a stream decodes ahead of its answers.
	readAhead            = 32
	maxConcurrentStreams = 16
	// stopTimeout bounds the graceful stop before open streams are cut.
	stopTimeout = 5 * time.Second
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

// run is the whole command; it returns the exit code.
func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("nullsink", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:4399", "host:port to serve IngestService on")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		_, _ = fmt.Fprintf(stderr, "nullsink: unexpected arguments: %q\n", fs.Args())
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Error("listen", "addr", *listen, "err", err)
		return 1
	}
	if err := serve(ctx, lis, log); err != nil {
		log.Error("serve", "err", err)
		return 1
	}
	return 0
}

// serve serves IngestService on lis until ctx ends, then stops gracefully
// within stopTimeout. It closes lis.
func serve(ctx context.Context, lis net.Listener, log *slog.Logger) error {
	srv := grpc.NewServer(
		grpc.MaxRecvMsgSize(maxRecvMsgSize),
		grpc.MaxConcurrentStreams(maxConcurrentStreams),
	)
	pb.RegisterIngestServiceServer(srv, sink{})

	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	log.Info("serving", "addr", lis.Addr().String())

	select {
	case err := <-done:
		return fmt.Errorf("serve %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}
	start := time.Now()
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	t := time.NewTimer(stopTimeout)
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
		log.Warn("graceful stop timed out, closing streams", "timeout", stopTimeout.String())
		srv.Stop()
		<-stopped
	}
	<-done // Serve returns nil after a stop
	log.Info("stopped", "took", time.Since(start).String())
	return nil
}

// sink accepts every event. It keeps no state.
type sink struct {
	pb.UnimplementedIngestServiceServer
}

// Record accepts the batch.
func (sink) Record(_ context.Context, req *pb.RecordRequest) (*pb.RecordResponse, error) {
	return &pb.RecordResponse{Accepted: uint32(len(req.GetEvents()))}, nil
}

// RecordStream accepts each batch, one response per request, in order. As
// the collector's receiver does, it receives and decodes in a goroutine of
// its own, up to readAhead requests ahead of the answers, so that decoding
// overlaps answering and the baseline is not slower for being serial.
func (sink) RecordStream(st grpc.BidiStreamingServer[pb.RecordRequest, pb.RecordResponse]) error {
	type received struct {
		n   int
		err error
	}
	next := make(chan received, readAhead)
	go func() {
		defer close(next)
		for {
			req, err := st.Recv()
			select {
			case next <- received{len(req.GetEvents()), err}:
			case <-st.Context().Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for r := range next {
		if errors.Is(r.err, io.EOF) {
			return nil
		}
		if r.err != nil {
			return r.err
		}
		if err := st.Send(&pb.RecordResponse{Accepted: uint32(r.n)}); err != nil {
			return err
		}
	}
	return st.Context().Err()
}
