package load

import (
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// Event ids are UUID-shaped: a random per-run prefix of idPrefixLen characters
// ("xxxxxxxx-xxxx-4xxx-yxxx-") and a counter of idCounterLen hex digits. The
// fixed width lets a pre-encoded batch get fresh ids by overwriting bytes in
// place, without re-encoding.
const (
	idPrefixLen  = 24
	idCounterLen = 12
	idLen        = idPrefixLen + idCounterLen
	// maxIDs is the counter's range: ids never repeat within a run.
	maxIDs = uint64(1) << (4 * idCounterLen)
	// secondsLen is the width of the padded varint holding Event.time.seconds.
	secondsLen = 5
)

// ids hands out unique event ids: a per-run random prefix and a shared counter.
// It is safe for concurrent use.
type ids struct {
	prefix [idPrefixLen]byte
	next   atomic.Uint64
	limit  uint64 // the counter never reaches limit
}

// newIDs returns an id source with a random prefix that stops after limit ids
// (0 = the counter's range).
func newIDs(limit uint64) (*ids, error) {
	var raw [10]byte
	if _, err := crand.Read(raw[:]); err != nil {
		return nil, fmt.Errorf("read random id prefix: %w", err)
	}
	s := &ids{limit: maxIDs}
	if limit > 0 && limit < maxIDs {
		s.limit = limit
	}
	// 8-4-4-4- with the UUIDv4 version and variant nibbles.
	h := hex.EncodeToString(raw[:]) // 20 hex digits
	p := h[0:8] + "-" + h[8:12] + "-4" + h[12:15] + "-" + string("89ab"[raw[9]&3]) + h[15:18] + "-"
	copy(s.prefix[:], p)
	return s, nil
}

// reserve takes up to want consecutive ids and returns the first counter value
// and how many it got; n is 0 once the limit is reached.
func (s *ids) reserve(want uint64) (first, n uint64) {
	first = s.next.Add(want) - want
	if first >= s.limit {
		return first, 0
	}
	return first, min(want, s.limit-first)
}

// id formats the event id of counter value c.
func (s *ids) id(c uint64) string {
	var b [idLen]byte
	copy(b[:], s.prefix[:])
	putHex(b[idPrefixLen:], c)
	return string(b[:])
}

// putHex writes the idCounterLen lowercase hex digits of v into dst.
func putHex(dst []byte, v uint64) {
	const digits = "0123456789abcdef"
	_ = dst[idCounterLen-1]
	for i := idCounterLen - 1; i >= 0; i-- {
		dst[i] = digits[v&0xf]
		v >>= 4
	}
}

// putVarint5 writes v as a varint padded to exactly secondsLen bytes (valid
// protobuf: decoders accept non-minimal varints). v must be below 2^35.
func putVarint5(dst []byte, v uint64) {
	_ = dst[secondsLen-1]
	for i := range secondsLen - 1 {
		dst[i] = byte(v>>(7*i))&0x7f | 0x80
	}
	dst[secondsLen-1] = byte(v>>(7*(secondsLen-1))) & 0x7f
}

// template is one pre-encoded RecordRequest and where its per-send fields are.
// It is read-only once built: senders copy it into their own buffers.
type template struct {
	b      []byte
	ends   []int // ends[i] = length of the encoding of events[0:i+1]
	idOff  []int // offset of the counter digits of event i's id
	secOff []int // offset of the padded time.seconds varint of event i
}

// fill copies the first n events of t into dst (reusing its storage), gives
// them the ids first..first+n-1 of s, and sets their time to sec.
func (t *template) fill(dst []byte, s *ids, first uint64, n int, sec int64) []byte {
	dst = append(dst[:0], t.b[:t.ends[n-1]]...)
	for i := range n {
		putHex(dst[t.idOff[i]:], first+uint64(i))
		putVarint5(dst[t.secOff[i]:], uint64(sec))
	}
	return dst
}

// model is one request_model value and how its calls look.
type model struct {
	provider, name string
	reasoning      bool
	contextWindow  int64
	inUSD, outUSD  float64 // price per million input / output tokens
}

// baseModels are cycled to make Config.Models distinct request_model values.
var baseModels = [...]model{
	{"anthropic", "claude-sonnet-4-5-20250929", false, 200_000, 3, 15},
	{"openai", "gpt-5-2025-08-07", true, 400_000, 1.25, 10},
	{"anthropic", "claude-opus-4-1-20250805", false, 200_000, 15, 75},
	{"gcp.gemini", "gemini-2.5-pro", true, 1_048_576, 1.25, 10},
	{"openai", "o4-mini-2025-04-16", true, 200_000, 1.1, 4.4},
	{"deepseek", "deepseek-chat", false, 128_000, 0.27, 1.1},
}

// models returns n distinct models, cycling baseModels with a suffix.
func models(n int) []model {
	out := make([]model, n)
	for i := range out {
		out[i] = baseModels[i%len(baseModels)]
		if k := i / len(baseModels); k > 0 {
			out[i].name = fmt.Sprintf("%s-ft%d", out[i].name, k)
		}
	}
	return out
}

// conversationIDs returns n distinct OpenHands-style conversation ids.
func conversationIDs(rng *rand.Rand, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%016x%016x", rng.Uint64(), rng.Uint64())
	}
	return out
}

// event builds the g-th event of the ring: an LLMCall, or one AgentStatus in
// 20. The id is a placeholder that fill overwrites.
func event(g int, placeholder string, sec int64, convs []string, ms []model, rng *rand.Rand) *pb.Event {
	ev := &pb.Event{
		EventId:        placeholder,
		Time:           &timestamppb.Timestamp{Seconds: sec},
		ConversationId: convs[g%len(convs)],
		Agent:          "CodeActAgent",
	}
	if g%20 == 19 {
		state := pb.AgentState_AGENT_STATE_RUNNING
		if g%40 == 39 {
			state = pb.AgentState_AGENT_STATE_AWAITING_USER_INPUT
		}
		ev.Payload = &pb.Event_AgentStatus{AgentStatus: &pb.AgentStatus{State: state}}
		return ev
	}
	m := ms[g%len(ms)]
	prompt := int64(2_000 + rng.IntN(118_000))
	var cacheRead, cacheWrite int64
	if g%10 != 0 { // most calls after the first of a conversation hit the cache
		cacheRead = prompt * int64(50+rng.IntN(45)) / 100
	}
	cacheWrite = min(prompt-cacheRead, int64(200+rng.IntN(4_000)))
	completion := int64(50 + rng.IntN(4_000))
	var reasoning int64
	if m.reasoning {
		reasoning = completion * int64(rng.IntN(60)) / 100
	}
	latency := 0.4 + float64(completion)/float64(40+rng.IntN(80))
	ttft := min(0.2+rng.Float64()*1.5, latency*0.9)
	call := &pb.LLMCall{
		Provider:                m.provider,
		Operation:               "chat",
		RequestModel:            m.name,
		ResponseModel:           m.name,
		ResponseId:              fmt.Sprintf("resp_%012x", g),
		LlmService:              "agent",
		PromptTokens:            prompt,
		CompletionTokens:        completion,
		CacheReadTokens:         cacheRead,
		CacheWriteTokens:        cacheWrite,
		ReasoningTokens:         reasoning,
		ContextWindow:           m.contextWindow,
		LatencySeconds:          latency,
		TimeToFirstTokenSeconds: ttft,
	}
	if g%8 == 7 {
		call.LlmService = "condenser"
	}
	if g%4 != 3 { // a quarter of the calls leave the cost to the sidecar's price table
		fresh := float64(prompt - cacheRead - cacheWrite)
		cost := (fresh*m.inUSD + float64(cacheRead)*m.inUSD*0.1 + float64(cacheWrite)*m.inUSD*1.25 +
			float64(completion)*m.outUSD) / 1e6
		call.CostUsd = &cost
	}
	if g%100 == 99 {
		call.ErrorType = "RateLimitError"
		call.CompletionTokens, call.ReasoningTokens, call.TimeToFirstTokenSeconds = 0, 0, 0
		call.CostUsd = nil
	}
	ev.Payload = &pb.Event_LlmCall{LlmCall: call}
	return ev
}

// buildTemplates encodes count batches of batch events each, with distinct
// content: event g of the ring is event(g).
func buildTemplates(s *ids, count, batch, conversations, nModels int, sec int64) ([]template, error) {
	rng := rand.New(rand.NewPCG(uint64(sec), 0x5eed))
	convs := conversationIDs(rng, conversations)
	ms := models(nModels)
	placeholder := s.id(0)
	out := make([]template, count)
	opts := proto.MarshalOptions{Deterministic: true}
	for t := range out {
		req := &pb.RecordRequest{Events: make([]*pb.Event, batch)}
		for j := range req.Events {
			req.Events[j] = event(t*batch+j, placeholder, sec, convs, ms, rng)
		}
		b, err := opts.Marshal(req)
		if err != nil {
			return nil, fmt.Errorf("encode batch %d: %w", t, err)
		}
		tpl, err := index(b)
		if err != nil {
			return nil, fmt.Errorf("index batch %d: %w", t, err)
		}
		out[t] = tpl
	}
	return out, nil
}

// index finds the event boundaries and the per-send fields in an encoded
// RecordRequest whose events have idLen-byte ids and a Timestamp time.
func index(b []byte) (template, error) {
	t := template{b: b}
	for pos := 0; pos < len(b); {
		num, typ, n := protowire.ConsumeTag(b[pos:])
		if n < 0 || num != 1 || typ != protowire.BytesType {
			return t, fmt.Errorf("offset %d: want field 1 (events)", pos)
		}
		pos += n
		size, n := protowire.ConsumeVarint(b[pos:])
		if n < 0 || size > uint64(len(b)-pos-n) {
			return t, fmt.Errorf("offset %d: bad event length", pos)
		}
		pos += n
		end := pos + int(size)
		idOff, secOff, err := indexEvent(b[:end], pos)
		if err != nil {
			return t, fmt.Errorf("event %d: %w", len(t.ends), err)
		}
		t.idOff = append(t.idOff, idOff+idPrefixLen)
		t.secOff = append(t.secOff, secOff)
		t.ends = append(t.ends, end)
		pos = end
	}
	if len(t.ends) == 0 {
		return t, errors.New("no events")
	}
	return t, nil
}

// indexEvent returns the offsets of the id bytes and of the time.seconds
// varint of the Event encoded in b[pos:]. Unix seconds of this era encode in
// exactly secondsLen bytes, so every later time fits in place.
func indexEvent(b []byte, pos int) (idOff, secOff int, err error) {
	idOff, secOff = -1, -1
	for pos < len(b) {
		num, typ, n := protowire.ConsumeTag(b[pos:])
		if n < 0 {
			return 0, 0, fmt.Errorf("offset %d: bad tag", pos)
		}
		pos += n
		switch {
		case num == 1 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b[pos:])
			if n < 0 || len(v) != idLen {
				return 0, 0, fmt.Errorf("event_id is not %d bytes", idLen)
			}
			idOff = pos + n - len(v)
			pos += n
		case num == 2 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b[pos:])
			if n < 0 {
				return 0, 0, errors.New("bad time")
			}
			// Timestamp: seconds (field 1) first, encoded as a plain varint.
			inner := pos + n - len(v)
			tnum, ttyp, tn := protowire.ConsumeTag(v)
			if tn < 0 || tnum != 1 || ttyp != protowire.VarintType {
				return 0, 0, errors.New("time has no seconds")
			}
			if _, vn := protowire.ConsumeVarint(v[tn:]); vn != secondsLen {
				return 0, 0, fmt.Errorf("time.seconds is %d bytes, want %d", vn, secondsLen)
			}
			secOff = inner + tn
			pos += n
		default:
			n := protowire.ConsumeFieldValue(num, typ, b[pos:])
			if n < 0 {
				return 0, 0, fmt.Errorf("offset %d: bad field %d", pos, num)
			}
			pos += n
		}
	}
	if idOff < 0 || secOff < 0 {
		return 0, 0, errors.New("missing event_id or time")
	}
	return idOff, secOff, nil
}
