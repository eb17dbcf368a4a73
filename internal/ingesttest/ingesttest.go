// Package ingesttest serves a fake agentmeter.v1.IngestService on a
// loopback port, for tests of clients (the load generator, the Go client):
// each request is answered by a function, over unary Record and
// RecordStream alike.
package ingesttest

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"

	"google.golang.org/grpc"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// AnswerFunc answers one request.
type AnswerFunc func(*pb.RecordRequest) *pb.RecordResponse

// HandlerFunc answers one request, or refuses it with an error (a gRPC
// status error), which ends a RecordStream as it does on the real server.
type HandlerFunc func(ctx context.Context, req *pb.RecordRequest) (*pb.RecordResponse, error)

type server struct {
	pb.UnimplementedIngestServiceServer
	handle HandlerFunc
}

func (s server) Record(ctx context.Context, req *pb.RecordRequest) (*pb.RecordResponse, error) {
	return s.handle(ctx, req)
}

func (s server) RecordStream(st grpc.BidiStreamingServer[pb.RecordRequest, pb.RecordResponse]) error {
	for {
		req, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		resp, err := s.handle(st.Context(), req)
		if err != nil {
			return err
		}
		if err := st.Send(resp); err != nil {
			return err
		}
	}
}

// Serve serves answer on 127.0.0.1 until the test ends and returns the
// address.
func Serve(t testing.TB, answer AnswerFunc) string {
	t.Helper()
	return ServeHandler(t, func(_ context.Context, req *pb.RecordRequest) (*pb.RecordResponse, error) {
		return answer(req), nil
	}, Options{})
}

// Options of ServeHandler. The zero value serves TCP on 127.0.0.1:0.
type Options struct {
	// Network and Address to listen on: "tcp" (default) and "127.0.0.1:0"
	// (default), or "unix" and a socket path.
	Network, Address string
	// ServerOptions are passed to grpc.NewServer (interceptors, message
	// size bounds).
	ServerOptions []grpc.ServerOption
}

// ServeHandler serves handle as o says until the test ends and returns
// the listening address (host:port, or the socket path).
func ServeHandler(t testing.TB, handle HandlerFunc, o Options) string {
	t.Helper()
	if o.Network == "" {
		o.Network = "tcp"
	}
	if o.Address == "" {
		o.Address = "127.0.0.1:0"
	}
	lis, err := net.Listen(o.Network, o.Address)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(o.ServerOptions...)
	pb.RegisterIngestServiceServer(srv, server{handle: handle})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return lis.Addr().String()
}
