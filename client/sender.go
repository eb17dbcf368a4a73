package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// sender is the one goroutine that sends batches. It owns everything in
// it; nothing else touches it.
type sender struct {
	c     *Client
	carry *pb.Event // taken from the queue, did not fit the last batch

	stream       pb.IngestService_RecordStreamClient
	cancelStream context.CancelFunc
	lastUsed     time.Time // when the stream last carried a batch
}

// eventOverhead is what an event adds to a RecordRequest beyond its own
// encoding: the field tag and a length of up to 3 bytes.
const eventOverhead = 4

func (s *sender) run(ctx context.Context) {
	defer s.closeStream()
	for {
		batch := s.collect(ctx)
		if len(batch) == 0 || ctx.Err() != nil {
			// Closing: what is left will never be sent.
			n := len(batch)
			if s.carry != nil {
				n++
				s.carry = nil
			}
			for {
				select {
				case <-s.c.queue:
					n++
					continue
				default:
				}
				break
			}
			if n > 0 {
				s.c.givenUp.Add(int64(n))
				s.c.log.Warn("agentmeter client closed with events unsent", "events", n)
				s.c.resolve(n)
			}
			return
		}
		s.c.sent.Add(int64(len(batch)))
		s.deliver(ctx, batch, time.Now().Add(s.c.opts.giveUpAfter))
	}
}

// collect waits for an event and gathers a batch: up to maxBatch events
// and maxBatchBytes, for at most flushInterval after the first, or less
// when Flush asks. It returns nil when ctx ends first.
func (s *sender) collect(ctx context.Context) []*pb.Event {
	o := &s.c.opts
	var batch []*pb.Event
	size := 0
	add := func(ev *pb.Event) bool {
		n := proto.Size(ev) + eventOverhead
		if len(batch) > 0 && size+n > o.maxBatchBytes {
			s.carry = ev
			return false
		}
		batch = append(batch, ev)
		size += n
		return len(batch) < o.maxBatch
	}
	if s.carry != nil {
		ev := s.carry
		s.carry = nil
		add(ev)
	} else {
		select {
		case ev := <-s.c.queue:
			add(ev)
		case <-ctx.Done():
			return nil
		}
	}
	if len(batch) >= o.maxBatch {
		return batch
	}
	timer := time.NewTimer(o.flushInterval)
	defer timer.Stop()
	for {
		select {
		case ev := <-s.c.queue:
			if !add(ev) {
				return batch
			}
		case <-timer.C:
			return batch
		case <-s.c.nudge:
			// Take what is queued now, then go.
			for {
				select {
				case ev := <-s.c.queue:
					if !add(ev) {
						return batch
					}
				default:
					return batch
				}
			}
		case <-ctx.Done():
			return batch
		}
	}
}

// errTooLarge marks a request the sidecar refused as a whole for its size
// or its number of events.
var errTooLarge = errors.New("request too large for the sidecar")

// deliver sends batch until it is answered, split when the sidecar finds
// it too large, and gives it up at giveUp.
func (s *sender) deliver(ctx context.Context, batch []*pb.Event, giveUp time.Time) {
	req := &pb.RecordRequest{Events: batch}
	attempts := 0
	b := &backoff.ExponentialBackOff{
		InitialInterval:     s.c.opts.initialBackoff,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         s.c.opts.maxBackoff,
	}
	resp, err := backoff.Retry(ctx, func() (*pb.RecordResponse, error) {
		if attempts > 0 {
			s.c.retried.Add(int64(len(batch)))
		}
		attempts++
		resp, err := s.roundTrip(ctx, req)
		if err != nil {
			return nil, classify(err)
		}
		return resp, nil
	},
		backoff.WithBackOff(b),
		// At least one attempt, even when the give-up time has passed (a
		// half of a split batch); 0 would mean no limit.
		backoff.WithMaxElapsedTime(max(time.Until(giveUp), time.Nanosecond)),
		backoff.WithNotify(func(err error, wait time.Duration) {
			s.c.log.Debug("agentmeter batch not delivered, retrying", "events", len(batch), "err", err, "wait", wait.String())
		}),
	)
	switch {
	case err == nil:
		s.tally(batch, resp)
	case errors.Is(err, errTooLarge) && len(batch) > 1:
		half := len(batch) / 2
		s.c.log.Debug("agentmeter batch too large for the sidecar, splitting", "events", len(batch))
		s.deliver(ctx, batch[:half], giveUp)
		s.deliver(ctx, batch[half:], giveUp)
	default:
		s.c.givenUp.Add(int64(len(batch)))
		if ctx.Err() == nil {
			s.c.log.Warn("agentmeter batch given up", "events", len(batch), "attempts", attempts, "err", err)
		}
		s.c.resolve(len(batch))
	}
}

// tally counts the sidecar's answer to batch.
func (s *sender) tally(batch []*pb.Event, resp *pb.RecordResponse) {
	c := s.c
	c.accepted.Add(int64(resp.GetAccepted()))
	c.duplicates.Add(int64(resp.GetDuplicates()))
	c.rejected.Add(int64(len(resp.GetRejected())))
	if rej := resp.GetRejected(); len(rej) > 0 {
		// One line a batch, with the first; each at debug.
		c.log.Warn("agentmeter rejected events", "rejected", len(rej), "events", len(batch),
			"event_id", rej[0].GetEventId(), "field", rej[0].GetField(), "reason", rej[0].GetReason())
		for _, r := range rej[1:] {
			c.log.Debug("agentmeter rejected an event", "event_id", r.GetEventId(), "field", r.GetField(), "reason", r.GetReason())
		}
	}
	if n := int(resp.GetAccepted()+resp.GetDuplicates()) + len(resp.GetRejected()); n != len(batch) {
		c.log.Warn("agentmeter answered for a different number of events", "sent", len(batch), "answered", n)
	}
	c.resolve(len(batch))
}

// roundTrip sends req on the stream (opening one when needed) and reads its
// answer within the timeout. Any error leaves the stream closed, so that
// the next attempt opens a fresh one.
func (s *sender) roundTrip(ctx context.Context, req *pb.RecordRequest) (*pb.RecordResponse, error) {
	// The sidecar ends a stream that sends nothing for its
	// receiver.grpc.receive_timeout: an older one is replaced before it is
	// used, rather than failing once and waiting for a retry.
	if s.stream != nil && time.Since(s.lastUsed) > s.c.opts.streamIdle {
		s.closeStream()
	}
	if s.stream == nil {
		sctx, cancel := context.WithCancel(ctx)
		stream, err := s.c.ingest.RecordStream(sctx)
		if err != nil {
			cancel()
			return nil, err
		}
		s.stream, s.cancelStream = stream, cancel
	}
	timedOut := make(chan struct{})
	timer := time.AfterFunc(s.c.opts.timeout, func() {
		close(timedOut)
		s.cancelStream()
	})
	resp, err := s.exchange(req)
	if !timer.Stop() {
		<-timedOut
		err = status.Errorf(codes.DeadlineExceeded, "no answer from the sidecar within %s", s.c.opts.timeout)
	}
	if err != nil {
		s.closeStream()
		return nil, err
	}
	s.lastUsed = time.Now()
	return resp, nil
}

func (s *sender) exchange(req *pb.RecordRequest) (*pb.RecordResponse, error) {
	if err := s.stream.Send(req); err != nil {
		if !errors.Is(err, io.EOF) {
			return nil, err
		}
		// The stream ended; Recv has its status.
	}
	resp, err := s.stream.Recv()
	if errors.Is(err, io.EOF) {
		return nil, status.Error(codes.Unavailable, "the sidecar ended the stream")
	}
	return resp, err
}

func (s *sender) closeStream() {
	if s.cancelStream != nil {
		s.cancelStream()
	}
	s.stream, s.cancelStream = nil, nil
}

// classify tells backoff.Retry what to do with a failed attempt: retry
// after its backoff, retry after the sidecar's RetryInfo, split, or stop.
func classify(err error) error {
	st := status.Convert(err)
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded:
		return withRetryInfo(st, err)
	case codes.ResourceExhausted:
		if strings.Contains(st.Message(), "larger than max") {
			return backoff.Permanent(errTooLarge)
		}
		return withRetryInfo(st, err)
	case codes.InvalidArgument:
		if strings.Contains(st.Message(), "max_events_per_request") {
			return backoff.Permanent(errTooLarge)
		}
	}
	return backoff.Permanent(err)
}

// withRetryInfo returns the wait the sidecar asked for in a
// google.rpc.RetryInfo detail, or err for the backoff's own wait.
func withRetryInfo(st *status.Status, err error) error {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			if wait := ri.GetRetryDelay().AsDuration(); wait > 0 {
				return fmt.Errorf("%w (%w)", err, &backoff.RetryAfterError{Duration: wait})
			}
		}
	}
	return err
}
