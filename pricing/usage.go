package pricing

import agentmeterv1 "github.com/agentmeter/agentmeter/proto/agentmeter/v1"

// FromLLMCall returns the Usage of an LLMCall event. The wire contract
// already follows agentmeter's convention, so this only copies fields.
func FromLLMCall(c *agentmeterv1.LLMCall) Usage {
	return Usage{
		Prompt:       c.GetPromptTokens(),
		Completion:   c.GetCompletionTokens(),
		CacheRead:    c.GetCacheReadTokens(),
		CacheWrite:   c.GetCacheWriteTokens(),
		CacheWrite1h: c.GetCacheWrite_1HTokens(),
		Reasoning:    c.GetReasoningTokens(),
	}
}

// OpenAIUsage is the "usage" object of an OpenAI chat completion (and of
// litellm's ModelResponse for any provider), decoded with encoding/json.
type OpenAIUsage struct {
	// PromptTokens includes PromptTokensDetails.CachedTokens.
	PromptTokens int64 `json:"prompt_tokens"`
	// CompletionTokens includes CompletionTokensDetails.ReasoningTokens.
	CompletionTokens        int64                          `json:"completion_tokens"`
	TotalTokens             int64                          `json:"total_tokens"`
	PromptTokensDetails     *OpenAIPromptTokensDetails     `json:"prompt_tokens_details"`
	CompletionTokensDetails *OpenAICompletionTokensDetails `json:"completion_tokens_details"`
}

// OpenAIPromptTokensDetails is usage.prompt_tokens_details.
type OpenAIPromptTokensDetails struct {
	// CachedTokens is the prompt tokens read from the cache.
	CachedTokens int64 `json:"cached_tokens"`
	AudioTokens  int64 `json:"audio_tokens"`
}

// OpenAICompletionTokensDetails is usage.completion_tokens_details.
type OpenAICompletionTokensDetails struct {
	ReasoningTokens int64 `json:"reasoning_tokens"`
	AudioTokens     int64 `json:"audio_tokens"`
}

// FromOpenAIUsage maps an OpenAI chat completion usage to Usage. OpenAI's
// counts are already inclusive; it bills no cache writes.
func FromOpenAIUsage(u OpenAIUsage) Usage {
	out := Usage{Prompt: u.PromptTokens, Completion: u.CompletionTokens}
	if u.PromptTokensDetails != nil {
		out.CacheRead = u.PromptTokensDetails.CachedTokens
	}
	if u.CompletionTokensDetails != nil {
		out.Reasoning = u.CompletionTokensDetails.ReasoningTokens
	}
	return out
}

// AnthropicUsage is the "usage" object of an Anthropic Messages API
// response, where input_tokens EXCLUDES the cache reads and writes.
type AnthropicUsage struct {
	InputTokens              int64 `json:"input_tokens"`
	OutputTokens             int64 `json:"output_tokens"`
	CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
	// CacheCreation splits CacheCreationInputTokens by retention.
	CacheCreation *AnthropicCacheCreation `json:"cache_creation"`
}

// AnthropicCacheCreation is the split of cache writes by retention, used
// by Anthropic (usage.cache_creation) and litellm
// (usage.prompt_tokens_details.cache_creation_token_details).
type AnthropicCacheCreation struct {
	Ephemeral5mInputTokens int64 `json:"ephemeral_5m_input_tokens"`
	Ephemeral1hInputTokens int64 `json:"ephemeral_1h_input_tokens"`
}

// FromAnthropicUsage maps an Anthropic Messages API usage to Usage:
// Prompt = input + cache writes + cache reads. Cache writes are 5-minute
// ones unless cache_creation says some were 1-hour.
func FromAnthropicUsage(u AnthropicUsage) Usage {
	w5, w1h := splitCacheWrites(u.CacheCreationInputTokens, u.CacheCreation)
	return Usage{
		Prompt:       u.InputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens,
		Completion:   u.OutputTokens,
		CacheRead:    u.CacheReadInputTokens,
		CacheWrite:   w5,
		CacheWrite1h: w1h,
	}
}

// splitCacheWrites splits total cache writes into 5-minute and 1-hour ones:
// the 1-hour count as reported, the rest 5-minute.
func splitCacheWrites(total int64, split *AnthropicCacheCreation) (w5, w1h int64) {
	if split == nil {
		return total, 0
	}
	w1h = min(max(split.Ephemeral1hInputTokens, 0), total)
	return total - w1h, w1h
}

// LiteLLMUsage is the "usage" object of a litellm ModelResponse (litellm's
// OpenAI-shaped usage, here for an Anthropic model): PromptTokens =
// input_tokens + cache_creation_input_tokens + cache_read_input_tokens.
type LiteLLMUsage struct {
	PromptTokens             int64                          `json:"prompt_tokens"`
	CompletionTokens         int64                          `json:"completion_tokens"`
	TotalTokens              int64                          `json:"total_tokens"`
	CacheCreationInputTokens int64                          `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int64                          `json:"cache_read_input_tokens"`
	PromptTokensDetails      *LiteLLMPromptTokensDetails    `json:"prompt_tokens_details"`
	CompletionTokensDetails  *OpenAICompletionTokensDetails `json:"completion_tokens_details"`
}

// LiteLLMPromptTokensDetails is litellm's usage.prompt_tokens_details.
type LiteLLMPromptTokensDetails struct {
	CachedTokens              int64                   `json:"cached_tokens"`
	CacheCreationTokens       int64                   `json:"cache_creation_tokens"`
	CacheCreationTokenDetails *AnthropicCacheCreation `json:"cache_creation_token_details"`
}

// FromLiteLLMUsage maps a litellm usage to Usage. Cache reads come from
// cache_read_input_tokens, else prompt_tokens_details.cached_tokens; cache
// writes from cache_creation_input_tokens, else
// prompt_tokens_details.cache_creation_tokens, split by retention with
// prompt_tokens_details.cache_creation_token_details.
func FromLiteLLMUsage(u LiteLLMUsage) Usage {
	read, write := u.CacheReadInputTokens, u.CacheCreationInputTokens
	var split *AnthropicCacheCreation
	if d := u.PromptTokensDetails; d != nil {
		if read == 0 {
			read = d.CachedTokens
		}
		if write == 0 {
			write = d.CacheCreationTokens
		}
		split = d.CacheCreationTokenDetails
	}
	w5, w1h := splitCacheWrites(write, split)
	var reasoning int64
	if u.CompletionTokensDetails != nil {
		reasoning = u.CompletionTokensDetails.ReasoningTokens
	}
	return Usage{
		Prompt:       u.PromptTokens,
		Completion:   u.CompletionTokens,
		CacheRead:    read,
		CacheWrite:   w5,
		CacheWrite1h: w1h,
		Reasoning:    reasoning,
	}
}

// BedrockUsage is the "usage" object of a Bedrock Converse response, where
// inputTokens EXCLUDES the cache reads and writes.
type BedrockUsage struct {
	InputTokens           int64 `json:"inputTokens"`
	OutputTokens          int64 `json:"outputTokens"`
	TotalTokens           int64 `json:"totalTokens"`
	CacheReadInputTokens  int64 `json:"cacheReadInputTokens"`
	CacheWriteInputTokens int64 `json:"cacheWriteInputTokens"`
	// CacheDetails splits CacheWriteInputTokens by TTL ("5m", "1h").
	CacheDetails []BedrockCacheDetail `json:"cacheDetails"`
}

// BedrockCacheDetail is one entry of usage.cacheDetails.
type BedrockCacheDetail struct {
	TTL         string `json:"ttl"`
	InputTokens int64  `json:"inputTokens"`
}

// FromBedrockUsage maps a Bedrock Converse usage to Usage: Prompt =
// inputTokens + cacheReadInputTokens + cacheWriteInputTokens; cache writes
// are 5-minute ones except those cacheDetails lists with ttl "1h".
func FromBedrockUsage(u BedrockUsage) Usage {
	var oneHour int64
	for _, d := range u.CacheDetails {
		if d.TTL == "1h" {
			oneHour += d.InputTokens
		}
	}
	w5, w1h := splitCacheWrites(u.CacheWriteInputTokens, &AnthropicCacheCreation{Ephemeral1hInputTokens: oneHour})
	return Usage{
		Prompt:       u.InputTokens + u.CacheReadInputTokens + u.CacheWriteInputTokens,
		Completion:   u.OutputTokens,
		CacheRead:    u.CacheReadInputTokens,
		CacheWrite:   w5,
		CacheWrite1h: w1h,
	}
}
