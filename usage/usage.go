// Package usage serves agentmeter.v1.UsageService: what a conversation has
// used so far and how much budget is left, from the processor's ledger.
package usage

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// Ledger is what the service reads; *processor.Processor implements it.
type Ledger interface {
	Usage(id string) (*pb.ConversationUsage, bool)
	ListUsage(state pb.AgentState, pageToken string, pageSize int) ([]*pb.ConversationUsage, string, error)
	Watch(id string) (changes <-chan struct{}, stop func(), ok bool)
}

// Page sizes of ListUsage.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// DefaultWatchInterval is the least time between two WatchUsage updates.
const DefaultWatchInterval = 250 * time.Millisecond

// Service implements agentmeter.v1.UsageService.
type Service struct {
	pb.UnimplementedUsageServiceServer
	ledger Ledger
	// interval coalesces WatchUsage updates: at most one per interval.
	interval time.Duration
	// done ends every WatchUsage stream (on shutdown).
	done <-chan struct{}
}

// New returns the service. Streams end when done is closed.
func New(ledger Ledger, interval time.Duration, done <-chan struct{}) *Service {
	if interval <= 0 {
		interval = DefaultWatchInterval
	}
	return &Service{ledger: ledger, interval: interval, done: done}
}

func checkID(id string) error {
	if id == "" {
		return status.Error(codes.InvalidArgument, "conversation_id is required")
	}
	if len(id) > 256 {
		return status.Error(codes.InvalidArgument, "conversation_id is longer than 256 bytes")
	}
	return nil
}

// GetUsage implements UsageService.GetUsage.
func (s *Service) GetUsage(_ context.Context, req *pb.GetUsageRequest) (*pb.GetUsageResponse, error) {
	if err := checkID(req.GetConversationId()); err != nil {
		return nil, err
	}
	u, ok := s.ledger.Usage(req.GetConversationId())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "conversation %q is not tracked by this sidecar", req.GetConversationId())
	}
	return &pb.GetUsageResponse{Usage: u}, nil
}

// ListUsage implements UsageService.ListUsage.
func (s *Service) ListUsage(_ context.Context, req *pb.ListUsageRequest) (*pb.ListUsageResponse, error) {
	if _, ok := pb.AgentState_name[int32(req.GetState())]; !ok {
		return nil, status.Errorf(codes.InvalidArgument, "state %d is not an AgentState", req.GetState())
	}
	size := int(req.GetPageSize())
	switch {
	case size == 0:
		size = DefaultPageSize
	case size > MaxPageSize:
		size = MaxPageSize
	}
	list, next, err := s.ledger.ListUsage(req.GetState(), req.GetPageToken(), size)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &pb.ListUsageResponse{Usage: list, NextPageToken: next}, nil
}

// WatchUsage implements UsageService.WatchUsage: the entry at once, then on
// every change, at most one per interval; it ends (OK) when the
// conversation closes or stops being tracked, or when the client goes away.
func (s *Service) WatchUsage(req *pb.WatchUsageRequest, stream pb.UsageService_WatchUsageServer) error {
	id := req.GetConversationId()
	if err := checkID(id); err != nil {
		return err
	}
	changes, stop, ok := s.ledger.Watch(id)
	if !ok {
		return status.Errorf(codes.NotFound, "conversation %q is not tracked by this sidecar", id)
	}
	defer stop()
	ctx := stream.Context()
	for {
		u, ok := s.ledger.Usage(id)
		if !ok {
			return nil // no longer tracked
		}
		if err := stream.Send(&pb.WatchUsageResponse{Usage: u}); err != nil {
			return err
		}
		if u.GetClosed() {
			return nil
		}
		// Coalesce: wait out the interval, then for the next change.
		t := time.NewTimer(s.interval)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return status.FromContextError(ctx.Err()).Err()
		case <-s.done:
			t.Stop()
			return status.Error(codes.Unavailable, "agentmeter is shutting down")
		}
		select {
		case _, open := <-changes:
			if !open {
				return nil
			}
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-s.done:
			return status.Error(codes.Unavailable, "agentmeter is shutting down")
		}
	}
}
