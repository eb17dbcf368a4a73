package openhands

import (
	"encoding/json"
	"strings"
)

// The shapes of OpenHands' V1 agent-server webhook feed that agentmeter
// reads (openhands-sdk 1.43: sdk/event/, sdk/llm/utils/metrics.py,
// agent_server/conversation_service.py). Every other field is ignored.

// event is one element of the array POSTed to {base}/events/{id}. The
// top-level "kind" is the event class.
type event struct {
	ID   string `json:"id"`
	Kind string `json:"kind"`

	// ConversationStateUpdateEvent
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`

	// ConversationErrorEvent
	Code           string          `json:"code"`
	Detail         string          `json:"detail"`
	Classification *classification `json:"classification"`

	// ObservationEvent
	Observation *observation `json:"observation"`

	// LLMCompletionLogEvent
	LogData   string `json:"log_data"`
	ModelName string `json:"model_name"`
	UsageID   string `json:"usage_id"`
}

type classification struct {
	Kind string `json:"kind"`
}

type observation struct {
	Kind     string    `json:"kind"`
	ExitCode *int64    `json:"exit_code"`
	Metadata *metadata `json:"metadata"`
}

type metadata struct {
	ExitCode *int64 `json:"exit_code"`
	Suffix   string `json:"suffix"`
}

// stats is the value of a "stats" update, and the stats of full_state and
// ConversationInfo: a MetricsSnapshot (or full Metrics) per usage_id.
type stats struct {
	UsageToMetrics map[string]metricsSnapshot `json:"usage_to_metrics"`
}

type metricsSnapshot struct {
	ModelName             string            `json:"model_name"`
	AccumulatedCost       float64           `json:"accumulated_cost"`
	MaxBudgetPerTask      *float64          `json:"max_budget_per_task"`
	AccumulatedTokenUsage *tokenUsage       `json:"accumulated_token_usage"`
	ResponseLatencies     []responseLatency `json:"response_latencies"`
}

type tokenUsage struct {
	Model            string `json:"model"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	CacheReadTokens  int64  `json:"cache_read_tokens"`
	CacheWriteTokens int64  `json:"cache_write_tokens"`
	ReasoningTokens  int64  `json:"reasoning_tokens"`
	ContextWindow    int64  `json:"context_window"`
}

type responseLatency struct {
	Model      string  `json:"model"`
	Latency    float64 `json:"latency"`
	ResponseID string  `json:"response_id"`
}

// conversationState is the value of a "full_state" update (the parts read).
type conversationState struct {
	ExecutionStatus string `json:"execution_status"`
	Stats           *stats `json:"stats"`
}

// conversationInfo is the body POSTed to {base}/conversations.
type conversationInfo struct {
	ID              string `json:"id"`
	ExecutionStatus string `json:"execution_status"`
	Stats           *stats `json:"stats"`
	UpdatedAt       string `json:"updated_at"`
}

// completionLog is the log_data of an LLMCompletionLogEvent (the parts read).
type completionLog struct {
	LatencySec float64 `json:"latency_sec"`
	Response   struct {
		ID string `json:"id"`
	} `json:"response"`
}

// NormalizeID returns the 32-lowercase-hex form of an OpenHands
// conversation id (given as such, or as a dashed UUID), and false when it is
// neither.
func NormalizeID(id string) (string, bool) {
	if len(id) == 36 {
		if id[8] != '-' || id[13] != '-' || id[18] != '-' || id[23] != '-' {
			return "", false
		}
		id = id[:8] + id[9:13] + id[14:18] + id[19:23] + id[24:]
	}
	if len(id) != 32 {
		return "", false
	}
	id = strings.ToLower(id)
	for i := range len(id) {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", false
		}
	}
	return id, true
}

// providerAliases maps litellm provider segments of a model name to
// gen_ai.provider.name values; others are kept as written.
var providerAliases = map[string]string{
	"bedrock":          "aws.bedrock",
	"bedrock_converse": "aws.bedrock",
	"vertex_ai":        "gcp.vertex_ai",
	"vertex_ai_beta":   "gcp.vertex_ai",
	"gemini":           "gcp.gemini",
	"azure":            "azure.ai.openai",
	"azure_ai":         "azure.ai.inference",
	"xai":              "x_ai",
	"mistral":          "mistral_ai",
	"watsonx":          "ibm.watsonx.ai",
}

// splitModel turns an OpenHands (litellm) model name into the provider and
// request model: "litellm_proxy/anthropic/claude-sonnet-4-5" is anthropic
// and claude-sonnet-4-5; "litellm_proxy/minimax-m2.7" has no provider.
func splitModel(name string) (provider, model string) {
	name = strings.TrimPrefix(name, "litellm_proxy/")
	seg, rest, ok := strings.Cut(name, "/")
	if !ok || seg == "" || rest == "" {
		return "", name
	}
	if p, ok := providerAliases[seg]; ok {
		return p, rest
	}
	return seg, rest
}
