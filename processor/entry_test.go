package processor

import (
	"encoding/binary"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// TestLogEntryFormats: an entry reads back as written, and so does one of
// the uncompressed format written before.
func TestLogEntryFormats(t *testing.T) {
	req := &pb.RecordRequest{Events: workload("entry", 30)}
	const at = int64(1_795_000_000_000_000_000)
	var bufs entryBufs
	raw, _ := proto.Marshal(req)
	entry := encodeEntry(&bufs, at, raw)
	old := append(binary.BigEndian.AppendUint64(nil, uint64(at)), raw...)
	if len(entry) >= len(old) {
		t.Errorf("entry %d bytes, uncompressed %d: not compressed", len(entry), len(old))
	}
	for name, e := range map[string][]byte{"s2": entry, "uncompressed": old} {
		gotAt, got, err := decodeEntry(e)
		if err != nil || gotAt != at || !proto.Equal(got, req) {
			t.Errorf("%s: decodeEntry = %d, %d events, %v; want %d, %d events", name, gotAt, len(got.GetEvents()), err, at, len(req.Events))
		}
	}
	for name, e := range map[string][]byte{
		"empty":          nil,
		"short":          {0x18, 1, 2},
		"s2 garbage":     {entryS2, 0xff, 0xff, 0xff, 0xff, 0x0f, 1},
		"s2 truncated":   entry[:len(entry)/2],
		"proto garbage":  append(binary.BigEndian.AppendUint64(nil, 1), 0xff, 0xff),
		"s2 only a byte": {entryS2},
	} {
		if _, _, err := decodeEntry(e); err == nil {
			t.Errorf("%s: decodeEntry accepted a damaged entry", name)
		}
	}
}

// FuzzLogEntry: decoding any bytes returns an entry or an error, never
// panics; what decodes re-encodes to the same request.
func FuzzLogEntry(f *testing.F) {
	var bufs entryBufs
	raw, _ := proto.Marshal(&pb.RecordRequest{Events: workload("fuzz", 3)})
	f.Add(append([]byte(nil), encodeEntry(&bufs, 42, raw)...))
	f.Add([]byte{entryS2})
	f.Fuzz(func(t *testing.T, data []byte) {
		at, req, err := decodeEntry(data)
		if err != nil {
			return
		}
		var b entryBufs
		enc, err := proto.Marshal(req)
		if err != nil {
			t.Fatalf("a decoded entry does not encode: %v", err)
		}
		at2, req2, err := decodeEntry(encodeEntry(&b, at, enc))
		if err != nil || at2 != at || !proto.Equal(req, req2) {
			t.Fatalf("round trip changed the entry: %v", err)
		}
	})
}
