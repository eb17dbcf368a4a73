package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// maxTokenFile bounds what is read of a token file.
const maxTokenFile = 4096

// openServices need no token: probes and tools that cannot send one.
var openServices = []string{
	"/grpc.health.v1.Health/",
	"/grpc.reflection.v1.ServerReflection/",
	"/grpc.reflection.v1alpha.ServerReflection/",
}

// Tap is a gRPC tap handle (grpc.InTapHandle): it refuses an RPC without the
// bearer token with Unauthenticated before gRPC reads its request, and
// counts why. Health and reflection pass; so does everything when no token
// is set.
func (a *Auth) Tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	want := a.token.Load()
	if want == nil {
		return ctx, nil
	}
	for _, open := range openServices {
		if strings.HasPrefix(info.FullMethodName, open) {
			return ctx, nil
		}
	}
	vals := info.Header.Get("authorization")
	if len(vals) == 0 {
		a.refuse(missingToken)
		return nil, status.Error(codes.Unauthenticated,
			"agentmeter requires a bearer token: send the metadata \"authorization: Bearer <token>\" (the token of receiver.auth.token_file)")
	}
	scheme, token, ok := strings.Cut(vals[0], " ")
	token = strings.TrimLeft(token, " ")
	if len(vals) > 1 || !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		a.refuse(malformedToken)
		return nil, status.Error(codes.Unauthenticated,
			"the authorization metadata must be one value \"Bearer <token>\"")
	}
	got := sha256.Sum256([]byte(token))
	// Hashes have one length, so the compare takes the same time whatever
	// the token sent.
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		a.refuse(wrongToken)
		return nil, status.Error(codes.Unauthenticated, "the bearer token is not valid")
	}
	return ctx, nil
}

// reloadToken reads the token file and puts its token in service. Unless
// force, content already seen (loaded or not) is skipped. On error the
// previous token stays in service.
func (a *Auth) reloadToken(force bool) error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	data, err := readToken(a.cfg.TokenFile)
	sum := sha256.Sum256(data)
	if err == nil && !force && sum == a.tokenSum {
		return nil
	}
	a.tokenSum = sum
	if err == nil {
		var token string
		if token, err = parseToken(data); err == nil {
			h := sha256.Sum256([]byte(token))
			a.token.Store(&h)
			if !force {
				a.reloaded(fileToken, nil)
				a.log.Info("bearer token reloaded", "path", a.cfg.TokenFile)
			}
			return nil
		}
	}
	err = fmt.Errorf("receiver.auth.token_file %q: %w", a.cfg.TokenFile, err)
	if !force {
		a.reloaded(fileToken, err)
		a.log.Warn("bearer token reload failed, keeping the previous token", "path", a.cfg.TokenFile, "err", err)
	}
	return err
}

func readToken(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxTokenFile {
		return nil, fmt.Errorf("larger than %d bytes", maxTokenFile)
	}
	return data, nil
}

// parseToken takes the token out of a token file's content: white space
// around it is dropped; what is left must be one line that gRPC metadata
// can carry.
func parseToken(data []byte) (string, error) {
	token := strings.TrimSpace(string(data))
	switch {
	case token == "":
		return "", errors.New("the file is empty: write the token in it")
	case strings.IndexFunc(token, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0:
		return "", errors.New("the token must be printable ASCII without spaces (what gRPC metadata can carry)")
	}
	return token, nil
}
