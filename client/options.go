package client

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
)

// Defaults of the options.
const (
	DefaultQueueSize     = 10000
	DefaultMaxBatch      = 500
	DefaultMaxBatchBytes = 1 << 20 // the sidecar takes 4 MiB by default
	DefaultFlushInterval = 200 * time.Millisecond
	DefaultTimeout       = 10 * time.Second
	// DefaultGiveUpAfter is half the sidecar's default
	// receiver.dedupe_window (10m): a batch resent later than that could
	// be counted twice.
	DefaultGiveUpAfter    = 5 * time.Minute
	DefaultInitialBackoff = 100 * time.Millisecond
	DefaultMaxBackoff     = 5 * time.Second
	// DefaultStreamIdle is half the sidecar's default
	// receiver.grpc.receive_timeout (1m).
	DefaultStreamIdle = 30 * time.Second
)

type options struct {
	queueSize      int
	maxBatch       int
	maxBatchBytes  int
	flushInterval  time.Duration
	timeout        time.Duration
	giveUpAfter    time.Duration
	initialBackoff time.Duration
	maxBackoff     time.Duration
	streamIdle     time.Duration
	token          string
	agent          string
	logger         *slog.Logger
	now            func() time.Time
	dialOptions    []grpc.DialOption
}

func defaultOptions() options {
	return options{
		queueSize:      DefaultQueueSize,
		maxBatch:       DefaultMaxBatch,
		maxBatchBytes:  DefaultMaxBatchBytes,
		flushInterval:  DefaultFlushInterval,
		timeout:        DefaultTimeout,
		giveUpAfter:    DefaultGiveUpAfter,
		initialBackoff: DefaultInitialBackoff,
		maxBackoff:     DefaultMaxBackoff,
		streamIdle:     DefaultStreamIdle,
		now:            time.Now,
	}
}

func (o options) validate() error {
	var errs []error
	if o.queueSize < 1 {
		errs = append(errs, fmt.Errorf("queue size must be >= 1, got %d", o.queueSize))
	}
	if o.maxBatch < 1 {
		errs = append(errs, fmt.Errorf("max batch must be >= 1, got %d", o.maxBatch))
	}
	if o.maxBatchBytes < 1 {
		errs = append(errs, fmt.Errorf("max batch bytes must be >= 1, got %d", o.maxBatchBytes))
	}
	if o.flushInterval <= 0 {
		errs = append(errs, fmt.Errorf("flush interval must be > 0, got %s", o.flushInterval))
	}
	if o.timeout <= 0 {
		errs = append(errs, fmt.Errorf("timeout must be > 0, got %s", o.timeout))
	}
	if o.giveUpAfter <= 0 {
		errs = append(errs, fmt.Errorf("give-up time must be > 0, got %s", o.giveUpAfter))
	}
	if o.streamIdle <= 0 {
		errs = append(errs, fmt.Errorf("stream idle time must be > 0, got %s", o.streamIdle))
	}
	if o.initialBackoff <= 0 || o.maxBackoff < o.initialBackoff {
		errs = append(errs, fmt.Errorf("backoff must be 0 < initial <= max, got %s and %s", o.initialBackoff, o.maxBackoff))
	}
	return errors.Join(errs...)
}

// Option configures a Client.
type Option func(*options)

// WithQueueSize bounds the events waiting to be sent (default 10000).
// Record returns false when the queue is full.
func WithQueueSize(n int) Option { return func(o *options) { o.queueSize = n } }

// WithMaxBatch bounds the events of one request (default 500).
func WithMaxBatch(n int) Option { return func(o *options) { o.maxBatch = n } }

// WithMaxBatchBytes bounds the encoded size of one request (default 1 MiB;
// the sidecar's receiver.grpc.max_recv_msg_size_mib is 4 by default). A
// request the sidecar refuses as too large is split anyway.
func WithMaxBatchBytes(n int) Option { return func(o *options) { o.maxBatchBytes = n } }

// WithFlushInterval is the longest an event waits for its batch to fill
// before it is sent (default 200 ms).
func WithFlushInterval(d time.Duration) Option { return func(o *options) { o.flushInterval = d } }

// WithTimeout bounds one attempt to send a batch and read its answer
// (default 10 s); an attempt that takes longer is retried.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithGiveUpAfter is how long a batch is retried, from its first attempt,
// before its events are given up (default 5 minutes). Keep it plus the
// timeout below the sidecar's receiver.dedupe_window (10 minutes by
// default): a resend after the window could be counted twice.
func WithGiveUpAfter(d time.Duration) Option { return func(o *options) { o.giveUpAfter = d } }

// WithBackoff sets the first and the longest wait between two attempts
// (default 100 ms and 5 s); waits grow exponentially, with jitter.
func WithBackoff(initial, maxWait time.Duration) Option {
	return func(o *options) { o.initialBackoff, o.maxBackoff = initial, maxWait }
}

// WithToken sends "authorization: Bearer <token>" with every call, for a
// sidecar that requires a token. It is sent over plaintext connections
// too: the sidecar is on localhost or a Unix socket.
func WithToken(token string) Option { return func(o *options) { o.token = token } }

// WithAgent sets Event.agent on events recorded without one.
func WithAgent(name string) Option { return func(o *options) { o.agent = name } }

// WithLogger logs rejected events and failed batches (default: nothing).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithDialOptions adds gRPC dial options, after the client's own
// (plaintext transport, fast reconnection): TLS credentials, interceptors.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, opts...) }
}

// WithStreamIdle is how long an unused stream is kept (default 30 s); an
// older one is replaced before the next batch. Keep it below the sidecar's
// receiver.grpc.receive_timeout (1 minute by default), after which the
// sidecar ends a stream that sends nothing.
func WithStreamIdle(d time.Duration) Option { return func(o *options) { o.streamIdle = d } }
