// Package client sends agent events to an agentmeter sidecar without ever
// making the agent wait.
//
//	c, err := client.New("localhost:4320")
//	...
//	c.Record(&agentmeterv1.Event{ConversationId: id, Payload: ...}) // never blocks
//	...
//	defer c.Close(ctx) // sends what is queued, within ctx
//
// Record fills a missing event_id (a UUIDv7) and time, and queues the event.
// One background goroutine sends the queue over one RecordStream in batches
// (by count, encoded size, and at most FlushInterval after the first event of
// a batch). A batch the sidecar could not take (UNAVAILABLE,
// DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, or no answer within the timeout) is
// resent whole, with the same event ids, after an exponential backoff with
// jitter (github.com/cenkalti/backoff), or after the wait the sidecar asks
// for in a google.rpc.RetryInfo detail; the sidecar counts a repeated id
// once. A request refused as a whole for its size is split in halves. Events
// the sidecar rejects are logged and counted, never resent. A batch still
// failing GiveUpAfter after its first attempt is given up and counted, so
// that no resend can outlive the sidecar's dedupe window. So the agent may
// start before its sidecar, and the sidecar may restart under it.
//
// Target is a gRPC target: "localhost:4320", or "unix:///path/to/socket"
// for a Unix socket.
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// ErrClosed is returned by Flush after Close.
var ErrClosed = errors.New("agentmeter client closed")

// Stats are a client's counts since New. Every event Record queued is, at
// any time, exactly one of Accepted, Duplicates, Rejected, GivenUp or
// Pending.
type Stats struct {
	// Queued counts the events Record queued (it returned true).
	Queued int64
	// Sent counts the events sent at least once.
	Sent int64
	// Accepted, Duplicates and Rejected count the sidecar's answers.
	Accepted   int64
	Duplicates int64
	Rejected   int64
	// Dropped counts the events Record refused: the queue was full, the
	// event was nil, or the client was closed.
	Dropped int64
	// GivenUp counts queued events that will never be answered: their batch
	// failed for longer than GiveUpAfter or with an error that retrying
	// cannot fix, or Close's deadline came first.
	GivenUp int64
	// Retried counts event resends (an event resent twice counts 2).
	Retried int64
	// Pending counts the events queued or in flight, not yet answered.
	Pending int64
}

// Client sends events to one sidecar. Its methods are safe for concurrent
// use.
type Client struct {
	opts   options
	log    *slog.Logger
	conn   *grpc.ClientConn
	ingest pb.IngestServiceClient
	queue  chan *pb.Event
	nudge  chan struct{} // Flush asks the sender not to wait for a full batch

	// closeMu makes Close and Record exclusive: once closed is set under
	// the write lock, no Record adds to the queue.
	closeMu sync.RWMutex
	closed  bool

	stop     context.CancelFunc // ends the sender
	finished chan struct{}      // closed when the sender has ended
	once     sync.Once
	closeErr error

	// progressMu guards progress, which is closed and replaced each time
	// events are resolved (answered or given up), to wake Flush.
	progressMu sync.Mutex
	progress   chan struct{}

	queued, sent, accepted, duplicates, rejected atomic.Int64
	dropped, givenUp, retried, resolved          atomic.Int64
}

// New creates a client for the sidecar at target and starts its sender. It
// does not connect yet: events queue until the sidecar answers. Close
// releases it.
func New(target string, opts ...Option) (*Client, error) {
	if target == "" {
		return nil, errors.New("agentmeter client: empty target")
	}
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("agentmeter client: %w", err)
	}
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUserAgent("agentmeter-go-client"),
		// The sidecar restarts in a second or two: reconnect at that pace
		// rather than after gRPC's default backoff of up to two minutes.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
	}
	if o.token != "" {
		dial = append(dial, grpc.WithPerRPCCredentials(bearer("Bearer "+o.token)))
	}
	dial = append(dial, o.dialOptions...)
	conn, err := grpc.NewClient(target, dial...)
	if err != nil {
		return nil, fmt.Errorf("agentmeter client for %q: %w", target, err)
	}
	c := &Client{
		opts:     o,
		log:      o.logger,
		conn:     conn,
		ingest:   pb.NewIngestServiceClient(conn),
		queue:    make(chan *pb.Event, o.queueSize),
		nudge:    make(chan struct{}, 1),
		finished: make(chan struct{}),
		progress: make(chan struct{}),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.stop = cancel
	s := &sender{c: c}
	go func() {
		defer close(c.finished)
		s.run(ctx)
	}()
	return c, nil
}

// Record queues ev to be sent and returns at once. It sets ev.EventId (a
// UUIDv7) and ev.Time (now) when they are empty, and ev.Agent when empty
// and the client has WithAgent. It returns false, and counts the event in
// Stats.Dropped, when the queue is full or the client is closed.
//
// Record takes ownership of ev: the caller must not modify it afterwards.
func (c *Client) Record(ev *pb.Event) bool {
	if ev == nil {
		c.dropped.Add(1)
		return false
	}
	if ev.EventId == "" {
		id, err := uuid.NewV7()
		if err != nil {
			id = uuid.New()
		}
		ev.EventId = id.String()
	}
	if ev.Time == nil {
		ev.Time = timestamppb.New(c.opts.now())
	}
	if ev.Agent == "" {
		ev.Agent = c.opts.agent
	}
	c.closeMu.RLock()
	defer c.closeMu.RUnlock()
	if c.closed {
		c.dropped.Add(1)
		return false
	}
	select {
	case c.queue <- ev:
		c.queued.Add(1)
		return true
	default:
		c.dropped.Add(1)
		return false
	}
}

// Flush sends what is queued now without waiting for a full batch, and
// returns when every event queued before the call is answered or given up,
// or with ctx's error when ctx ends first.
func (c *Client) Flush(ctx context.Context) error {
	target := c.queued.Load()
	select {
	case c.nudge <- struct{}{}:
	default:
	}
	for {
		c.progressMu.Lock()
		wait := c.progress
		c.progressMu.Unlock()
		if c.resolved.Load() >= target {
			return nil
		}
		select {
		case <-wait:
		case <-c.finished:
			if c.resolved.Load() >= target {
				return nil
			}
			return ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close stops taking events, sends what is queued (Flush) within ctx, then
// stops the sender and closes the connection. Events still unsent when ctx
// ends are given up and counted. Close is idempotent; it returns ctx's
// error when the queue could not be sent in time.
func (c *Client) Close(ctx context.Context) error {
	c.once.Do(func() {
		c.closeMu.Lock()
		c.closed = true
		c.closeMu.Unlock()
		c.closeErr = c.Flush(ctx)
		c.stop()
		<-c.finished
		if err := c.conn.Close(); err != nil && c.closeErr == nil {
			c.closeErr = err
		}
	})
	return c.closeErr
}

// Stats returns the counts so far.
func (c *Client) Stats() Stats {
	resolved := c.resolved.Load()
	queued := c.queued.Load()
	return Stats{
		Queued:     queued,
		Sent:       c.sent.Load(),
		Accepted:   c.accepted.Load(),
		Duplicates: c.duplicates.Load(),
		Rejected:   c.rejected.Load(),
		Dropped:    c.dropped.Load(),
		GivenUp:    c.givenUp.Load(),
		Retried:    c.retried.Load(),
		Pending:    max(queued-resolved, 0),
	}
}

// resolve records that n events were answered or given up, and wakes Flush.
func (c *Client) resolve(n int) {
	c.resolved.Add(int64(n))
	c.progressMu.Lock()
	close(c.progress)
	c.progress = make(chan struct{})
	c.progressMu.Unlock()
}

// bearer is the authorization metadata of every call.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": string(b)}, nil
}

// RequireTransportSecurity is false: the sidecar is on localhost or a Unix
// socket, where agentmeter takes the token over plaintext.
func (bearer) RequireTransportSecurity() bool { return false }
