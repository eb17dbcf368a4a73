package auth

import (
	"context"
	"crypto/sha256"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// FuzzTap: whatever authorization value a client sends, the tap handle
// answers nil or Unauthenticated, counts each refusal once, and lets
// through exactly "Bearer <token>" (any case of the scheme).
func FuzzTap(f *testing.F) {
	const token = "s3cret-t0ken"
	for _, v := range []string{"Bearer s3cret-t0ken", "bearer s3cret-t0ken", "Bearer  s3cret-t0ken", "Basic x", "Bearer", "", "Bearer s3cret-t0ke", "Bearer s3cret-t0ken "} {
		f.Add(v, "/agentmeter.v1.IngestService/Record")
	}
	f.Add("", "/grpc.health.v1.Health/Check")
	f.Fuzz(func(t *testing.T, value, method string) {
		a := &Auth{}
		sum := sha256.Sum256([]byte(token))
		a.token.Store(&sum)
		_, err := a.Tap(context.Background(), &tap.Info{FullMethodName: method, Header: metadata.Pairs("authorization", value)})
		var refused int64
		for i := range numReasons {
			refused += a.refused[i].Load()
		}
		open := false
		for _, o := range openServices {
			open = open || strings.HasPrefix(method, o)
		}
		scheme, rest, _ := strings.Cut(value, " ")
		valid := strings.EqualFold(scheme, "Bearer") && strings.TrimLeft(rest, " ") == token
		switch {
		case open || valid:
			if err != nil || refused != 0 {
				t.Fatalf("Tap(%q, %q) = %v, refused %d; want it let through", value, method, err, refused)
			}
		default:
			if status.Code(err) != codes.Unauthenticated || refused != 1 {
				t.Fatalf("Tap(%q, %q) = %v, refused %d; want Unauthenticated counted once", value, method, err, refused)
			}
		}
	})
}

// FuzzParseToken: a token file's content gives a token that gRPC metadata
// can carry, or an error.
func FuzzParseToken(f *testing.F) {
	for _, s := range []string{"tok\n", "", " \n", "a b", "a\x00b", "\ttok\t", "ü"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tok, err := parseToken(data)
		if err != nil {
			return
		}
		if tok == "" || strings.IndexFunc(tok, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0 {
			t.Fatalf("parseToken(%q) = %q, not a valid metadata value", data, tok)
		}
	})
}
