// Package ingesttest serves a fake agentmeter.v1.IngestService on a
// loopback port, for tests of clients (the load generator): each request is
// answered by a function, over unary Record and RecordStream alike.
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

type server struct {
	pb.UnimplementedIngestServiceServer
	answer AnswerFunc
}

func (s server) Record(_ context.Context, req *pb.RecordRequest) (*pb.RecordResponse, error) {
	return s.answer(req), nil
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
		if err := st.Send(s.answer(req)); err != nil {
			return err
		}
	}
}

// Serve serves answer on 127.0.0.1 until the test ends and returns the
// address.
func Serve(t testing.TB, answer AnswerFunc) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	pb.RegisterIngestServiceServer(srv, server{answer: answer})
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
