package grpcserver

import (
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// Decoder is a request type that decodes itself from the wire bytes, so that
// it can look at them before decoding (count what it holds, charge a
// budget) and keep what decoding found with the request. What it does not
// accept it records for its handler to answer: an error returned here
// reaches the client as Internal, whatever its status.
type Decoder interface {
	DecodeGRPC(data mem.BufferSlice) error
}

// codec is gRPC's proto codec, except that a Decoder decodes itself.
type codec struct{ proto encoding.CodecV2 }

// Name implements encoding.CodecV2.
func (codec) Name() string { return grpcproto.Name }

// Marshal implements encoding.CodecV2.
func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	return c.proto.Marshal(v)
}

// Unmarshal implements encoding.CodecV2.
func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	if d, ok := v.(Decoder); ok {
		return d.DecodeGRPC(data)
	}
	return c.proto.Unmarshal(data, v)
}
