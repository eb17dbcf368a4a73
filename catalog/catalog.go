// Package catalog is the one place where agentmeter's metric names, units,
// descriptions, bucket boundaries and attribute keys are defined.
//
// Instrument names follow the OpenTelemetry GenAI semantic conventions
// (v1.41.0) where one exists, and the agentmeter.* namespace otherwise. The
// Prometheus exporter translates them with underscore escaping and unit and
// _total suffixes; the Prom field of each Instrument is the resulting series
// name, pinned by a test so that a change of the library's default cannot move
// it. To follow the next semconv release, change this file (and the README's
// catalogue table, which a test compares with it).
package catalog

import (
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// SemconvVersion is the OpenTelemetry semantic conventions release the GenAI
// names and attributes follow.
const SemconvVersion = "1.41.0"

// ScopeName is the instrumentation scope of every agentmeter instrument.
const ScopeName = "github.com/agentmeter/agentmeter"

// Kind is an instrument kind.
type Kind string

// Instrument kinds.
const (
	Counter   Kind = "counter"
	Histogram Kind = "histogram"
	Gauge     Kind = "gauge"
)

// Instrument describes one metric of the catalogue.
type Instrument struct {
	// Name is the OpenTelemetry instrument name, as sent over OTLP.
	Name string
	// Unit is the UCUM unit; braced units are dropped from Prometheus names.
	Unit string
	// Description becomes the Prometheus HELP text (promtool requires one).
	Description string
	Kind        Kind
	// Prom is the series name Prometheus scrapes (without _bucket/_sum/_count).
	Prom string
	// Buckets are the explicit histogram boundaries (histograms only).
	Buckets []float64
	// Labels lists the Prometheus label names beyond the common ones.
	Labels string
}

// Attribute keys. The gen_ai.* and error.type keys are the semconv ones; the
// others are agentmeter's own and scrape as written.
const (
	AttrOperationName = attribute.Key("gen_ai.operation.name")
	AttrProviderName  = attribute.Key("gen_ai.provider.name")
	AttrRequestModel  = attribute.Key("gen_ai.request.model")
	AttrResponseModel = attribute.Key("gen_ai.response.model")
	AttrAgentName     = attribute.Key("gen_ai.agent.name")
	AttrTokenType     = attribute.Key("gen_ai.token.type")
	AttrErrorType     = attribute.Key("error.type")
	AttrAgentState    = attribute.Key("agent_state")
	AttrEventType     = attribute.Key("event_type")
	AttrOutcome       = attribute.Key("outcome")
	AttrCostSource    = attribute.Key("cost_source")
	AttrTrigger       = attribute.Key("trigger")
	AttrSuccess       = attribute.Key("success")
	AttrCloseReason   = attribute.Key("reason")
	AttrFaultKind     = attribute.Key("kind")
	AttrThreshold     = attribute.Key("threshold")
	AttrTableVersion  = attribute.Key("version")
	AttrTableFormat   = attribute.Key("format")
	AttrTableSource   = attribute.Key("source")
	AttrTableAsOf     = attribute.Key("as_of")
	AttrEntryState    = attribute.Key("state")
	AttrGRPCCode      = attribute.Key("grpc_code")
	AttrGRPCService   = attribute.Key("grpc_service")
	// AttrAuthReason is why ingest auth refused a connection or an RPC.
	AttrAuthReason = attribute.Key("reason")
	// AttrAuthFile is which auth file a reload read: token or tls.
	AttrAuthFile = attribute.Key("file")
	// AttrOverflow marks the series that absorbs measurements once the
	// per-instrument series bound is reached (as the OTel SDK does).
	AttrOverflow = attribute.Key("otel.metric.overflow")
)

// Values of gen_ai.token.type. Input and output are the semconv values.
const (
	TokenInput      = "input"
	TokenOutput     = "output"
	TokenCacheRead  = "cache_read"
	TokenCacheWrite = "cache_write"
	TokenReasoning  = "reasoning"
)

// Values of cost_source.
const (
	CostReported = "reported"
	CostComputed = "computed"
)

// Values of outcome.
const (
	OutcomeAccepted  = "accepted"
	OutcomeDuplicate = "duplicate"
	OutcomeRejected  = "rejected"
	OutcomeSuccess   = "success"
	OutcomeFailure   = "failure"
)

// DefaultOperation is gen_ai.operation.name when the event leaves it empty.
const DefaultOperation = "chat"

// Bucket boundaries.
var (
	// TokenBuckets are the semconv advisory boundaries of gen_ai.client.token.usage.
	TokenBuckets = []float64{1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864}
	// DurationBuckets are the semconv advisory boundaries of gen_ai.client.operation.duration.
	DurationBuckets = []float64{0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92}
	// RatioBuckets cover 0..1 (context window utilisation).
	RatioBuckets = []float64{0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1}
	// CostBuckets cover a conversation's cost in USD.
	CostBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100}
	// SessionStartBuckets cover an agent session start in seconds.
	SessionStartBuckets = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300}
)

// The catalogue. Common labels of the LLM-call series are gen_ai_operation_name,
// gen_ai_provider_name, gen_ai_request_model, gen_ai_response_model and
// gen_ai_agent_name.
var (
	TokenUsage = Instrument{
		Name: "gen_ai.client.token.usage", Unit: "{token}", Kind: Histogram,
		Prom:        "gen_ai_client_token_usage",
		Description: "Number of input and output tokens used per LLM call.",
		Buckets:     TokenBuckets, Labels: "gen_ai_token_type = input / output",
	}
	OperationDuration = Instrument{
		Name: "gen_ai.client.operation.duration", Unit: "s", Kind: Histogram,
		Prom:        "gen_ai_client_operation_duration_seconds",
		Description: "Duration of LLM calls (latency_seconds).",
		Buckets:     DurationBuckets, Labels: "error_type when the call failed",
	}
	TimeToFirstChunk = Instrument{
		Name: "gen_ai.client.operation.time_to_first_chunk", Unit: "s", Kind: Histogram,
		Prom:        "gen_ai_client_operation_time_to_first_chunk_seconds",
		Description: "Time to the first streamed chunk of LLM calls, when known.",
		Buckets:     DurationBuckets,
	}
	LLMTokens = Instrument{
		Name: "agentmeter.llm.tokens", Unit: "{token}", Kind: Counter,
		Prom:        "agentmeter_llm_tokens_total",
		Description: "Tokens of LLM calls by type, as sent: input includes cache tokens, output includes reasoning tokens.",
		Labels:      "gen_ai_token_type = input, output, cache_read, cache_write, reasoning",
	}
	LLMCost = Instrument{
		Name: "agentmeter.llm.cost_usd", Unit: "{USD}", Kind: Counter,
		Prom:        "agentmeter_llm_cost_usd_total",
		Description: "Cost of LLM calls in USD.",
		Labels:      "cost_source = reported / computed",
	}
	ContextUtilization = Instrument{
		Name: "agentmeter.llm.context_utilization_ratio", Unit: "", Kind: Histogram,
		Prom:        "agentmeter_llm_context_utilization_ratio",
		Description: "prompt_tokens / context_window of LLM calls whose context window is known.",
		Buckets:     RatioBuckets,
	}
	StatusTransitions = Instrument{
		Name: "agentmeter.agent.status_transitions", Unit: "{transition}", Kind: Counter,
		Prom:        "agentmeter_agent_status_transitions_total",
		Description: "Agent state changes by new state; agent_state=\"error\" is OpenHands' saas_agent_status_errors.",
		Labels:      "gen_ai_agent_name, agent_state",
	}
	AgentConversations = Instrument{
		Name: "agentmeter.agent.conversations", Unit: "{conversation}", Kind: Gauge,
		Prom:        "agentmeter_agent_conversations",
		Description: "Tracked conversations currently in each agent state.",
		Labels:      "gen_ai_agent_name, agent_state",
	}
	ReceiverEvents = Instrument{
		Name: "agentmeter.receiver.events", Unit: "{event}", Kind: Counter,
		Prom:        "agentmeter_receiver_events_total",
		Description: "Events received on the ingest API and from the OpenHands webhook (as translated), by payload type and outcome.",
		Labels:      "event_type, outcome = accepted / duplicate / rejected",
	}
	OTLPExports = Instrument{
		Name: "agentmeter.exporter.otlp.exports", Unit: "{export}", Kind: Counter,
		Prom:        "agentmeter_exporter_otlp_exports_total",
		Description: "OTLP metric exports by outcome.",
		Labels:      "outcome = success / failure",
	}
	GRPCRefused = Instrument{
		Name: "agentmeter.grpc.requests_refused", Unit: "{request}", Kind: Counter,
		Prom:        "agentmeter_grpc_requests_refused_total",
		Description: "gRPC calls refused or failed as a whole, by service and status code (over a bound, invalid, not found, internal).",
		Labels:      "grpc_service, grpc_code",
	}
	GRPCPanics = Instrument{
		Name: "agentmeter.grpc.panics", Unit: "{panic}", Kind: Counter,
		Prom:        "agentmeter_grpc_panics_total",
		Description: "Panics recovered in gRPC handlers, by service (each answered with Internal).",
		Labels:      "grpc_service",
	}
	GRPCInflight = Instrument{
		Name: "agentmeter.grpc.inflight_rpcs", Unit: "{rpc}", Kind: Gauge,
		Prom:        "agentmeter_grpc_inflight_rpcs",
		Description: "gRPC calls in progress, streams included, against receiver.grpc.max_inflight_rpcs.",
	}
	ReceiverInflightBytes = Instrument{
		Name: "agentmeter.receiver.inflight_bytes", Unit: "By", Kind: Gauge,
		Prom:        "agentmeter_receiver_inflight_bytes",
		Description: "Estimated memory of the ingest requests being decoded and applied, against receiver.grpc.max_inflight_mib.",
	}
	SeriesOverflow = Instrument{
		Name: "agentmeter.processor.series_overflow", Unit: "{event}", Kind: Counter,
		Prom:        "agentmeter_processor_series_overflow_total",
		Description: "LLM calls folded into the overflow series because the series bound was reached.",
	}
	ConversationsEvicted = Instrument{
		Name: "agentmeter.processor.conversations_evicted", Unit: "{conversation}", Kind: Counter,
		Prom:        "agentmeter_processor_conversations_evicted_total",
		Description: "Tracked conversations dropped from memory, by reason: idle (idle expiry), capacity (conversations.max_tracked), closed (closed_retention over).",
		Labels:      "reason",
	}
)

// Conversations, budgets, pricing and runtime faults.
var (
	ConversationsCreated = Instrument{
		Name: "agentmeter.conversations.created", Unit: "{conversation}", Kind: Counter,
		Prom:        "agentmeter_conversations_created_total",
		Description: "Conversation creation attempts, by trigger; OpenHands' saas_create_conversation.",
		Labels:      "trigger",
	}
	SessionStartDuration = Instrument{
		Name: "agentmeter.agent.session_start.duration", Unit: "s", Kind: Histogram,
		Prom:        "agentmeter_agent_session_start_duration_seconds",
		Description: "Agent session starts and their duration, by success; OpenHands' saas_agent_session_start.",
		Buckets:     SessionStartBuckets, Labels: "success",
	}
	ConversationsActive = Instrument{
		Name: "agentmeter.conversations.active", Unit: "{conversation}", Kind: Gauge,
		Prom:        "agentmeter_conversations_active",
		Description: "Tracked conversations not closed.",
	}
	ConversationsLimit = Instrument{
		Name: "agentmeter.conversations.limit", Unit: "{conversation}", Kind: Gauge,
		Prom:        "agentmeter_conversations_limit",
		Description: "The agent server's max_concurrent_conversations, as last reported.",
	}
	ConversationsClosed = Instrument{
		Name: "agentmeter.conversations.closed", Unit: "{conversation}", Kind: Counter,
		Prom:        "agentmeter_conversations_closed_total",
		Description: "Conversations closed, by reason (evicted = over max_concurrent_conversations).",
		Labels:      "reason",
	}
	ConversationCost = Instrument{
		Name: "agentmeter.conversation.cost_usd", Unit: "{USD}", Kind: Histogram,
		Prom:        "agentmeter_conversation_cost_usd",
		Description: "Cost of each conversation in USD, observed when it closes.",
		Buckets:     CostBuckets,
	}
	ConversationTokens = Instrument{
		Name: "agentmeter.conversation.tokens", Unit: "{token}", Kind: Histogram,
		Prom:        "agentmeter_conversation_tokens",
		Description: "Input plus output tokens of each conversation, observed when it closes.",
		Buckets:     TokenBuckets,
	}
	RuntimeFaults = Instrument{
		Name: "agentmeter.runtime.faults", Unit: "{fault}", Kind: Counter,
		Prom:        "agentmeter_runtime_faults_total",
		Description: "Sandbox runtime faults, by kind (command timeouts, OOM kills, disconnects).",
		Labels:      "kind",
	}
	BudgetCrossings = Instrument{
		Name: "agentmeter.budget.threshold_crossings", Unit: "{crossing}", Kind: Counter,
		Prom:        "agentmeter_budget_threshold_crossings_total",
		Description: "Conversations whose cost crossed 50, 80 or 100 percent of their budget, once each.",
		Labels:      "threshold = 50 / 80 / 100",
	}
	UnpricedCalls = Instrument{
		Name: "agentmeter.llm.unpriced_calls", Unit: "{call}", Kind: Counter,
		Prom:        "agentmeter_llm_unpriced_calls_total",
		Description: "LLM calls with neither a reported cost nor a price in the table: their cost is unknown, not 0.",
		Labels:      "gen_ai_request_model",
	}
	CacheSavings = Instrument{
		Name: "agentmeter.llm.cache_savings_usd", Unit: "{USD}", Kind: Counter,
		Prom:        "agentmeter_llm_cache_savings_usd_total",
		Description: "What cache reads saved against the uncached input price, in USD.",
	}
	PricingInfo = Instrument{
		Name: "agentmeter.pricing.table_info", Unit: "", Kind: Gauge,
		Prom:        "agentmeter_pricing_table_info",
		Description: "The price table in use (value 1), by version, format, source and as-of date.",
		Labels:      "version, format = litellm / agentmeter, source (file, or the LiteLLM release of the built-in snapshot), as_of (YYYY-MM-DD or empty)",
	}
	PricingReloads = Instrument{
		Name: "agentmeter.pricing.reloads", Unit: "{reload}", Kind: Counter,
		Prom:        "agentmeter_pricing_reloads_total",
		Description: "Price table reloads by outcome; a failed reload keeps the previous table.",
		Labels:      "outcome = success / failure",
	}
	PricingEntries = Instrument{
		Name: "agentmeter.pricing.table_entries", Unit: "{entry}", Kind: Gauge,
		Prom:        "agentmeter_pricing_table_entries",
		Description: "Entries of the price table in use, by state: priced; skipped (not a chat model, no token price); unusable (a bad value: its model stays unpriced); conflicting (model names two entries price differently: both left out, counted once per name).",
		Labels:      "state = priced / skipped / unusable / conflicting",
	}
)

// Ingest auth.
var (
	ReceiverAuthRefused = Instrument{
		Name: "agentmeter.receiver.auth_refused", Unit: "{refusal}", Kind: Counter,
		Prom: "agentmeter_receiver_auth_refused_total",
		Description: "RPCs and connections refused by ingest auth before any request was read, by reason: " +
			"missing_token, malformed_token, wrong_token (bearer token); client_cert_missing, client_cert_untrusted, " +
			"client_cert_expired, not_tls, tls_handshake (TLS handshakes).",
		Labels: "reason",
	}
	ReceiverAuthReloads = Instrument{
		Name: "agentmeter.receiver.auth_reloads", Unit: "{reload}", Kind: Counter,
		Prom:        "agentmeter_receiver_auth_reloads_total",
		Description: "Reloads of the bearer token file and the TLS files after they changed, by outcome; a failed reload keeps what was in service.",
		Labels:      "file = token / tls, outcome = success / failure",
	}
)

// Durable state and sums held at their bound.
var (
	StorageSize = Instrument{
		Name: "agentmeter.storage.size", Unit: "By", Kind: Gauge,
		Prom:        "agentmeter_storage_size_bytes",
		Description: "Disk space the durable state takes (storage.directory), log, dedupe ids and conversations included.",
	}
	StorageWriteFailures = Instrument{
		Name: "agentmeter.storage.write_failures", Unit: "{write}", Kind: Counter,
		Prom:        "agentmeter_storage_write_failures_total",
		Description: "Writes of the durable state that failed, by reason; a failed batch write is answered UNAVAILABLE or RESOURCE_EXHAUSTED and applies nothing.",
		Labels:      "reason = disk_full / error",
	}
	TokenSaturations = Instrument{
		Name: "agentmeter.processor.saturations", Unit: "{sum}", Kind: Counter,
		Prom:        "agentmeter_processor_saturations_total",
		Description: "Token sums held at their maximum (2^63-1) instead of wrapping to a negative value.",
	}
)

// OpenHands webhook feed.
var (
	OpenHandsEvents = Instrument{
		Name: "agentmeter.openhands.events", Unit: "{event}", Kind: Counter,
		Prom: "agentmeter_openhands_events_total",
		Description: "OpenHands webhook events by kind and outcome: applied (translated into agentmeter events), " +
			"ignored (nothing to meter, or an unknown kind), invalid (could not be decoded).",
		Labels: "kind (the event's kind; other for an unknown one), outcome = applied / ignored / invalid",
	}
	OpenHandsRequests = Instrument{
		Name: "agentmeter.openhands.requests", Unit: "{request}", Kind: Counter,
		Prom:        "agentmeter_openhands_requests_total",
		Description: "OpenHands webhook requests by HTTP status code answered.",
		Labels:      "code",
	}
)

// Attribute keys of the OpenHands self-metrics.
const (
	AttrKind = attribute.Key("kind")
	AttrCode = attribute.Key("code")
)

// Values of outcome of the OpenHands events.
const (
	OutcomeApplied = "applied"
	OutcomeIgnored = "ignored"
	OutcomeInvalid = "invalid"
)

// All lists every instrument in catalogue order.
var All = []Instrument{
	TokenUsage, OperationDuration, TimeToFirstChunk, LLMTokens, LLMCost, ContextUtilization,
	StatusTransitions, AgentConversations, ReceiverEvents, OTLPExports,
	GRPCRefused, GRPCPanics, GRPCInflight, ReceiverInflightBytes, SeriesOverflow, ConversationsEvicted,
	ConversationsCreated, SessionStartDuration, ConversationsActive, ConversationsLimit,
	ConversationsClosed, ConversationCost, ConversationTokens, RuntimeFaults,
	BudgetCrossings, UnpricedCalls, CacheSavings, PricingInfo, PricingReloads, PricingEntries,
	ReceiverAuthRefused, ReceiverAuthReloads,
	StorageSize, StorageWriteFailures, TokenSaturations, OpenHandsEvents, OpenHandsRequests,
}

// Int64ObservableCounter creates the instrument on m with its catalogue name,
// unit and description.
func (i Instrument) Int64ObservableCounter(m metric.Meter) (metric.Int64ObservableCounter, error) {
	c, err := m.Int64ObservableCounter(i.Name, metric.WithUnit(i.Unit), metric.WithDescription(i.Description))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", i.Name, err)
	}
	return c, nil
}

// Int64ObservableGauge creates the instrument on m with its catalogue name,
// unit and description.
func (i Instrument) Int64ObservableGauge(m metric.Meter) (metric.Int64ObservableGauge, error) {
	g, err := m.Int64ObservableGauge(i.Name, metric.WithUnit(i.Unit), metric.WithDescription(i.Description))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", i.Name, err)
	}
	return g, nil
}
