package receiver

import (
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// decodeIssue is why one event of a request could not be decoded.
type decodeIssue struct{ field, reason string }

// lenientCodec is gRPC's proto codec, except that a RecordRequest whose
// events are well-formed protobuf but carry a string that is not UTF-8
// (which protobuf refuses to decode) is still decoded: the other events are
// kept, and the bad ones are answered as rejections naming the field,
// instead of the whole batch failing with Internal.
type lenientCodec struct {
	encoding.CodecV2
	mu      sync.Mutex
	issues  map[*pb.RecordRequest]map[int]decodeIssue
	pending atomic.Int32
}

func newLenientCodec() *lenientCodec {
	return &lenientCodec{
		CodecV2: encoding.GetCodecV2(grpcproto.Name),
		issues:  make(map[*pb.RecordRequest]map[int]decodeIssue),
	}
}

// Unmarshal implements encoding.CodecV2.
func (c *lenientCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	req, ok := v.(*pb.RecordRequest)
	if err == nil || !ok {
		return err
	}
	issues, ok := decodeLeniently(data.Materialize(), req)
	if !ok {
		return err
	}
	c.mu.Lock()
	c.issues[req] = issues
	c.mu.Unlock()
	c.pending.Add(1)
	return nil
}

// take returns and forgets the decode issues of req (nil when none).
func (c *lenientCodec) take(req *pb.RecordRequest) map[int]decodeIssue {
	if c.pending.Load() == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	issues, ok := c.issues[req]
	if ok {
		delete(c.issues, req)
		c.pending.Add(-1)
	}
	return issues
}

// decodeLeniently decodes a RecordRequest event by event. It reports false
// when the message is malformed beyond bad UTF-8 in some event.
func decodeLeniently(b []byte, req *pb.RecordRequest) (map[int]decodeIssue, bool) {
	proto.Reset(req)
	issues := make(map[int]decodeIssue)
	eventMD := (&pb.Event{}).ProtoReflect().Descriptor()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
		if num != 1 || typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, false
			}
			b = b[n:]
			continue
		}
		raw, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
		ev := &pb.Event{}
		if err := proto.Unmarshal(raw, ev); err != nil {
			field, ok := firstBadUTF8(eventMD, raw, "")
			if !ok {
				return nil, false
			}
			ev = placeholder(raw)
			issues[len(req.Events)] = decodeIssue{field: field, reason: "is not valid UTF-8"}
		}
		req.Events = append(req.Events, ev)
	}
	return issues, len(issues) > 0
}

// firstBadUTF8 returns the dotted path of the first string field in b that
// is not valid UTF-8.
func firstBadUTF8(md protoreflect.MessageDescriptor, b []byte, prefix string) (string, bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", false
		}
		b = b[n:]
		fd := md.Fields().ByNumber(num)
		if typ != protowire.BytesType || fd == nil {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return "", false
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return "", false
		}
		b = b[n:]
		switch fd.Kind() {
		case protoreflect.StringKind:
			if !utf8.Valid(v) {
				return prefix + string(fd.Name()), true
			}
		case protoreflect.MessageKind:
			if path, ok := firstBadUTF8(fd.Message(), v, prefix+string(fd.Name())+"."); ok {
				return path, true
			}
		}
	}
	return "", false
}

// placeholder stands for an event that could not be decoded: its event_id
// (made printable) and an empty payload of its type, so that it is counted
// under the right event_type. The payload fields come from the descriptor,
// so a payload added to the proto needs no change here.
func placeholder(b []byte) *pb.Event {
	ev := &pb.Event{}
	m := ev.ProtoReflect()
	fields := m.Descriptor().Fields()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ev
		}
		b = b[n:]
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return ev
		}
		fd := fields.ByNumber(num)
		switch {
		case fd == nil || typ != protowire.BytesType:
		case fd.Name() == "event_id":
			v, _ := protowire.ConsumeBytes(b)
			ev.EventId = printable(string(v))
		case fd.ContainingOneof() != nil && fd.Message() != nil:
			m.Set(fd, m.NewField(fd))
		}
		b = b[n:]
	}
	return ev
}
