package auth

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/credentials"
)

// reloadTLS reads the certificate pair and the client CAs and puts them in
// service for new connections. Unless force, content already seen (loaded
// or not) is skipped. On error the previous ones stay in service.
func (a *Auth) reloadTLS(force bool) error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	cfg, sum, err := loadTLS(a.cfg)
	if err == nil && !force && sum == a.tlsSum {
		return nil
	}
	if err != nil {
		if !force {
			a.reloaded(fileTLS, err)
			a.log.Warn("tls certificate reload failed, keeping the previous certificate", "cert_file", a.cfg.CertFile, "err", err)
		}
		return err
	}
	a.tlsSum = sum
	a.tls.Store(cfg)
	leaf := cfg.Certificates[0].Leaf
	if !force {
		a.reloaded(fileTLS, nil)
		a.log.Info("tls certificate reloaded", "cert_file", a.cfg.CertFile,
			"subject", leaf.Subject.String(), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if time.Now().After(leaf.NotAfter) {
		a.log.Warn("the tls certificate has expired: clients will refuse it", "cert_file", a.cfg.CertFile,
			"not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// loadTLS builds the server's TLS config from the files of cfg, and the
// hash of their content.
func loadTLS(cfg Config) (*tls.Config, [sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	certPEM, err := os.ReadFile(cfg.CertFile)
	if err != nil {
		return nil, sum, fmt.Errorf("receiver.grpc.tls.cert_file: %w", err)
	}
	keyPEM, err := os.ReadFile(cfg.KeyFile)
	if err != nil {
		return nil, sum, fmt.Errorf("receiver.grpc.tls.key_file: %w", err)
	}
	h := sha256.New()
	h.Write(certPEM)
	h.Write(keyPEM)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, sum, fmt.Errorf("receiver.grpc.tls: load cert_file %q and key_file %q: %w", cfg.CertFile, cfg.KeyFile, err)
	}
	out := &tls.Config{
		Certificates: []tls.Certificate{pair},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2"}, // gRPC clients require ALPN h2
	}
	if cfg.ClientCAFile != "" {
		caPEM, err := os.ReadFile(cfg.ClientCAFile)
		if err != nil {
			return nil, sum, fmt.Errorf("receiver.grpc.tls.client_ca_file: %w", err)
		}
		h.Write(caPEM)
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, sum, fmt.Errorf("receiver.grpc.tls.client_ca_file %q: no PEM certificate in it", cfg.ClientCAFile)
		}
		out.ClientCAs = pool
		out.ClientAuth = tls.RequireAndVerifyClientCert
	}
	h.Sum(sum[:0])
	return out, sum, nil
}

// credentials are gRPC's TLS credentials over the config in service at each
// handshake (GetConfigForClient), counting failed handshakes by reason.
func (a *Auth) credentials() credentials.TransportCredentials {
	base := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return a.tls.Load(), nil
		},
	}
	return &countingCreds{TransportCredentials: credentials.NewTLS(base), a: a}
}

// countingCreds counts the handshakes that fail, by reason. What fails a
// handshake never reaches gRPC: no request of that connection is read.
type countingCreds struct {
	credentials.TransportCredentials
	a *Auth
}

func (c *countingCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil {
		r := handshakeReason(err)
		c.a.refuse(r)
		c.a.log.Debug("tls handshake refused", "remote", conn.RemoteAddr().String(), "reason", reasons[r], "err", err)
	}
	return out, info, err
}

func (c *countingCreds) Clone() credentials.TransportCredentials {
	return &countingCreds{TransportCredentials: c.TransportCredentials.Clone(), a: c.a}
}

// handshakeReason classifies a failed server handshake.
func handshakeReason(err error) reason {
	var invalid x509.CertificateInvalidError
	var unknown x509.UnknownAuthorityError
	var record tls.RecordHeaderError
	switch {
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return clientCertExpired
	case errors.As(err, &unknown), errors.As(err, &invalid):
		return clientCertUntrusted
	case errors.As(err, &record):
		return notTLS
	case strings.Contains(err.Error(), "didn't provide a certificate"):
		// crypto/tls has no error type for it.
		return clientCertMissing
	}
	return tlsHandshake
}
