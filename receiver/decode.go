package receiver

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/agentmeter/agentmeter/grpcserver"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// request is one RecordRequest as it came off the wire, with what decoding
// found: why the request is refused as a whole, or which of its events
// could not be decoded. The server's codec decodes into it
// (grpcserver.Decoder), so these travel with the request and end with it:
// nothing is kept beside it.
type request struct {
	r   *Receiver
	msg pb.RecordRequest
	// issues are the events that are well-formed protobuf but carry a
	// string that is not UTF-8 (which protobuf refuses to decode): they
	// are answered as rejections naming the field, instead of the whole
	// batch failing.
	issues map[int]decodeIssue
	// refused is the status the whole request is answered with, when set.
	refused error
	// charged is what the request holds of the in-flight budget.
	charged int64
	// recvErr is why a stream's next request could not be received.
	recvErr error
	// raw is the request's encoding, while it is applied.
	raw mem.Buffer
}

// decodeIssue is why one event of a request could not be decoded.
type decodeIssue struct{ field, reason string }

// The in-flight estimate of a request: twice its wire bytes (decoded
// strings are copied and rounded up to the allocator's size classes) plus
// eventOverhead per event (the Event, its payload and their pointers).
// TestInflightEstimate checks that it is not below what decoding allocates.
const eventOverhead = 384

func inflightCost(wireBytes, events int) int64 {
	return 2*int64(wireBytes) + int64(events)*eventOverhead
}

// DecodeGRPC implements grpcserver.Decoder. It counts the events on the wire
// first, so that a request over max_events_per_request is refused before
// any event is allocated, then charges the in-flight budget, then decodes.
func (q *request) DecodeGRPC(data mem.BufferSlice) error {
	n, ok := countEvents(data)
	if !ok {
		q.refused = errMalformed
		return nil
	}
	if n > q.r.cfg.MaxEventsPerRequest {
		q.refused = errTooManyEvents(n, q.r.cfg.MaxEventsPerRequest)
		return nil
	}
	cost := inflightCost(data.Len(), n)
	if q.r.cfg.KeepEncoded {
		cost += int64(data.Len())
	}
	if !q.r.charge(cost) {
		q.refused = grpcserver.Exhausted(fmt.Sprintf(
			"agentmeter has receiver.grpc.max_inflight_mib (%d MiB) of requests in flight", q.r.cfg.MaxInflightBytes>>20))
		return nil
	}
	q.charged = cost
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	b := buf.ReadOnlyData()
	if err := proto.Unmarshal(b, &q.msg); err != nil {
		defer buf.Free()
		issues, ok := decodeLeniently(b, &q.msg)
		if !ok {
			q.refused = status.Errorf(codes.InvalidArgument, "request is not a valid agentmeter.v1.RecordRequest: %v", err)
			return nil
		}
		q.issues = issues
		return nil
	}
	if !q.r.cfg.KeepEncoded {
		buf.Free()
		return nil
	}
	// Kept until release: durable mode stores these bytes as they are.
	q.raw = buf
	return nil
}

// encoded is the request's wire encoding, when it decoded whole; valid
// until release.
func (q *request) encoded() []byte {
	if q.raw == nil {
		return nil
	}
	return q.raw.ReadOnlyData()
}

// release gives back what the request holds of the in-flight budget. Safe
// to call more than once.
func (q *request) release() {
	if q.raw != nil {
		q.raw.Free()
		q.raw = nil
	}
	if q.charged > 0 {
		q.r.inflight.Add(-q.charged)
		q.charged = 0
	}
}

// charge takes n bytes of the in-flight budget, unless that would go over
// it while other requests are in flight.
func (r *Receiver) charge(n int64) bool {
	for {
		cur := r.inflight.Load()
		if cur > 0 && cur+n > r.cfg.MaxInflightBytes {
			return false
		}
		if r.inflight.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

var errMalformed = status.Error(codes.InvalidArgument, "request is not a valid agentmeter.v1.RecordRequest: malformed protobuf")

func errTooManyEvents(n, limit int) error {
	return status.Errorf(codes.InvalidArgument,
		"request has %d events, more than receiver.max_events_per_request (%d): split it into smaller batches", n, limit)
}

// countEvents counts the events fields (1, length-delimited) of an encoded
// RecordRequest by reading its tags and lengths where they lie in the
// transport's buffers: nothing is copied or decoded. False when the top
// level is not well-formed protobuf.
func countEvents(data mem.BufferSlice) (int, bool) {
	var r mem.Reader
	r.Reset(data)
	defer r.Close()
	n := 0
	for r.Remaining() > 0 {
		num, typ, ok := readTag(&r)
		if !ok || typ == protowire.EndGroupType || !skipField(&r, num, typ) {
			return 0, false
		}
		if num == 1 && typ == protowire.BytesType {
			n++
		}
	}
	return n, true
}

func readTag(r *mem.Reader) (protowire.Number, protowire.Type, bool) {
	tag, err := binary.ReadUvarint(r)
	if err != nil || tag>>3 > uint64(protowire.MaxValidNumber) {
		return 0, 0, false
	}
	num, typ := protowire.DecodeTag(tag)
	return num, typ, num >= protowire.MinValidNumber
}

// skipField reads past the value of a field whose tag was just read.
func skipField(r *mem.Reader, num protowire.Number, typ protowire.Type) bool {
	discard := func(n uint64) bool {
		if n > uint64(r.Remaining()) {
			return false
		}
		_, err := r.Discard(int(n))
		return err == nil
	}
	switch typ {
	case protowire.VarintType:
		_, err := binary.ReadUvarint(r)
		return err == nil
	case protowire.Fixed32Type:
		return discard(4)
	case protowire.Fixed64Type:
		return discard(8)
	case protowire.BytesType:
		l, err := binary.ReadUvarint(r)
		return err == nil && discard(l)
	case protowire.StartGroupType:
		for {
			n, t, ok := readTag(r)
			if !ok {
				return false
			}
			if t == protowire.EndGroupType {
				return n == num
			}
			if !skipField(r, n, t) {
				return false
			}
		}
	}
	return false
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
