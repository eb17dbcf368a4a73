package processor

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/klauspost/compress/s2"
	"google.golang.org/protobuf/proto"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// entryPrices prices the LLM calls of events: every third one unpriced.
func entryPrices(events []*pb.Event) []callPrice {
	prices := make([]callPrice, len(events))
	for j, ev := range events {
		if ev.GetLlmCall() != nil && j%3 != 0 {
			prices[j] = callPrice{cost: float64(j) * 0.001, savings: float64(j) * 0.0001, ok: true}
		}
	}
	return prices
}

func samePrices(a, b []callPrice) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ok != b[i].ok || math.Float64bits(a[i].cost) != math.Float64bits(b[i].cost) ||
			math.Float64bits(a[i].savings) != math.Float64bits(b[i].savings) {
			return false
		}
	}
	return true
}

// TestLogEntryFormats: an entry reads back as written, prices included, and
// so do those of the two formats written before, without prices (their
// calls are priced at the replay).
func TestLogEntryFormats(t *testing.T) {
	req := &pb.RecordRequest{Events: workload("entry", 30)}
	prices := entryPrices(req.Events)
	const at = int64(1_795_000_000_000_000_000)
	var bufs entryBufs
	raw, _ := proto.Marshal(req)
	entry := append([]byte(nil), encodeEntry(&bufs, at, raw, prices)...)
	unpriced := append([]byte(nil), encodeEntry(&bufs, at, raw, nil)...)
	old := append(binary.BigEndian.AppendUint64(nil, uint64(at)), raw...)
	oldS2 := append([]byte{entryS2}, s2.Encode(nil, old)...)
	t.Logf("%d events: %d bytes on the wire, %d in the log entry (%.2f times smaller)",
		len(req.Events), len(raw), len(unpriced), float64(len(old))/float64(len(unpriced)))
	if len(unpriced) >= len(old) {
		t.Errorf("entry %d bytes, uncompressed %d: not compressed", len(unpriced), len(old))
	}
	for name, tc := range map[string]struct {
		entry  []byte
		prices []callPrice
	}{
		"priced":       {entry, prices},
		"none priced":  {unpriced, make([]callPrice, len(req.Events))},
		"s2":           {oldS2, nil},
		"uncompressed": {old, nil},
	} {
		gotAt, got, gotPrices, err := decodeEntry(tc.entry)
		if err != nil || gotAt != at || !proto.Equal(got, req) {
			t.Errorf("%s: decodeEntry = %d, %d events, %v; want %d, %d events", name, gotAt, len(got.GetEvents()), err, at, len(req.Events))
		}
		if !samePrices(gotPrices, tc.prices) || (gotPrices == nil) != (tc.prices == nil) {
			t.Errorf("%s: prices %v, want %v", name, gotPrices, tc.prices)
		}
	}
	// A price record for an event that is not an LLM call (event 0 is a
	// conversation created), out of order, out of range or cut short.
	badPrices := func(recs ...[]byte) []byte {
		raw := binary.BigEndian.AppendUint64(nil, uint64(at))
		raw = binary.AppendUvarint(raw, uint64(len(old)-8))
		raw = append(raw, old[8:]...)
		for _, r := range recs {
			raw = append(raw, r...)
		}
		return append([]byte{entryPriced}, s2.Encode(nil, raw)...)
	}
	rec := func(j uint64) []byte { return append(binary.AppendUvarint(nil, j), make([]byte, priceRecordBytes)...) }
	if _, _, p, err := decodeEntry(badPrices(rec(2), rec(3))); err != nil || !p[2].ok || !p[3].ok {
		t.Fatalf("well-formed records: %v, %v", p, err)
	}
	for name, e := range map[string][]byte{
		"empty":              nil,
		"short":              {0x18, 1, 2},
		"s2 garbage":         {entryS2, 0xff, 0xff, 0xff, 0xff, 0x0f, 1},
		"s2 truncated":       entry[:len(entry)/2],
		"proto garbage":      append(binary.BigEndian.AppendUint64(nil, 1), 0xff, 0xff),
		"s2 only a byte":     {entryS2},
		"priced only a byte": {entryPriced},
		"priced no length":   append([]byte{entryPriced}, s2.Encode(nil, binary.BigEndian.AppendUint64(nil, 1))...),
		"priced long length": append([]byte{entryPriced}, s2.Encode(nil, append(binary.BigEndian.AppendUint64(nil, 1), 5, 0))...),
		"price not a call":   badPrices(rec(0)),
		"price twice":        badPrices(rec(2), rec(2)),
		"price out of order": badPrices(rec(3), rec(2)),
		"price out of range": badPrices(rec(30)),
		"price cut short":    badPrices(rec(2)[:10]),
	} {
		if _, _, _, err := decodeEntry(e); err == nil {
			t.Errorf("%s: decodeEntry accepted a damaged entry", name)
		}
	}
}

// FuzzLogEntry: decoding any bytes returns an entry or an error, never
// panics; what decodes re-encodes to the same request and prices.
func FuzzLogEntry(f *testing.F) {
	var bufs entryBufs
	evs := workload("fuzz", 3)
	raw, _ := proto.Marshal(&pb.RecordRequest{Events: evs})
	f.Add(append([]byte(nil), encodeEntry(&bufs, 42, raw, entryPrices(evs))...))
	f.Add(append([]byte(nil), encodeEntry(&bufs, 42, raw, nil)...))
	f.Add(append([]byte{entryS2}, s2.Encode(nil, append(binary.BigEndian.AppendUint64(nil, 42), raw...))...))
	f.Add([]byte{entryS2})
	f.Add([]byte{entryPriced})
	f.Fuzz(func(t *testing.T, data []byte) {
		at, req, prices, err := decodeEntry(data)
		if err != nil {
			return
		}
		if prices != nil && len(prices) != len(req.GetEvents()) {
			t.Fatalf("%d prices for %d events", len(prices), len(req.GetEvents()))
		}
		var b entryBufs
		enc, err := proto.Marshal(req)
		if err != nil {
			t.Fatalf("a decoded entry does not encode: %v", err)
		}
		at2, req2, prices2, err := decodeEntry(encodeEntry(&b, at, enc, prices))
		if prices == nil {
			prices = make([]callPrice, len(req.GetEvents()))
		}
		if err != nil || at2 != at || !proto.Equal(req, req2) || !samePrices(prices, prices2) {
			t.Fatalf("round trip changed the entry: %v", err)
		}
	})
}
