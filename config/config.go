// Package config holds the collector configuration: its types, the defaults
// (Default), strict YAML loading with ${env:NAME} expansion (Parse, Load) and
// the checks on every value (Validate).
package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// Protocols of the OTLP exporter.
const (
	// ProtocolGRPC is OTLP over gRPC; the endpoint is host:port.
	ProtocolGRPC = "grpc"
	// ProtocolHTTPProtobuf is OTLP over HTTP with protobuf bodies; the
	// endpoint is a full http:// or https:// URL.
	ProtocolHTTPProtobuf = "http/protobuf"
)

// defaultOTLPHTTPEndpoint is exporters.otlp.endpoint when the protocol is
// http/protobuf and the file sets no endpoint.
const defaultOTLPHTTPEndpoint = "http://localhost:4318/v1/metrics"

// maxFileSize bounds what Load reads: a config file is a few KiB.
const maxFileSize = 1 << 20

// Config is the whole collector configuration. The zero Config is not
// valid: start from Default, or use Parse or Load, which decode over it.
type Config struct {
	// Receiver is the gRPC ingest of agent events.
	Receiver Receiver `yaml:"receiver"`
	// HTTP is the server of /metrics, /healthz and /readyz.
	HTTP HTTP `yaml:"http"`
	// Exporters are where the metrics go: Prometheus scrape, OTLP push.
	Exporters Exporters `yaml:"exporters"`
	// Conversations bounds the per-conversation state and budgets.
	Conversations Conversations `yaml:"conversations"`
	// Pricing chooses the price table.
	Pricing Pricing `yaml:"pricing"`
	// Storage makes the state durable across restarts.
	Storage Storage `yaml:"storage"`
	// Shutdown bounds the graceful stop.
	Shutdown Shutdown `yaml:"shutdown"`
	// Log configures the collector's own log.
	Log Log `yaml:"log"`
	// Memory bounds the collector's memory; every other memory bound is
	// sized from it.
	Memory Memory `yaml:"memory"`
}

// Receiver configures the ingest of agent events.
type Receiver struct {
	// GRPC is the gRPC server the agents send to.
	GRPC GRPC `yaml:"grpc"`
	// Auth decides who may write.
	Auth ReceiverAuth `yaml:"auth"`
	// MaxEventsPerRequest is the most events one ingest request may carry;
	// a larger request is rejected whole. Default 10000; must be >= 1
	// (0 is invalid, not "unlimited").
	MaxEventsPerRequest int `yaml:"max_events_per_request"`
	// DedupeWindow is how long an event id is remembered so that a retried
	// event is counted once. Default 10m; 0 disables de-duplication;
	// must be >= 0.
	DedupeWindow time.Duration `yaml:"dedupe_window"`
	// DedupeMaxIDs is the most event ids held for de-duplication (the
	// oldest are forgotten first). Default 100000; must be >= 1 when
	// DedupeWindow > 0, unused when it is 0.
	DedupeMaxIDs int `yaml:"dedupe_max_ids"`
	// MaxFutureSkew is how far ahead of the collector's clock an event time
	// may be; an event further ahead is rejected. Default 5m; must be > 0.
	MaxFutureSkew time.Duration `yaml:"max_future_skew"`
	// OpenHands takes the webhook feed of OpenHands' agent-server on the
	// HTTP server.
	OpenHands OpenHands `yaml:"openhands"`
}

// OpenHands configures the receiver of OpenHands' V1 agent-server webhook
// feed (POST {path}/events/{conversation_id}, POST {path}/conversations).
type OpenHands struct {
	// Enabled serves the webhook on http.endpoint. Default false.
	Enabled bool `yaml:"enabled"`
	// Path is the URL path the agent-server's OH_WEBHOOKS_0_BASE_URL ends
	// in. Default "/openhands"; must start with "/", be a plain clean path,
	// and not be /, /healthz or /readyz.
	Path string `yaml:"path"`
	// APIKeys are the accepted X-Session-API-Key values (the agent-server's
	// session API keys). Default none: then only loopback peers are
	// accepted. Values must not be empty.
	APIKeys []string `yaml:"api_keys"`
	// MaxBodyMiB bounds one request body, in MiB; a larger one is answered
	// 413. Default 16 (the agent-server batches up to 5 MiB, and a
	// full_state carries every call of the conversation); must be between
	// 1 and 256.
	MaxBodyMiB int `yaml:"max_body_mib"`
}

// ReceiverAuth configures who may write to the gRPC server.
type ReceiverAuth struct {
	// TokenFile is a file holding the bearer token every agentmeter RPC
	// must carry (metadata "authorization: Bearer <token>"); health and
	// reflection stay open. Reloaded when the file changes. Default "": no
	// token. Load resolves a relative path against the config file's
	// directory.
	TokenFile string `yaml:"token_file"`
}

// GRPCTLS configures TLS on the gRPC server (the names of the OpenTelemetry
// Collector's configtls). Files are reloaded when they change.
type GRPCTLS struct {
	// CertFile is the server's PEM certificate (chain). Default "":
	// plaintext. Needs KeyFile.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the PEM key of CertFile. Default ""; needs CertFile.
	KeyFile string `yaml:"key_file"`
	// ClientCAFile holds the PEM CAs that sign client certificates; when
	// set, every client must present one (mutual TLS). Default ""; needs
	// CertFile.
	ClientCAFile string `yaml:"client_ca_file"`
}

// GRPC configures the ingest gRPC server.
type GRPC struct {
	// Endpoint is the host:port to listen on, or unix:///absolute/path
	// for a Unix socket (mode 0660, for pod-local ingest through a shared
	// volume). Default "localhost:4320": a sidecar shares the pod network,
	// so agents reach it on localhost. An empty host listens on every
	// interface; port 0 picks a free port.
	Endpoint string `yaml:"endpoint"`
	// TLS turns on TLS (and mutual TLS) on the endpoint.
	TLS GRPCTLS `yaml:"tls"`
	// MaxRecvMsgSizeMiB is the largest request accepted, in MiB. Default 4
	// (10000 LLM calls with every field set take 2.56 MiB, see
	// receiver's TestFullBatchFitsDefaults);
	// must be between 1 and 256.
	MaxRecvMsgSizeMiB int `yaml:"max_recv_msg_size_mib"`
	// MaxConcurrentStreams is the most concurrent streams per client
	// connection. Default 16; must be >= 1.
	MaxConcurrentStreams uint32 `yaml:"max_concurrent_streams"`
	// MaxConnections is the most open client connections; more wait in
	// the kernel's accept backlog. Default 64; must be between 1 and 65535.
	MaxConnections int `yaml:"max_connections"`
	// MaxInflightRPCs is the most gRPC calls in progress across all
	// connections (a client stream for its whole life, a server stream
	// until its request is in); more are refused with RESOURCE_EXHAUSTED
	// and a retry delay before their request is read. Default 0: sized
	// from the memory limit (see Inflight); must be >= 0, and explicit
	// bounds must fit in memory.limit_mib (see checkInflight).
	MaxInflightRPCs int `yaml:"max_inflight_rpcs"`
	// MaxInflightMiB bounds the estimated memory of the ingest requests
	// being decoded and applied at once, in MiB; a request over it is
	// refused with RESOURCE_EXHAUSTED and a retry delay. Default 0: sized
	// from the memory limit (see Inflight); must be >= 0.
	MaxInflightMiB int `yaml:"max_inflight_mib"`
	// ReceiveTimeout is the longest wait for a request message: a unary
	// call's request, or the next message of a stream. An idle
	// RecordStream is then ended with UNAVAILABLE, any other call
	// cancelled. Default 1m; must be > 0.
	ReceiveTimeout time.Duration `yaml:"receive_timeout"`
	// MaxConnectionIdle closes a connection with no call in progress for
	// this long. Default 5m; must be > 0.
	MaxConnectionIdle time.Duration `yaml:"max_connection_idle"`
	// HandshakeTimeout bounds a new connection's setup (HTTP/2 preface
	// and settings, TLS). Default 10s; must be > 0.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
}

// ownMiB is the memory the collector holds before any request: an idle
// process's RSS is 33-37 MiB with the built-in price table (the idle RSS
// column of scripts/loadbench.sh).
const ownMiB = 32

// InflightMemoryMiB is the part of memoryLimitMiB the in-flight bounds may
// use: what is left after the collector's own ownMiB, and at least half.
func InflightMemoryMiB(memoryLimitMiB int) int {
	return max(memoryLimitMiB-ownMiB, memoryLimitMiB/2)
}

// storageMemTables is how many memtables Pebble may hold
// (storage.MaxMemTables).
const storageMemTables = 2

// StorageCacheMiB is the size of Pebble's block cache with
// storage.directory set: 8 MiB. It holds blocks of the snapshot, the log
// and the conversation records, read at start and when an evicted
// conversation is reloaded; the dedupe ids are not in Pebble.
func (c Config) StorageCacheMiB() int { return 8 }

// StorageMemTableMiB is the size of each of Pebble's memtables with
// storage.directory set: Pebble's share of memory.limit_mib (an eighth of
// it within 8-32 MiB, plus 16) less the cache, over storageMemTables: 8
// MiB at 64, 12 at 128, 20 at 256 and above. Larger memtables hold more
// log entries until a snapshot drops them, so fewer are flushed to disk.
func (c Config) StorageMemTableMiB() int {
	return (min(max(c.Memory.LimitMiB/8, 8), 32) + 16 - c.StorageCacheMiB()) / storageMemTables
}

// StorageMemoryMiB is the memory durable mode may hold: the store's block
// cache and memtables, and the processor's two dedupe id filters, with
// storage.directory set; 0 without.
func (c Config) StorageMemoryMiB() int {
	if c.Storage.Directory == "" {
		return 0
	}
	return c.StorageCacheMiB() + storageMemTables*c.StorageMemTableMiB() + c.DedupeFiltersMiB()
}

// DedupeFilterBytes is the memory of each of durable mode's two dedupe id
// filters (bloom filters of a generation's ids, so that most new ids need
// no disk lookup): 1/64 of memory.limit_mib, at most 8 MiB (4 MiB at 256,
// ~3.4 million ids a generation at 1% false positives).
func (c Config) DedupeFilterBytes() int { return min(c.Memory.LimitMiB<<20/64, 8<<20) }

// DedupeFiltersMiB is the memory of both id filters, rounded up.
func (c Config) DedupeFiltersMiB() int { return (2*c.DedupeFilterBytes() + 1<<20 - 1) >> 20 }

// Inflight resolves receiver.grpc.max_inflight_rpcs and max_inflight_mib
// (GRPC.Inflight) against memory.limit_mib less what the durable store
// may hold (StorageMemoryMiB).
func (c Config) Inflight() (rpcs, mib int) {
	return c.Receiver.GRPC.Inflight(c.Memory.LimitMiB - c.StorageMemoryMiB())
}

// Inflight resolves MaxInflightRPCs and MaxInflightMiB against the
// process's memory limit in MiB: a zero value is sized from the part of it
// left for requests (InflightMemoryMiB). A call in flight can hold a whole
// request of max_recv_msg_size_mib while it arrives, so half of that part
// is given to calls (at least 4, at most 1024), and a quarter to decoded
// requests (at least two requests' worth).
func (g GRPC) Inflight(memoryLimitMiB int) (rpcs, mib int) {
	usable := InflightMemoryMiB(memoryLimitMiB)
	rpcs, mib = g.MaxInflightRPCs, g.MaxInflightMiB
	if rpcs == 0 {
		rpcs = min(max(usable/2/max(g.MaxRecvMsgSizeMiB, 1), 4), 1024)
	}
	if mib == 0 {
		mib = max(usable/4, 2*g.MaxRecvMsgSizeMiB)
	}
	return rpcs, mib
}

// HTTP configures the HTTP server.
type HTTP struct {
	// Endpoint is the host:port serving /metrics, /healthz and /readyz.
	// Default "0.0.0.0:9464", so that Prometheus and the kubelet can reach
	// it. Port 0 picks a free port.
	Endpoint string `yaml:"endpoint"`
	// WebConfigFile is a Prometheus web configuration file
	// (github.com/prometheus/exporter-toolkit: tls_server_config,
	// basic_auth_users, http_server_config) that turns on TLS and basic
	// auth for the whole HTTP server, probes included. Default "": plain
	// HTTP, no auth. Load resolves a relative path against the directory
	// of the config file; the file is read again on every connection
	// (TLS) and request (basic auth), so edits apply without a restart.
	WebConfigFile string `yaml:"web_config_file"`
}

// Exporters configures where the metrics go.
type Exporters struct {
	// Prometheus serves the metrics for scraping on the HTTP server.
	Prometheus Prometheus `yaml:"prometheus"`
	// OTLP pushes the metrics to an OTLP receiver.
	OTLP OTLP `yaml:"otlp"`
}

// Prometheus configures the scrape endpoint.
type Prometheus struct {
	// Enabled serves the metrics on the HTTP server. Default true.
	Enabled bool `yaml:"enabled"`
	// Path is the URL path of the metrics. Default "/metrics"; must start
	// with "/", be a plain clean path, and not be /healthz or /readyz.
	Path string `yaml:"path"`
}

// OTLP configures the OTLP push exporter.
type OTLP struct {
	// Enabled pushes the metrics every Interval. Default false.
	Enabled bool `yaml:"enabled"`
	// Endpoint is where to push: host:port for protocol grpc (default
	// "localhost:4317"), a full http:// or https:// URL with its path for
	// http/protobuf (default "http://localhost:4318/v1/metrics" when the
	// file leaves the key out or empty). An explicit "" is invalid.
	Endpoint string `yaml:"endpoint"`
	// Protocol is "grpc" (default) or "http/protobuf".
	Protocol string `yaml:"protocol"`
	// Insecure sends in plaintext instead of TLS, for protocol grpc.
	// Default true: a sidecar pushes to a node-local collector. For
	// http/protobuf the endpoint's scheme decides (http:// plaintext,
	// https:// TLS) and Insecure is not used.
	Insecure bool `yaml:"insecure"`
	// Headers are sent with every export, such as an authorization token.
	// Keys must be valid HTTP header names (for grpc, also valid gRPC
	// metadata keys, not starting with "grpc-"); values must not be empty.
	// Default none.
	Headers map[string]string `yaml:"headers"`
	// Interval is the time between two pushes. Default 30s; must be > 0.
	Interval time.Duration `yaml:"interval"`
	// Timeout bounds one push. Default 10s, or Interval when that is
	// shorter and the file sets no timeout (so that `interval: 1s` alone is
	// valid); must be > 0 and <= Interval.
	Timeout time.Duration `yaml:"timeout"`
}

// Conversations bounds the per-conversation state.
type Conversations struct {
	// IdleExpiry is how long a conversation with no event stays tracked:
	// after it, the conversation leaves the state gauge and the ledger.
	// Default 30m; must be > 0.
	IdleExpiry time.Duration `yaml:"idle_expiry"`
	// ClosedRetention is how long a closed conversation stays queryable.
	// Default 5m; 0 forgets it at once; must be >= 0.
	ClosedRetention time.Duration `yaml:"closed_retention"`
	// MaxTracked is the most conversations tracked at once; beyond it the
	// oldest is evicted. Default 10000; must be >= 1.
	MaxTracked int `yaml:"max_tracked"`
	// DefaultMaxBudgetUSD is the budget, in USD, of a conversation that
	// states none. Default nil: no budget. When set it must be finite and
	// > 0 (0 is invalid: omit the key for no budget).
	DefaultMaxBudgetUSD *float64 `yaml:"default_max_budget_usd"`
}

// Storage keeps the state on local disk, so that a restart (a crash, an
// OOM kill, a new version) loses nothing acknowledged and counts no resent
// event twice.
type Storage struct {
	// Directory holds the database. Default "": memory only, everything
	// is lost at exit. Load resolves a relative path against the directory
	// of the config file.
	Directory string `yaml:"directory"`
	// Retention is how long a conversation's ledger entry is kept on disk
	// after its last event. Default 720h (30 days); 0 keeps it forever;
	// must be >= 0.
	Retention time.Duration `yaml:"retention"`
	// Sync acknowledges a batch only once it is on stable storage (fsync).
	// Default true. false acknowledges once the batch is in the operating
	// system's cache: it survives a crash of the collector, not of the node.
	Sync bool `yaml:"sync"`
	// MinFreeMiB is the free space, in MiB, under which ingest is refused
	// with RESOURCE_EXHAUSTED rather than run the disk full. Default 64;
	// must be >= 0 (0 = no check).
	MinFreeMiB int `yaml:"min_free_mib"`
	// SnapshotInterval is the longest time between two snapshots of the
	// totals; a restart replays what came after the last one. Default 10s;
	// must be > 0.
	SnapshotInterval time.Duration `yaml:"snapshot_interval"`
}

// Pricing chooses the price table.
type Pricing struct {
	// Table is the path of a price table file: LiteLLM's
	// model_prices_and_context_window.json as it is, or agentmeter's own
	// YAML or JSON table. Default "": the snapshot of LiteLLM's list built
	// into the binary. Load resolves a relative path against the directory
	// of the config file.
	Table string `yaml:"table"`
	// Format is the table's format: litellm or agentmeter. Default "":
	// told from the file (a .yaml/.yml file is agentmeter's; a .json file
	// with a "models" list is agentmeter's, one of model entries LiteLLM's).
	Format string `yaml:"format"`
	// Overrides is the path of an agentmeter table layered on the table:
	// negotiated prices, private models, aliases, prices with
	// effective_from. Default "": none. Resolved like Table.
	Overrides string `yaml:"overrides"`
}

// Shutdown bounds the graceful stop.
type Shutdown struct {
	// GracePeriod is the most time a stop may take, the final export
	// included. Default 15s; must be > 0.
	GracePeriod time.Duration `yaml:"grace_period"`
}

// Log configures the collector's own log.
type Log struct {
	// Level is the least severe level logged: debug, info (default), warn
	// or error.
	Level string `yaml:"level"`
	// Format is json (default, for containers) or text (for a terminal).
	Format string `yaml:"format"`
}

// Memory bounds the collector's memory.
type Memory struct {
	// LimitMiB is the memory the collector may use, in MiB. It sets the Go
	// runtime's soft memory limit (runtime/debug.SetMemoryLimit), unless
	// the GOMEMLIMIT environment variable is set, which then wins for the
	// runtime; the collector's other memory bounds (in-flight requests,
	// connections, the scrape path) are sized from LimitMiB either way.
	// Default: 90% of the container's cgroup memory limit (v1 or v2) when
	// there is one, else 256. Must be between 16 and 1048576.
	LimitMiB int `yaml:"limit_mib"`
}

// DefaultMemoryLimitMiB is memory.limit_mib outside a container with a
// memory limit.
const DefaultMemoryLimitMiB = 256

// Bounds of memory.limit_mib: below 16 MiB the runtime's own footprint
// leaves nothing to size bounds from; the top keeps bytes in an int64.
const (
	minMemoryLimitMiB = 16
	maxMemoryLimitMiB = 1 << 20
)

// LimitBytes is LimitMiB in bytes.
func (m Memory) LimitBytes() int64 { return int64(m.LimitMiB) << 20 }

// RuntimeLimitBytes is the Go runtime's soft memory limit: LimitMiB less
// a quarter (at most 32 MiB) for the resident memory the runtime does not
// count, mostly the executable's own pages, and for the heap's overshoot
// while the collector works at the limit (more when the CPU is short and
// the collector's GC falls behind), so that the process's resident memory,
// not only what the runtime manages, stays within LimitMiB. At
// memory.limit_mib: 128 on a loaded machine, 8 concurrent scrapes at the
// series cap peaked at 127.8 MiB RSS with 24 MiB held back, at ~119 MiB
// with 32 (go test -v -run TestMemoryStorms ./e2e/).
func (m Memory) RuntimeLimitBytes() int64 {
	return m.LimitBytes() - min(m.LimitBytes()/4, 32<<20)
}

// memoryLimitMiB is the default memory.limit_mib: 90% of the limit that
// cgroup reports, in MiB, or DefaultMemoryLimitMiB when it reports none
// (not in a container, no limit set, or unreadable).
func memoryLimitMiB(cgroup func() (uint64, error)) int {
	limit, err := cgroup()
	if err != nil || limit == 0 {
		return DefaultMemoryLimitMiB
	}
	mib := limit / 10 * 9 >> 20
	return int(max(minMemoryLimitMiB, min(mib, maxMemoryLimitMiB)))
}

// Default returns the configuration with every default. It is the one place
// defaults are set; config.yaml at the repository root spells them out.
// memory.limit_mib depends on the container Default runs in: it reads the
// cgroup memory limit.
func Default() Config {
	return Config{
		Receiver: Receiver{
			GRPC: GRPC{
				Endpoint:             "localhost:4320",
				MaxRecvMsgSizeMiB:    4,
				MaxConcurrentStreams: 16,
				MaxConnections:       64,
				ReceiveTimeout:       time.Minute,
				MaxConnectionIdle:    5 * time.Minute,
				HandshakeTimeout:     10 * time.Second,
			},
			MaxEventsPerRequest: 10000,
			DedupeWindow:        10 * time.Minute,
			DedupeMaxIDs:        100000,
			MaxFutureSkew:       5 * time.Minute,
			OpenHands:           OpenHands{Enabled: false, Path: "/openhands", MaxBodyMiB: 16},
		},
		HTTP: HTTP{Endpoint: "0.0.0.0:9464"},
		Exporters: Exporters{
			Prometheus: Prometheus{Enabled: true, Path: "/metrics"},
			OTLP: OTLP{
				Enabled:  false,
				Endpoint: "localhost:4317",
				Protocol: ProtocolGRPC,
				Insecure: true,
				Interval: 30 * time.Second,
				Timeout:  10 * time.Second,
			},
		},
		Conversations: Conversations{
			IdleExpiry:      30 * time.Minute,
			ClosedRetention: 5 * time.Minute,
			MaxTracked:      10000,
		},
		Pricing: Pricing{Table: ""},
		Storage: Storage{
			Retention:        720 * time.Hour,
			Sync:             true,
			MinFreeMiB:       64,
			SnapshotInterval: 10 * time.Second,
		},
		Shutdown: Shutdown{GracePeriod: 15 * time.Second},
		Log:      Log{Level: "info", Format: "json"},
		Memory:   Memory{LimitMiB: memoryLimitMiB(memlimit.FromCgroup)},
	}
}

// Load reads the file at path and parses it with Parse. A relative
// pricing.table is resolved against the file's directory. Errors name the
// path; on error the returned Config is the zero Config.
func Load(path string) (Config, error) {
	data, err := readFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("load config %q: %w", path, err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return Config{}, fmt.Errorf("load config %q: %w", path, err)
	}
	tls := &cfg.Receiver.GRPC.TLS
	for _, p := range []*string{&cfg.Pricing.Table, &cfg.Pricing.Overrides, &cfg.HTTP.WebConfigFile, &cfg.Receiver.Auth.TokenFile,
		&tls.CertFile, &tls.KeyFile, &tls.ClientCAFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(filepath.Dir(path), *p)
		}
	}
	if d := cfg.Storage.Directory; d != "" && !filepath.IsAbs(d) {
		cfg.Storage.Directory = filepath.Join(filepath.Dir(path), d)
	}
	return cfg, nil
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("file is larger than %d bytes", maxFileSize)
	}
	return data, nil
}

// SlogLevel maps Log.Level to a slog.Level; anything but debug, warn and
// error (which Validate rejects) is info.
func (c Config) SlogLevel() slog.Level {
	switch c.Log.Level {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

// Validate reports every value problem of c, joined with errors.Join. Each
// message names the dotted YAML path of the value, such as
// "receiver.grpc.max_recv_msg_size_mib must be between 1 and 256, got 0".
func (c Config) Validate() error {
	errs := []error{
		c.Receiver.Validate(),
		c.HTTP.Validate(),
		c.Exporters.Validate(),
		c.Conversations.Validate(),
		c.Pricing.Validate(),
		c.Storage.Validate(),
		c.Shutdown.Validate(),
		c.Log.Validate(),
		c.Memory.Validate(),
		c.checkInflight(),
	}
	// The two servers cannot share a port.
	gh, gp, gerr := net.SplitHostPort(c.Receiver.GRPC.Endpoint)
	hh, hp, herr := net.SplitHostPort(c.HTTP.Endpoint)
	if gerr == nil && herr == nil && gp == hp && gp != "0" && (gh == hh || anyHost(gh) || anyHost(hh)) {
		errs = append(errs, mustf("http.endpoint", "receiver.grpc.endpoint",
			"must not use the port of receiver.grpc.endpoint (%s), got %q", gp, c.HTTP.Endpoint))
	}
	return errors.Join(errs...)
}

// checkInflight checks in-flight bounds set explicitly against
// memory.limit_mib: the requests arriving (max_inflight_rpcs ×
// max_recv_msg_size_mib) and those decoded (max_inflight_mib) must fit in
// what it leaves for requests (InflightMemoryMiB). Bounds left at 0 are
// sized from it and fit.
func (c Config) checkInflight() error {
	g := c.Receiver.GRPC
	if (g.MaxInflightRPCs <= 0 && g.MaxInflightMiB <= 0) || g.MaxRecvMsgSizeMiB < 1 || c.Memory.LimitMiB < minMemoryLimitMiB {
		return nil
	}
	rpcs, mib := c.Inflight()
	usable := InflightMemoryMiB(c.Memory.LimitMiB - c.StorageMemoryMiB())
	if total := int64(rpcs)*int64(g.MaxRecvMsgSizeMiB) + int64(mib); total > int64(usable) {
		path := "receiver.grpc.max_inflight_rpcs"
		if g.MaxInflightRPCs <= 0 {
			path = "receiver.grpc.max_inflight_mib"
		}
		storage := ""
		if n := c.StorageMemoryMiB(); n > 0 {
			storage = fmt.Sprintf(" less storage's %d MiB", n)
		}
		return mustf(path, "memory.limit_mib",
			"must fit in the %d MiB that memory.limit_mib (%d%s) leaves for requests: max_inflight_rpcs × max_recv_msg_size_mib + max_inflight_mib = %d × %d + %d = %d MiB",
			usable, c.Memory.LimitMiB, storage, rpcs, g.MaxRecvMsgSizeMiB, mib, total)
	}
	return nil
}

// anyHost reports whether a listen host means every interface.
func anyHost(h string) bool {
	return h == "" || h == "0.0.0.0" || h == "::"
}

// Validate reports the problems of the receiver section.
func (r Receiver) Validate() error {
	var errs []error
	errs = append(errs, r.GRPC.Validate(), checkFilePath("receiver.auth.token_file", r.Auth.TokenFile))
	if r.MaxEventsPerRequest < 1 {
		errs = append(errs, mustf("receiver.max_events_per_request", "", "must be >= 1, got %d", r.MaxEventsPerRequest))
	}
	if r.DedupeWindow < 0 {
		errs = append(errs, mustf("receiver.dedupe_window", "", "must be >= 0 (0 disables de-duplication), got %s", r.DedupeWindow))
	}
	if r.DedupeWindow > 0 && r.DedupeMaxIDs < 1 {
		errs = append(errs, mustf("receiver.dedupe_max_ids", "receiver.dedupe_window",
			"must be >= 1 while receiver.dedupe_window > 0, got %d", r.DedupeMaxIDs))
	}
	if r.MaxFutureSkew <= 0 {
		errs = append(errs, mustf("receiver.max_future_skew", "", "must be > 0, got %s", r.MaxFutureSkew))
	}
	errs = append(errs, r.OpenHands.Validate())
	return errors.Join(errs...)
}

// Validate reports the problems of the receiver.openhands section. It checks
// the section whether or not it is enabled.
func (o OpenHands) Validate() error {
	var errs []error
	const path = "receiver.openhands.path"
	switch p := o.Path; {
	case !strings.HasPrefix(p, "/") || p == "/":
		errs = append(errs, mustf(path, "", "must start with \"/\" and name a path, such as /openhands, got %q", p))
	case strings.IndexFunc(p, notPathChar) >= 0:
		errs = append(errs, mustf(path, "", "must be a plain URL path (letters, digits and - . _ ~ /), got %q", p))
	case strings.HasSuffix(p, "/") || strings.Contains(p, "//") ||
		strings.Contains(p+"/", "/./") || strings.Contains(p+"/", "/../"):
		errs = append(errs, mustf(path, "", "must be a clean path (no trailing /, //, . or ..), got %q", p))
	case p == "/healthz" || p == "/readyz":
		errs = append(errs, mustf(path, "", "must not be /healthz or /readyz (the collector serves those), got %q", p))
	}
	for i, k := range o.APIKeys {
		if k == "" {
			errs = append(errs, mustf(fmt.Sprintf("receiver.openhands.api_keys[%d]", i), "", "must not be empty"))
		} else if strings.IndexFunc(k, notFieldChar) >= 0 || strings.TrimSpace(k) != k {
			errs = append(errs, mustf(fmt.Sprintf("receiver.openhands.api_keys[%d]", i), "",
				"must be a header value without control characters or surrounding spaces"))
		}
	}
	if o.MaxBodyMiB < 1 || o.MaxBodyMiB > 256 {
		errs = append(errs, mustf("receiver.openhands.max_body_mib", "", "must be between 1 and 256, got %d", o.MaxBodyMiB))
	}
	return errors.Join(errs...)
}

// Validate reports the problems of the receiver.grpc section.
func (g GRPC) Validate() error {
	var errs []error
	if err := checkGRPCListen(g.Endpoint); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, g.TLS.Validate())
	if g.MaxRecvMsgSizeMiB < 1 || g.MaxRecvMsgSizeMiB > 256 {
		errs = append(errs, mustf("receiver.grpc.max_recv_msg_size_mib", "", "must be between 1 and 256, got %d", g.MaxRecvMsgSizeMiB))
	}
	if g.MaxConcurrentStreams < 1 {
		errs = append(errs, mustf("receiver.grpc.max_concurrent_streams", "", "must be >= 1, got %d", g.MaxConcurrentStreams))
	}
	if g.MaxConnections < 1 || g.MaxConnections > 65535 {
		errs = append(errs, mustf("receiver.grpc.max_connections", "", "must be between 1 and 65535, got %d", g.MaxConnections))
	}
	if g.MaxInflightRPCs < 0 {
		errs = append(errs, mustf("receiver.grpc.max_inflight_rpcs", "", "must be >= 0 (0 sizes it from the memory limit), got %d", g.MaxInflightRPCs))
	}
	if g.MaxInflightMiB < 0 {
		errs = append(errs, mustf("receiver.grpc.max_inflight_mib", "", "must be >= 0 (0 sizes it from the memory limit), got %d", g.MaxInflightMiB))
	}
	if g.ReceiveTimeout <= 0 {
		errs = append(errs, mustf("receiver.grpc.receive_timeout", "", "must be > 0, got %s", g.ReceiveTimeout))
	}
	if g.MaxConnectionIdle <= 0 {
		errs = append(errs, mustf("receiver.grpc.max_connection_idle", "", "must be > 0, got %s", g.MaxConnectionIdle))
	}
	if g.HandshakeTimeout <= 0 {
		errs = append(errs, mustf("receiver.grpc.handshake_timeout", "", "must be > 0, got %s", g.HandshakeTimeout))
	}
	return errors.Join(errs...)
}

// Validate reports the problems of the receiver.grpc.tls section.
func (t GRPCTLS) Validate() error {
	const p = "receiver.grpc.tls."
	errs := []error{
		checkFilePath(p+"cert_file", t.CertFile),
		checkFilePath(p+"key_file", t.KeyFile),
		checkFilePath(p+"client_ca_file", t.ClientCAFile),
	}
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		errs = append(errs, mustf(p+"cert_file", "", "needs receiver.grpc.tls.key_file (its key)"))
	case t.CertFile == "" && t.KeyFile != "":
		errs = append(errs, mustf(p+"key_file", "", "needs receiver.grpc.tls.cert_file (the certificate of this key)"))
	}
	if t.ClientCAFile != "" && t.CertFile == "" {
		errs = append(errs, mustf(p+"client_ca_file", "", "needs receiver.grpc.tls.cert_file: mutual TLS is TLS with client certificates"))
	}
	return errors.Join(errs...)
}

// maxSocketPath is the longest Unix socket path Linux takes (sun_path
// holds 108 bytes with the terminating NUL).
const maxSocketPath = 107

// SocketPath returns the path of a unix:///path or unix:/path endpoint
// (the target syntax grpc-go and grpcio dial) and true, or "" and false
// for host:port.
func SocketPath(endpoint string) (string, bool) {
	rest, ok := strings.CutPrefix(endpoint, "unix:")
	if !ok {
		return "", false
	}
	if p, ok := strings.CutPrefix(rest, "//"); ok {
		return p, true
	}
	return rest, true
}

// checkGRPCListen checks receiver.grpc.endpoint: host:port, or a Unix
// socket with an absolute path.
func checkGRPCListen(endpoint string) error {
	const path = "receiver.grpc.endpoint"
	sock, ok := SocketPath(endpoint)
	switch {
	case !ok:
		return checkListen(path, endpoint)
	case !filepath.IsAbs(sock) || strings.ContainsRune(sock, 0) || strings.HasSuffix(sock, "/"):
		return mustf(path, "", "must be unix:///absolute/path/to/file.sock for a Unix socket, got %q", endpoint)
	case len(sock) > maxSocketPath:
		return mustf(path, "", "must be a Unix socket path of at most %d bytes, got %d bytes in %q", maxSocketPath, len(sock), endpoint)
	}
	return nil
}

// Validate reports the problems of the http section.
func (h HTTP) Validate() error {
	return errors.Join(checkListen("http.endpoint", h.Endpoint), checkFilePath("http.web_config_file", h.WebConfigFile))
}

// Validate reports the problems of the exporters section.
func (e Exporters) Validate() error {
	return errors.Join(e.Prometheus.Validate(), e.OTLP.Validate())
}

// Validate reports the problems of the exporters.prometheus section.
func (p Prometheus) Validate() error {
	const path = "exporters.prometheus.path"
	switch {
	case !strings.HasPrefix(p.Path, "/"):
		return mustf(path, "", "must start with \"/\", got %q", p.Path)
	case strings.IndexFunc(p.Path, notPathChar) >= 0:
		return mustf(path, "", "must be a plain URL path (letters, digits and - . _ ~ /), got %q", p.Path)
	case p.Path != "/" && (strings.HasSuffix(p.Path, "/") || strings.Contains(p.Path, "//") ||
		strings.Contains(p.Path+"/", "/./") || strings.Contains(p.Path+"/", "/../")):
		return mustf(path, "", "must be a clean path (no trailing /, //, . or ..), got %q", p.Path)
	case p.Path == "/healthz" || p.Path == "/readyz":
		return mustf(path, "", "must not be /healthz or /readyz (the collector serves those), got %q", p.Path)
	}
	return nil
}

// notPathChar reports whether r may not appear in exporters.prometheus.path,
// which becomes a net/http ServeMux pattern: wildcards, spaces and escapes
// would change its meaning or make registration panic.
func notPathChar(r rune) bool {
	return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-._~/", r))
}

// Validate reports the problems of the exporters.otlp section. It checks
// the section whether or not it is enabled.
func (o OTLP) Validate() error {
	var errs []error
	switch o.Protocol {
	case ProtocolGRPC:
		if err := checkDial("exporters.otlp.endpoint", o.Endpoint); err != nil {
			errs = append(errs, err)
		}
	case ProtocolHTTPProtobuf:
		if !validOTLPURL(o.Endpoint) {
			errs = append(errs, mustf("exporters.otlp.endpoint", "exporters.otlp.protocol",
				"must be an http:// or https:// URL with a path, such as %s, for protocol %s, got %q",
				defaultOTLPHTTPEndpoint, ProtocolHTTPProtobuf, o.Endpoint))
		}
	default:
		errs = append(errs, mustf("exporters.otlp.protocol", "", "must be %q or %q, got %q", ProtocolGRPC, ProtocolHTTPProtobuf, o.Protocol))
	}
	errs = append(errs, o.validateHeaders()...)
	if o.Interval <= 0 {
		errs = append(errs, mustf("exporters.otlp.interval", "", "must be > 0, got %s", o.Interval))
	}
	switch {
	case o.Timeout <= 0:
		errs = append(errs, mustf("exporters.otlp.timeout", "", "must be > 0, got %s", o.Timeout))
	case o.Interval > 0 && o.Timeout > o.Interval:
		errs = append(errs, mustf("exporters.otlp.timeout", "exporters.otlp.interval",
			"must be <= exporters.otlp.interval (%s), got %s", o.Interval, o.Timeout))
	}
	return errors.Join(errs...)
}

func validOTLPURL(s string) bool {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.Path == "" {
		return false
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		return err == nil && n >= 1 && n <= 65535
	}
	return true
}

// validateHeaders checks exporters.otlp.headers, in key order so that the
// messages are stable.
func (o OTLP) validateHeaders() []error {
	const path = "exporters.otlp.headers"
	var errs []error
	fail := func(key, format string, args ...any) {
		errs = append(errs, &problem{path: path + "." + key, msg: path + ": " + fmt.Sprintf(format, args...)})
	}
	keys := make([]string, 0, len(o.Headers))
	for k := range o.Headers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	seen := make(map[string]string, len(keys))
	for _, k := range keys {
		v := o.Headers[k]
		switch {
		case !validHeaderName(k):
			fail(k, "%q is not a valid HTTP header name", k)
		case o.Protocol == ProtocolGRPC && strings.IndexFunc(k, notMetadataChar) >= 0:
			fail(k, "%q is not a valid gRPC metadata key (letters, digits and - _ . only)", k)
		case o.Protocol == ProtocolGRPC && strings.HasPrefix(strings.ToLower(k), "grpc-"):
			fail(k, "%q is reserved by gRPC", k)
		case seen[strings.ToLower(k)] != "":
			fail(k, "%q and %q are the same header", seen[strings.ToLower(k)], k)
		case v == "":
			fail(k, "%q has an empty value", k)
		case strings.IndexFunc(v, notFieldChar) >= 0:
			fail(k, "%q has a value with control characters", k)
		case o.Protocol == ProtocolGRPC && !strings.HasSuffix(strings.ToLower(k), "-bin") &&
			strings.IndexFunc(v, func(r rune) bool { return r < 0x20 || r > 0x7e }) >= 0:
			fail(k, "%q has a value gRPC metadata cannot carry (printable ASCII only)", k)
		}
		if seen[strings.ToLower(k)] == "" {
			seen[strings.ToLower(k)] = k
		}
	}
	return errs
}

// validHeaderName reports whether k is an RFC 9110 token.
func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", r)) {
			return false
		}
	}
	return true
}

// notMetadataChar reports whether r may not appear in a gRPC metadata key
// (grpc-go lowercases upper case letters).
func notMetadataChar(r rune) bool {
	return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
}

// notFieldChar reports whether r may not appear in an HTTP field value.
func notFieldChar(r rune) bool {
	return r < 0x20 && r != '\t' || r == 0x7f
}

// Validate reports the problems of the conversations section.
func (c Conversations) Validate() error {
	var errs []error
	if c.IdleExpiry <= 0 {
		errs = append(errs, mustf("conversations.idle_expiry", "", "must be > 0, got %s", c.IdleExpiry))
	}
	if c.ClosedRetention < 0 {
		errs = append(errs, mustf("conversations.closed_retention", "", "must be >= 0, got %s", c.ClosedRetention))
	}
	if c.MaxTracked < 1 {
		errs = append(errs, mustf("conversations.max_tracked", "", "must be >= 1, got %d", c.MaxTracked))
	}
	if b := c.DefaultMaxBudgetUSD; b != nil && (math.IsNaN(*b) || math.IsInf(*b, 0) || *b <= 0) {
		errs = append(errs, mustf("conversations.default_max_budget_usd", "",
			"must be a finite number > 0 (omit it for no budget), got %v", *b))
	}
	return errors.Join(errs...)
}

// Validate reports the problems of the pricing section.
func (p Pricing) Validate() error {
	errs := []error{checkFilePath("pricing.table", p.Table), checkFilePath("pricing.overrides", p.Overrides)}
	switch p.Format {
	case "", "litellm", "agentmeter":
	default:
		errs = append(errs, mustf("pricing.format", "", "must be litellm or agentmeter (or empty: told from the file), got %q", p.Format))
	}
	if p.Format != "" && p.Table == "" {
		errs = append(errs, mustf("pricing.format", "pricing.table", "is set but pricing.table is not: the built-in table is LiteLLM's"))
	}
	return errors.Join(errs...)
}

// checkFilePath checks the value of a key naming a file ("" = none). What
// the file holds is checked where it is loaded (collector validate too).
func checkFilePath(path, file string) error {
	if strings.ContainsRune(file, 0) {
		return mustf(path, "", "must be a file path, got %q", file)
	}
	return nil
}

// Validate reports the problems of the storage section.
func (s Storage) Validate() error {
	var errs []error
	if strings.ContainsRune(s.Directory, 0) {
		errs = append(errs, mustf("storage.directory", "", "must be a directory path, got %q", s.Directory))
	}
	if s.Retention < 0 {
		errs = append(errs, mustf("storage.retention", "", "must be >= 0 (0 keeps conversations forever), got %s", s.Retention))
	}
	if s.MinFreeMiB < 0 {
		errs = append(errs, mustf("storage.min_free_mib", "", "must be >= 0 (0 = no check), got %d", s.MinFreeMiB))
	}
	if s.SnapshotInterval <= 0 {
		errs = append(errs, mustf("storage.snapshot_interval", "", "must be > 0, got %s", s.SnapshotInterval))
	}
	return errors.Join(errs...)
}

// Validate reports the problems of the shutdown section.
func (s Shutdown) Validate() error {
	if s.GracePeriod <= 0 {
		return mustf("shutdown.grace_period", "", "must be > 0, got %s", s.GracePeriod)
	}
	return nil
}

// Validate reports the problems of the log section.
func (l Log) Validate() error {
	var errs []error
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, mustf("log.level", "", "must be one of debug, info, warn, error; got %q", l.Level))
	}
	switch l.Format {
	case "json", "text":
	default:
		errs = append(errs, mustf("log.format", "", "must be json or text, got %q", l.Format))
	}
	return errors.Join(errs...)
}

// Validate reports the problems of the memory section.
func (m Memory) Validate() error {
	if m.LimitMiB < minMemoryLimitMiB || m.LimitMiB > maxMemoryLimitMiB {
		return mustf("memory.limit_mib", "", "must be between %d and %d, got %d", minMemoryLimitMiB, maxMemoryLimitMiB, m.LimitMiB)
	}
	return nil
}

// checkListen checks a host:port to listen on: any host, port 0..65535.
func checkListen(path, endpoint string) error {
	if _, port, err := net.SplitHostPort(endpoint); err != nil || !validPort(port, 0) {
		return mustf(path, "", "must be host:port with a numeric port 0-65535, got %q", endpoint)
	}
	return nil
}

// checkDial checks a host:port to connect to: a host, port 1..65535.
func checkDial(path, endpoint string) error {
	if host, port, err := net.SplitHostPort(endpoint); err != nil || host == "" || !validPort(port, 1) {
		return mustf(path, "", "must be host:port with a host and a numeric port 1-65535 for protocol grpc, got %q", endpoint)
	}
	return nil
}

func validPort(port string, lowest int) bool {
	if port == "" || len(port) > 5 || strings.IndexFunc(port, func(r rune) bool { return r < '0' || r > '9' }) >= 0 {
		return false
	}
	n, _ := strconv.Atoi(port)
	return n >= lowest && n <= 65535
}

// problem is one thing wrong with a configuration. Validate returns them
// without a line; Parse adds the line of the value in the file.
type problem struct {
	line int    // 1-based line in the file; 0 when unknown
	path string // dotted YAML path of the value at fault
	also string // another path the check depends on, or ""
	msg  string // the whole message, starting with path
}

// ProblemLine returns the line of the value at fault; see yamldecode.LineOf.
func (p *problem) ProblemLine() int { return p.line }

func (p *problem) Error() string {
	if p.line > 0 {
		return "line " + strconv.Itoa(p.line) + ": " + p.msg
	}
	return p.msg
}

// mustf returns the problem "<path> <format...>", such as
// "log.level must be ...". also names another path the check depends on.
func mustf(path, also, format string, args ...any) error {
	return &problem{path: path, also: also, msg: path + " " + fmt.Sprintf(format, args...)}
}
