// Package openhands takes the webhook feed of OpenHands' V1 agent-server
// (OH_WEBHOOKS_0_BASE_URL=http://localhost:9464/openhands), with no change
// to OpenHands, and turns it into agentmeter events that go through the
// same seam as the gRPC ingest: validated, de-duplicated, priced and
// aggregated by the processor.
//
//	POST {path}/events/{conversation_id}   a JSON array of events
//	POST {path}/conversations              one ConversationInfo
//
// The feed's facts (shapes, retries, status mapping) are those of
// openhands-agent-server 1.43. What becomes of each event:
//
//   - ConversationStateUpdateEvent "stats", and the stats of "full_state" and
//     of ConversationInfo, are cumulative per usage_id: the increase over the
//     highest values seen becomes one llm_call (llm_service = usage_id;
//     provider and request model from the model name, "litellm_proxy/"
//     dropped). A bucket whose cost did not grow while its tokens did was
//     not priced by OpenHands: its call goes without cost_usd and the price
//     table prices it. The call's event id is derived from the cumulative
//     values reached, so a repeated full_state or a retried batch adds
//     nothing.
//   - full_state's response_latencies (and LLMCompletionLogEvent's
//     latency_sec) are the calls' durations, each response_id once per
//     conversation: observed in gen_ai.client.operation.duration without
//     counting a call (the call itself came with its stats, latency unknown).
//   - "execution_status" (and full_state's) becomes an agent_status, mapped as
//     OpenHands' front end maps it; ConversationErrorEvent becomes status
//     error, or rate_limited when its classification says so.
//   - ConversationInfo creates the conversation (status loading until the
//     first full_state) and closes it when its status is "deleting".
//   - A TerminalObservation with exit code -1 is a command timeout, soft or
//     hard by its suffix.
//   - Every other kind is ignored and counted.
package openhands

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/agentmeter/agentmeter/catalog"
	"github.com/agentmeter/agentmeter/exporter"
	"github.com/agentmeter/agentmeter/processor"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
	"github.com/agentmeter/agentmeter/receiver"
)

// Config configures the webhook.
type Config struct {
	// Path is the URL path prefix, such as "/openhands".
	Path string
	// APIKeys are the accepted X-Session-API-Key values; none = only
	// loopback peers are accepted.
	APIKeys []string
	// MaxBodyBytes bounds one request body; larger is answered 413.
	MaxBodyBytes int64
	// Limits are the event checks of the gRPC ingest.
	Limits receiver.Limits
	// MaxConversations bounds the conversations whose cumulative usage is
	// remembered (the least recently used is forgotten). 0 = 10000.
	MaxConversations int
	// ImportStateFile is a LegacyStateFile to import into Deps.State once
	// and remove; a missing file is nothing to import. "" = none.
	ImportStateFile string
}

// DurationObserver records a call's duration learnt after its usage was
// consumed (the processor).
type DurationObserver interface {
	ObserveDuration(agent string, c *pb.LLMCall)
}

// Deps are the webhook's collaborators.
type Deps struct {
	Logger *slog.Logger
	// Consumer takes the translated events: the processor.
	Consumer processor.Consumer
	// Durations takes the calls' durations; nil = not recorded.
	Durations DurationObserver
	// State keeps the highest cumulative values seen (and the response
	// ids whose duration was observed) across restarts: the durable
	// processor state's store (storage.directory). nil = memory only.
	State StateStore
	// Draining is closed when the collector starts shutting down: requests
	// are then answered 503, and the agent-server keeps them for later.
	Draining <-chan struct{}
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// SessionKeyHeader is the header the agent-server authenticates with.
const SessionKeyHeader = "X-Session-API-Key"

// Handler serves the webhook. Safe for concurrent use.
type Handler struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	now  func() time.Time

	// mu serialises requests: the translator's state and the order in
	// which a conversation's batches are applied.
	mu    sync.Mutex
	tr    *translator
	state StateStore // nil = memory only, or closed

	// counts for the self-metrics, guarded by cmu.
	cmu      sync.Mutex
	events   map[Outcome]int64
	requests map[int]int64
	results  []processor.Result
	applied  atomic.Int64 // agentmeter events accepted, for tests and logs
}

// New builds the handler.
func New(cfg Config, deps Deps) (*Handler, error) {
	if deps.Consumer == nil {
		return nil, errors.New("openhands: no consumer")
	}
	if cfg.MaxBodyBytes <= 0 || !strings.HasPrefix(cfg.Path, "/") {
		return nil, errors.New("openhands: MaxBodyBytes must be > 0 and Path start with /")
	}
	if cfg.ImportStateFile != "" && deps.State == nil {
		return nil, fmt.Errorf("openhands: state file %q to import, but no store to import it into", cfg.ImportStateFile)
	}
	h := &Handler{cfg: cfg, deps: deps, log: deps.Logger, now: deps.Now, state: deps.State,
		tr: newTranslator(cfg.MaxConversations, deps.State != nil), events: map[Outcome]int64{}, requests: map[int]int64{}}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.state == nil {
		return h, nil
	}
	skipped, first, err := loadState(h.state, h.tr)
	if err != nil {
		return nil, err
	}
	if skipped > 0 {
		h.log.Warn("openhands state: damaged items skipped", "items", skipped, "first", first)
	}
	if cfg.ImportStateFile != "" {
		found, err := importFile(cfg.ImportStateFile, h.state, h.tr)
		if err != nil {
			return nil, err
		}
		if found {
			h.log.Info("openhands state file imported into the storage and removed", "file", cfg.ImportStateFile)
		}
	}
	// Conversations over the bound were evicted while loading.
	if err := h.save(nil); err != nil {
		return nil, err
	}
	h.log.Info("openhands state loaded", "conversations", len(h.tr.convs))
	return h, nil
}

// Close stops writing the state to the store (which the caller closes
// after it). Safe to call more than once.
func (h *Handler) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.state = nil
	return nil
}

// save writes journal, and what the translator forgot, to the store.
// h.mu is held (or h is not yet shared).
func (h *Handler) save(journal []stateRecord) error {
	if h.state == nil {
		return nil
	}
	drop, forgotten := h.tr.takeDropped(), h.tr.takeForgotten()
	set := h.tr.itemsOf(journal)
	for _, r := range forgotten {
		if set == nil {
			set = make(map[string]map[string][]byte)
		}
		if set[r.Conv] == nil {
			set[r.Conv] = make(map[string][]byte)
		}
		name, _ := h.tr.item(r)
		if _, again := set[r.Conv][name]; !again {
			set[r.Conv][name] = nil
		}
	}
	if err := h.state.WriteOpenHandsState(drop, set); err != nil {
		return fmt.Errorf("write openhands state: %w", err)
	}
	return nil
}

// Routes are the handler's routes on the collector's HTTP server.
func (h *Handler) Routes() []exporter.Route {
	p := strings.TrimSuffix(h.cfg.Path, "/")
	return []exporter.Route{
		{Pattern: "POST " + p + "/events/{id}", Handler: http.HandlerFunc(h.serveEvents)},
		{Pattern: "POST " + p + "/conversations", Handler: http.HandlerFunc(h.serveConversation)},
	}
}

// reply is the JSON answer; OpenHands ignores the body.
type reply struct {
	Success  bool     `json:"success"`
	Error    string   `json:"error,omitempty"`
	Events   int      `json:"events"`
	Applied  int      `json:"applied"`
	Ignored  int      `json:"ignored"`
	Invalid  int      `json:"invalid"`
	Problems []string `json:"problems,omitempty"`
}

func (h *Handler) answer(w http.ResponseWriter, code int, r reply) {
	h.cmu.Lock()
	h.requests[code]++
	h.cmu.Unlock()
	r.Success = code/100 == 2
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(r)
}

func (h *Handler) fail(w http.ResponseWriter, code int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if code != http.StatusUnauthorized && code != http.StatusForbidden {
		h.log.Warn("openhands webhook request refused", "status", code, "err", msg)
	}
	h.answer(w, code, reply{Error: msg})
}

// admit checks the draining state and the caller; it answers and returns
// false when the request may not go on.
func (h *Handler) admit(w http.ResponseWriter, r *http.Request) bool {
	select {
	case <-h.deps.Draining:
		w.Header().Set("Retry-After", "5")
		h.fail(w, http.StatusServiceUnavailable, "agentmeter is shutting down; send again later")
		return false
	default:
	}
	if len(h.cfg.APIKeys) == 0 {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			h.fail(w, http.StatusForbidden, "no receiver.openhands.api_keys configured: only loopback peers are accepted")
			return false
		}
		return true
	}
	got := r.Header.Get(SessionKeyHeader)
	ok := false
	for _, k := range h.cfg.APIKeys {
		if subtle.ConstantTimeCompare([]byte(got), []byte(k)) == 1 {
			ok = true
		}
	}
	if !ok {
		if got == "" {
			h.fail(w, http.StatusUnauthorized, "missing %s header", SessionKeyHeader)
		} else {
			h.fail(w, http.StatusUnauthorized, "wrong %s", SessionKeyHeader)
		}
		return false
	}
	return true
}

// body reads the request body within the bound; it answers and returns
// nil when it cannot.
func (h *Handler) body(w http.ResponseWriter, r *http.Request) []byte {
	b, err := readAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			h.fail(w, http.StatusRequestEntityTooLarge, "body larger than receiver.openhands.max_body_mib (%d bytes)", h.cfg.MaxBodyBytes)
		} else {
			h.fail(w, http.StatusBadRequest, "read body: %v", err)
		}
		return nil
	}
	return b
}

func (h *Handler) serveEvents(w http.ResponseWriter, r *http.Request) {
	if !h.admit(w, r) {
		return
	}
	conv, ok := NormalizeID(r.PathValue("id"))
	if !ok {
		h.fail(w, http.StatusBadRequest, "conversation id %q in the path is not 32 hex characters or a UUID", printable(r.PathValue("id")))
		return
	}
	body := h.body(w, r)
	if body == nil {
		return
	}
	raw, err := decodeArray(body)
	if err != nil {
		h.fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	h.mu.Lock()
	b := h.tr.events(conv, raw)
	err = h.apply(r.Context(), b)
	h.mu.Unlock()
	if err != nil {
		h.unavailable(w, err)
		return
	}
	h.answer(w, http.StatusOK, h.summary(len(raw), b))
}

func (h *Handler) serveConversation(w http.ResponseWriter, r *http.Request) {
	if !h.admit(w, r) {
		return
	}
	body := h.body(w, r)
	if body == nil {
		return
	}
	var ci conversationInfo
	if err := decodeObject(body, &ci); err != nil {
		h.fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	conv, ok := NormalizeID(ci.ID)
	if !ok {
		h.fail(w, http.StatusBadRequest, "ConversationInfo id %q is not a UUID", printable(ci.ID))
		return
	}
	h.mu.Lock()
	b := h.tr.info(conv, &ci)
	err := h.apply(r.Context(), b)
	h.mu.Unlock()
	if err != nil {
		h.unavailable(w, err)
		return
	}
	h.answer(w, http.StatusOK, h.summary(1, b))
}

// unavailable answers a batch the processor could not apply (its durable
// state could not be written): 503, nothing applied, the agent-server
// sends it again.
func (h *Handler) unavailable(w http.ResponseWriter, err error) {
	w.Header().Set("Retry-After", "5")
	h.fail(w, http.StatusServiceUnavailable, "agentmeter could not store this batch, nothing of it was applied; send it again: %v", err)
}

// apply validates and consumes b's events, records its durations, and
// counts its outcomes; when the processor cannot apply them it reverts b's
// state changes and returns the error. h.mu is held.
func (h *Handler) apply(ctx context.Context, b *batch) error {
	now := h.now()
	valid := b.events[:0:0]
	var invalid []*pb.Event
	for _, ev := range b.events {
		if field, reason, ok := receiver.Validate(ev, now, h.cfg.Limits); !ok {
			h.log.Warn("openhands event translated into an invalid agentmeter event", "event_id", ev.GetEventId(), "field", field, "reason", reason)
			invalid = append(invalid, ev)
			continue
		}
		valid = append(valid, ev)
	}
	if len(valid) > 0 {
		if cap(h.results) < len(valid) {
			h.results = make([]processor.Result, len(valid))
		}
		results := h.results[:len(valid)]
		if err := h.deps.Consumer.Consume(ctx, valid, now, results); err != nil {
			b.rollback()
			// What the translator forgot stays forgotten.
			if err := h.save(nil); err != nil {
				h.log.Error("openhands state not written", "err", err)
			}
			return err
		}
		for i, res := range results {
			switch res.Outcome {
			case processor.Accepted:
				h.applied.Add(1)
			case processor.Rejected:
				h.log.Debug("openhands event not applied", "event_id", valid[i].GetEventId(), "field", res.Field, "reason", res.Reason)
			}
		}
	}
	for _, ev := range invalid {
		h.deps.Consumer.Refused(ev)
	}
	if h.deps.Durations != nil {
		for _, d := range b.durations {
			h.deps.Durations.ObserveDuration(Agent, d.Call)
		}
	}
	h.cmu.Lock()
	for _, o := range b.outcomes {
		h.events[o]++
	}
	h.cmu.Unlock()
	if err := h.save(b.journal); err != nil {
		// Applied already: the stored state lags; see StateStore.
		h.log.Error("openhands state not written", "err", err)
	}
	return nil
}

func (h *Handler) summary(n int, b *batch) reply {
	r := reply{Events: n, Problems: b.problems}
	for _, o := range b.outcomes {
		switch o.Outcome {
		case catalog.OutcomeApplied:
			r.Applied++
		case catalog.OutcomeIgnored:
			r.Ignored++
		default:
			r.Invalid++
		}
	}
	return r
}

// RegisterMetrics creates the self-metrics on m.
func (h *Handler) RegisterMetrics(m metric.Meter) error {
	events, err := catalog.OpenHandsEvents.Int64ObservableCounter(m)
	if err != nil {
		return err
	}
	requests, err := catalog.OpenHandsRequests.Int64ObservableCounter(m)
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		h.cmu.Lock()
		defer h.cmu.Unlock()
		for k, v := range h.events {
			o.ObserveInt64(events, v, metric.WithAttributes(catalog.AttrKind.String(k.Kind), catalog.AttrOutcome.String(k.Outcome)))
		}
		for code, v := range h.requests {
			o.ObserveInt64(requests, v, metric.WithAttributeSet(attribute.NewSet(catalog.AttrCode.String(strconv.Itoa(code)))))
		}
		return nil
	}, events, requests)
	if err != nil {
		return fmt.Errorf("register openhands callback: %w", err)
	}
	return nil
}

// Applied is the number of agentmeter events the processor accepted from
// the feed.
func (h *Handler) Applied() int64 { return h.applied.Load() }
