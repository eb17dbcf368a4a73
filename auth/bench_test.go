package auth

import (
	"context"
	"crypto/sha256"
	"testing"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/tap"
)

// BenchmarkTap is the cost the token check adds to every RPC (one per
// batch): go test -run '^$' -bench Tap -benchmem ./auth/
func BenchmarkTap(b *testing.B) {
	a := &Auth{}
	sum := sha256.Sum256([]byte("s3cret-t0ken-of-some-length-0123456789"))
	a.token.Store(&sum)
	for _, bc := range []struct{ name, value string }{
		{"valid", "Bearer s3cret-t0ken-of-some-length-0123456789"},
		{"wrong", "Bearer s3cret-t0ken-of-some-length-0123456788"},
	} {
		info := &tap.Info{FullMethodName: "/agentmeter.v1.IngestService/RecordStream", Header: metadata.Pairs("authorization", bc.value)}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = a.Tap(context.Background(), info)
			}
		})
	}
}
