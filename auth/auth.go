// Package auth decides who may write to agentmeter's gRPC server: a bearer
// token checked in gRPC's tap handle, before a request's body is read; TLS
// and mutual TLS with certificates reloaded when their files change; and the
// Unix-domain-socket listener (mode 0660) for pod-local ingest. The server
// (grpcserver) takes its Tap, its ServerOptions and its Listen; nothing here
// owns a server.
//
// When a token is set it is required on every agentmeter service, ingest and
// usage alike (a usage reply tells a conversation's spend and budget). The
// gRPC health service and server reflection stay open: the kubelet's gRPC
// probe and load balancers cannot send a token, and reflection describes
// only the public protobuf schema.
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"

	"github.com/agentmeter/agentmeter/catalog"
	"github.com/agentmeter/agentmeter/internal/filewatch"
)

// Config configures ingest auth. The zero Config is no auth: plaintext, no
// token (agentmeter's default, on localhost).
type Config struct {
	// TokenFile holds the bearer token clients must send; "" = none.
	// Surrounding white space (a trailing newline) is not part of it.
	TokenFile string
	// CertFile and KeyFile are the server's PEM certificate (chain) and
	// key; "" = plaintext. Both or neither.
	CertFile, KeyFile string
	// ClientCAFile holds the PEM CAs that sign client certificates; set,
	// every client must present one they signed (mTLS). Needs CertFile.
	ClientCAFile string
}

// Deps are the collaborators of Auth.
type Deps struct {
	Logger *slog.Logger
	// Meter receives agentmeter.receiver.auth_refused; none when nil.
	Meter metric.Meter
}

// Reasons of a refusal, the values of the reason attribute.
const (
	ReasonMissingToken        = "missing_token"
	ReasonMalformedToken      = "malformed_token"
	ReasonWrongToken          = "wrong_token"
	ReasonClientCertMissing   = "client_cert_missing"
	ReasonClientCertUntrusted = "client_cert_untrusted"
	ReasonClientCertExpired   = "client_cert_expired"
	ReasonNotTLS              = "not_tls"
	ReasonTLSHandshake        = "tls_handshake"
)

var reasons = [...]string{
	ReasonMissingToken, ReasonMalformedToken, ReasonWrongToken,
	ReasonClientCertMissing, ReasonClientCertUntrusted, ReasonClientCertExpired,
	ReasonNotTLS, ReasonTLSHandshake,
}

type reason int

const (
	missingToken reason = iota
	malformedToken
	wrongToken
	clientCertMissing
	clientCertUntrusted
	clientCertExpired
	notTLS
	tlsHandshake
	numReasons
)

// Auth holds the current token and certificates and counts refusals.
type Auth struct {
	cfg Config
	log *slog.Logger

	// token is the SHA-256 of the current token; nil = no token required.
	token atomic.Pointer[[sha256.Size]byte]
	// tls is the current server TLS config; nil = plaintext.
	tls atomic.Pointer[tls.Config]

	reloadMu sync.Mutex // serialises reloads; guards the sums
	tokenSum [sha256.Size]byte
	tlsSum   [sha256.Size]byte

	refused [numReasons]atomic.Int64
	// reloads[file][failed] counts reloads after a file changed.
	reloads [2][2]atomic.Int64

	watcher *filewatch.Watcher // nil when no file is configured
}

// New loads the token and certificates cfg names; an error when one does
// not load. Nothing is watched until Start.
func New(cfg Config, deps Deps) (*Auth, error) {
	a := &Auth{cfg: cfg, log: deps.Logger}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if cfg.CertFile == "" && (cfg.KeyFile != "" || cfg.ClientCAFile != "") {
		return nil, errors.New("receiver.grpc.tls: key_file and client_ca_file need cert_file")
	}
	var files []string
	if cfg.TokenFile != "" {
		files = append(files, cfg.TokenFile)
		if err := a.reloadToken(true); err != nil {
			return nil, err
		}
	}
	if cfg.CertFile != "" {
		files = append(files, cfg.CertFile, cfg.KeyFile)
		if cfg.ClientCAFile != "" {
			files = append(files, cfg.ClientCAFile)
		}
		if err := a.reloadTLS(true); err != nil {
			return nil, err
		}
	}
	if len(files) > 0 {
		w, err := filewatch.New(files, 0, a.reload, a.log)
		if err != nil {
			return nil, err
		}
		a.watcher = w
	}
	if deps.Meter != nil {
		if err := a.register(deps.Meter); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// Start watches the token and certificate files; a change is loaded within
// a second, and a file that does not load keeps what was in service.
func (a *Auth) Start(ctx context.Context) error {
	if a.watcher == nil {
		return nil
	}
	return a.watcher.Start(ctx)
}

// Shutdown stops watching. Safe without Start, idempotent.
func (a *Auth) Shutdown(ctx context.Context) error {
	if a.watcher == nil {
		return nil
	}
	return a.watcher.Shutdown(ctx)
}

// reload loads whatever changed; called by the watcher.
func (a *Auth) reload() {
	if a.cfg.TokenFile != "" {
		_ = a.reloadToken(false) // logged by reloadToken
	}
	if a.cfg.CertFile != "" {
		_ = a.reloadTLS(false)
	}
}

// ServerOptions are the gRPC server options of auth: the transport
// credentials when TLS is on.
func (a *Auth) ServerOptions() []grpc.ServerOption {
	if a.tls.Load() == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.Creds(a.credentials())}
}

// TLS reports whether the server serves TLS.
func (a *Auth) TLS() bool { return a.tls.Load() != nil }

// TokenRequired reports whether agentmeter's services need a token.
func (a *Auth) TokenRequired() bool { return a.token.Load() != nil }

func (a *Auth) refuse(r reason) { a.refused[r].Add(1) }

// Files of the reload counter.
const (
	fileToken = iota
	fileTLS
)

var fileNames = [2]string{"token", "tls"}

// reloaded counts a reload of file after a change.
func (a *Auth) reloaded(file int, err error) {
	failed := 0
	if err != nil {
		failed = 1
	}
	a.reloads[file][failed].Add(1)
}

// Reloads returns how many reloads of file ("token" or "tls") succeeded and
// failed after the file changed.
func (a *Auth) Reloads(file string) (ok, failed int64) {
	for i, name := range fileNames {
		if name == file {
			return a.reloads[i][0].Load(), a.reloads[i][1].Load()
		}
	}
	return 0, 0
}

// Refused is the number of refusals for reason (one of the Reason
// constants) so far.
func (a *Auth) Refused(r string) int64 {
	for i, name := range reasons {
		if name == r {
			return a.refused[i].Load()
		}
	}
	return 0
}

func (a *Auth) register(m metric.Meter) error {
	ctr, err := catalog.ReceiverAuthRefused.Int64ObservableCounter(m)
	if err != nil {
		return err
	}
	reloads, err := catalog.ReceiverAuthReloads.Int64ObservableCounter(m)
	if err != nil {
		return err
	}
	var sets [numReasons]metric.ObserveOption
	for i, name := range reasons {
		sets[i] = metric.WithAttributeSet(attribute.NewSet(catalog.AttrAuthReason.String(name)))
	}
	// Only the files in use have reload series.
	var files []int
	if a.cfg.TokenFile != "" {
		files = append(files, fileToken)
	}
	if a.cfg.CertFile != "" {
		files = append(files, fileTLS)
	}
	var reloadSets [2][2]metric.ObserveOption
	for f, name := range fileNames {
		for failed, outcome := range []string{catalog.OutcomeSuccess, catalog.OutcomeFailure} {
			reloadSets[f][failed] = metric.WithAttributeSet(attribute.NewSet(
				catalog.AttrAuthFile.String(name), catalog.AttrOutcome.String(outcome)))
		}
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for i := range numReasons {
			if n := a.refused[i].Load(); n > 0 {
				o.ObserveInt64(ctr, n, sets[i])
			}
		}
		for _, f := range files {
			for failed := range 2 {
				o.ObserveInt64(reloads, a.reloads[f][failed].Load(), reloadSets[f][failed])
			}
		}
		return nil
	}, ctr, reloads)
	if err != nil {
		return fmt.Errorf("register %s callback: %w", catalog.ReceiverAuthRefused.Name, err)
	}
	return nil
}
