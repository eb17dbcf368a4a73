package receiver

import (
	"fmt"
	"math"
	"math/bits"
	"time"
	"unicode"
	"unicode/utf8"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// Limits bound what one event may carry.
type Limits struct {
	// MaxStringBytes bounds every string field of an event except the free-text
	// agent_status.reason (MaxReasonBytes). 0 (or less) means DefaultMaxStringBytes.
	MaxStringBytes int
	// MaxFutureSkew is how far after `now` an event's time may be. 0 means not at
	// all: an event dated even 1ns after now is rejected.
	MaxFutureSkew time.Duration
}

// Bounds of an event's values. They keep absurd values out of the sums and
// histograms the processor keeps; a real LLM call, session or budget is far
// inside each of them.
const (
	// DefaultMaxStringBytes is the string bound when Limits.MaxStringBytes is 0.
	DefaultMaxStringBytes = 256
	// MaxReasonBytes bounds agent_status.reason, which is free text.
	MaxReasonBytes = 1024
	// MaxTokens bounds every token count and the context window.
	MaxTokens = 1_000_000_000_000
	// MaxSeconds bounds latency_seconds, time_to_first_token_seconds and
	// session_started.duration_seconds: one day.
	MaxSeconds = 86_400.0
	// MaxUSD bounds cost_usd and created.max_budget_usd.
	MaxUSD = 1_000_000.0
	// MaxConcurrentConversations bounds limit.max_concurrent_conversations.
	MaxConcurrentConversations = 1_000_000
)

// Reasons that carry no value are constants, so that building them costs
// nothing; the others are formatted only when the event is invalid.
const (
	reasonRequired       = "required"
	reasonNoPayload      = "no payload: set one of llm_call, agent_status, conversation, runtime_fault"
	reasonNoKind         = "no kind: set one of created, session_started, closed, limit"
	reasonBadUTF8        = "is not valid utf-8"
	reasonForAgentStatus = "required for agent_status"
	reasonForConvo       = "required for conversation events other than limit"
)

// Validate checks one event. It returns ok=true, or the dotted field path inside the event and a
// human reason of the FIRST rule broken, in declaration (field-number) order of the proto.
//
// A rule that ties several fields together is checked at the field it names:
// "conversation_id is required for agent_status" at conversation_id (field 3,
// so before anything inside the payload), "reasoning_tokens must not exceed
// completion_tokens" at reasoning_tokens, the cache sum at the first cache
// field whose running sum exceeds prompt_tokens. Within one field the checks
// run required, then size, then UTF-8, then control characters (or sign, then
// bound, then cross-field rule, for numbers).
//
// Validate does not allocate when the event is valid.
func Validate(ev *pb.Event, now time.Time, lim Limits) (field, reason string, ok bool) {
	maxBytes := lim.MaxStringBytes
	if maxBytes <= 0 {
		maxBytes = DefaultMaxStringBytes
	}

	if r := checkString(ev.GetEventId(), maxBytes, true, false); r != "" {
		return "event_id", r, false
	}
	if ts := ev.GetTime(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return "time", "is not a valid timestamp: " + err.Error(), false
		}
		if ahead := ts.AsTime().Sub(now); ahead > lim.MaxFutureSkew {
			return "time", fmt.Sprintf("is %v in the future, more than the %v allowed", ahead, lim.MaxFutureSkew), false
		}
	}
	if r := checkString(ev.GetConversationId(), maxBytes, false, false); r != "" {
		return "conversation_id", r, false
	}
	if ev.GetConversationId() == "" {
		switch p := ev.GetPayload().(type) {
		case *pb.Event_AgentStatus:
			return "conversation_id", reasonForAgentStatus, false
		case *pb.Event_Conversation:
			if _, isLimit := p.Conversation.GetKind().(*pb.ConversationEvent_Limit); !isLimit {
				return "conversation_id", reasonForConvo, false
			}
		}
	}
	// agent is the gen_ai.agent.name label: printable like the others.
	if r := checkString(ev.GetAgent(), maxBytes, false, true); r != "" {
		return "agent", r, false
	}

	switch p := ev.GetPayload().(type) {
	case *pb.Event_LlmCall:
		return validateLLMCall(p.LlmCall, maxBytes)
	case *pb.Event_AgentStatus:
		return validateAgentStatus(p.AgentStatus)
	case *pb.Event_Conversation:
		return validateConversation(p.Conversation)
	case *pb.Event_RuntimeFault:
		if k := int32(p.RuntimeFault.GetKind()); k == 0 || !knownEnum(pb.RuntimeFaultKind_name, k) {
			return "runtime_fault.kind", enumReason(k), false
		}
		return "", "", true
	}
	return "payload", reasonNoPayload, false
}

func validateLLMCall(c *pb.LLMCall, maxBytes int) (field, reason string, ok bool) {
	if r := checkString(c.GetProvider(), maxBytes, false, true); r != "" {
		return "llm_call.provider", r, false
	}
	if r := checkString(c.GetOperation(), maxBytes, false, true); r != "" {
		return "llm_call.operation", r, false
	}
	if r := checkString(c.GetRequestModel(), maxBytes, true, true); r != "" {
		return "llm_call.request_model", r, false
	}
	if r := checkString(c.GetResponseModel(), maxBytes, false, true); r != "" {
		return "llm_call.response_model", r, false
	}
	if r := checkString(c.GetResponseId(), maxBytes, false, false); r != "" {
		return "llm_call.response_id", r, false
	}
	if r := checkString(c.GetLlmService(), maxBytes, false, false); r != "" {
		return "llm_call.llm_service", r, false
	}

	prompt, completion := c.GetPromptTokens(), c.GetCompletionTokens()
	read, write, write1h := c.GetCacheReadTokens(), c.GetCacheWriteTokens(), c.GetCacheWrite_1HTokens()
	// Which cache field, if any, the cache sum rule blames: the first whose
	// running sum (in field-number order) exceeds prompt_tokens.
	const (
		blameNone = iota
		blameRead
		blameWrite
		blameWrite1h
	)
	blame := blameNone
	if sumExceeds(prompt, read, write, write1h) {
		switch {
		case sumExceeds(prompt, read, 0, 0):
			blame = blameRead
		case sumExceeds(prompt, read, write, 0):
			blame = blameWrite
		default:
			blame = blameWrite1h
		}
	}

	if r := checkTokens(prompt); r != "" {
		return "llm_call.prompt_tokens", r, false
	}
	if r := checkTokens(completion); r != "" {
		return "llm_call.completion_tokens", r, false
	}
	if r := checkTokens(read); r != "" {
		return "llm_call.cache_read_tokens", r, false
	}
	if blame == blameRead {
		return "llm_call.cache_read_tokens", cacheSumReason(prompt, read, write, write1h), false
	}
	if r := checkTokens(write); r != "" {
		return "llm_call.cache_write_tokens", r, false
	}
	if blame == blameWrite {
		return "llm_call.cache_write_tokens", cacheSumReason(prompt, read, write, write1h), false
	}
	if r := checkTokens(c.GetReasoningTokens()); r != "" {
		return "llm_call.reasoning_tokens", r, false
	}
	if reasoning := c.GetReasoningTokens(); reasoning > completion {
		return "llm_call.reasoning_tokens", fmt.Sprintf("reasoning_tokens (%d) exceed completion_tokens (%d)", reasoning, completion), false
	}
	if r := checkTokens(c.GetContextWindow()); r != "" {
		return "llm_call.context_window", r, false
	}

	latency, ttft := c.GetLatencySeconds(), c.GetTimeToFirstTokenSeconds()
	if r := checkFloat(latency, MaxSeconds, " s"); r != "" {
		return "llm_call.latency_seconds", r, false
	}
	if r := checkFloat(ttft, MaxSeconds, " s"); r != "" {
		return "llm_call.time_to_first_token_seconds", r, false
	}
	if latency > 0 && ttft > latency {
		return "llm_call.time_to_first_token_seconds", fmt.Sprintf("time_to_first_token_seconds (%v) exceeds latency_seconds (%v)", ttft, latency), false
	}
	if c != nil && c.CostUsd != nil {
		if r := checkFloat(*c.CostUsd, MaxUSD, " USD"); r != "" {
			return "llm_call.cost_usd", r, false
		}
	}
	if r := checkString(c.GetErrorType(), maxBytes, false, true); r != "" {
		return "llm_call.error_type", r, false
	}
	if r := checkTokens(write1h); r != "" {
		return "llm_call.cache_write_1h_tokens", r, false
	}
	if blame == blameWrite1h {
		return "llm_call.cache_write_1h_tokens", cacheSumReason(prompt, read, write, write1h), false
	}
	return "", "", true
}

func validateAgentStatus(s *pb.AgentStatus) (field, reason string, ok bool) {
	if st := int32(s.GetState()); st == 0 || !knownEnum(pb.AgentState_name, st) {
		return "agent_status.state", enumReason(st), false
	}
	if r := checkString(s.GetReason(), MaxReasonBytes, false, false); r != "" {
		return "agent_status.reason", r, false
	}
	return "", "", true
}

func validateConversation(c *pb.ConversationEvent) (field, reason string, ok bool) {
	switch k := c.GetKind().(type) {
	case *pb.ConversationEvent_Created:
		// A nil message in a oneof wrapper is a Go caller's empty message.
		if b := k.Created; b != nil && b.MaxBudgetUsd != nil {
			if r := checkPositive(*b.MaxBudgetUsd, MaxUSD, " USD"); r != "" {
				return "conversation.created.max_budget_usd", r, false
			}
		}
		// UNSPECIFIED is allowed: the trigger is unknown.
		if t := int32(k.Created.GetTrigger()); !knownEnum(pb.ConversationTrigger_name, t) {
			return "conversation.created.trigger", enumReason(t), false
		}
	case *pb.ConversationEvent_SessionStarted:
		if r := checkFloat(k.SessionStarted.GetDurationSeconds(), MaxSeconds, " s"); r != "" {
			return "conversation.session_started.duration_seconds", r, false
		}
	case *pb.ConversationEvent_Closed:
		if cr := int32(k.Closed.GetReason()); cr == 0 || !knownEnum(pb.CloseReason_name, cr) {
			return "conversation.closed.reason", enumReason(cr), false
		}
	case *pb.ConversationEvent_Limit:
		if n := k.Limit.GetMaxConcurrentConversations(); n < 1 || n > MaxConcurrentConversations {
			return "conversation.limit.max_concurrent_conversations",
				fmt.Sprintf("must be between 1 and %d, got %d", MaxConcurrentConversations, n), false
		}
	default:
		return "conversation.kind", reasonNoKind, false
	}
	return "", "", true
}

// checkString returns why s breaks the string rules, or "" when it keeps them.
// label marks a value that becomes a metric label, which must hold no control
// characters.
func checkString(s string, maxBytes int, required, label bool) string {
	if len(s) <= maxBytes && (len(s) > 0 || !required) && asciiOnly(s, label) {
		return ""
	}
	return stringReason(s, maxBytes, required, label)
}

func stringReason(s string, maxBytes int, required, label bool) string {
	switch {
	case s == "" && required:
		return reasonRequired
	case len(s) > maxBytes:
		return fmt.Sprintf("is %d bytes, more than the %d allowed", len(s), maxBytes)
	case !utf8.ValidString(s):
		return reasonBadUTF8
	}
	if label {
		for i, r := range s {
			if unicode.IsControl(r) {
				return fmt.Sprintf("contains control character %U at byte %d: metric labels must be printable", r, i)
			}
		}
	}
	return ""
}

// asciiOnly reports whether s is all ASCII, and when printable is set all
// printable ASCII (0x20 to 0x7e). That is the common case of every string
// here, so it is checked eight bytes at a time, faster than utf8.ValidString
// does; false means "look closer".
func asciiOnly(s string, printable bool) bool {
	if len(s) < 8 {
		x := uint64(0x2020202020202020) // padded with spaces, which pass
		for i := 0; i < len(s); i++ {
			x = x<<8 | uint64(s[i])
		}
		return asciiWord(x, printable)
	}
	for i := 0; i+8 < len(s); i += 8 {
		if !asciiWord(load64(s[i:]), printable) {
			return false
		}
	}
	// The last 1 to 8 bytes, as the last 8 bytes of s: an overlap rechecks
	// bytes already checked, which is harmless.
	return asciiWord(load64(s[len(s)-8:]), printable)
}

// load64 returns s[0:8] as a little-endian word (one load, once compiled).
func load64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// asciiWord reports whether the 8 bytes of x are all ASCII, and when
// printable is set all printable ASCII.
func asciiWord(x uint64, printable bool) bool {
	const (
		ones = 0x0101010101010101
		high = 0x8080808080808080
		del  = 0x7f * ones
	)
	bad := x
	if printable {
		// With every byte < 0x80, (v - ones) & ^v & high is not 0 exactly
		// when a byte of v is 0: so the first term flags a byte < 0x20 and
		// the second a byte == 0x7f. A byte >= 0x80 may flag wrongly, but
		// it fails the test anyway.
		d := x ^ del
		bad |= (x-0x20*ones)&^x | (d-ones)&^d
	}
	return bad&high == 0
}

// checkTokens returns why n is not a token count, or "". Like checkFloat, it
// is small enough to be inlined: the valid path is the hot one.
func checkTokens(n int64) string {
	if n >= 0 && n <= MaxTokens {
		return ""
	}
	return tokensReason(n)
}

func tokensReason(n int64) string {
	if n < 0 {
		return fmt.Sprintf("must be >= 0, got %d", n)
	}
	return fmt.Sprintf("must be <= %d, got %d", int64(MaxTokens), n)
}

// checkFloat returns why v is not a finite amount in [0, maxV], or "". unit
// follows the values in the reason.
func checkFloat(v, maxV float64, unit string) string {
	// NaN fails every comparison, and +Inf fails v <= maxV.
	if v >= 0 && v <= maxV {
		return ""
	}
	return floatReason(v, maxV, unit)
}

// checkPositive is checkFloat for an amount that must be > 0.
func checkPositive(v, maxV float64, unit string) string {
	if v == 0 {
		return fmt.Sprintf("must be > 0, got %v%s", v, unit)
	}
	return checkFloat(v, maxV, unit)
}

func floatReason(v, maxV float64, unit string) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return fmt.Sprintf("must be finite, got %v", v)
	case v < 0:
		return fmt.Sprintf("must be >= 0, got %v%s", v, unit)
	}
	return fmt.Sprintf("must be <= %v%s, got %v%s", maxV, unit, v, unit)
}

// sumExceeds reports whether a+b+c > limit, exactly: the sum is taken in 128
// bits, so that no int64 input can overflow it.
func sumExceeds(limit, a, b, c int64) bool {
	lo, carry := bits.Add64(uint64(a), uint64(b), 0)
	hi, _ := bits.Add64(uint64(a>>63), uint64(b>>63), carry)
	lo, carry = bits.Add64(lo, uint64(c), 0)
	hi, _ = bits.Add64(hi, uint64(c>>63), carry)
	if limHi := uint64(limit >> 63); hi != limHi {
		return int64(hi) > int64(limHi)
	}
	return lo > uint64(limit)
}

func cacheSumReason(prompt, read, write, write1h int64) string {
	return fmt.Sprintf("cache_read_tokens (%d) + cache_write_tokens (%d) + cache_write_1h_tokens (%d) exceed prompt_tokens (%d)",
		read, write, write1h, prompt)
}

func knownEnum(names map[int32]string, v int32) bool {
	_, ok := names[v]
	return ok
}

func enumReason(v int32) string {
	if v == 0 {
		return "required: must not be UNSPECIFIED (0)"
	}
	return fmt.Sprintf("unknown value %d", v)
}
