// Package pricing prices an LLM call that its agent sent without a cost,
// from a price table: per-token list prices of each provider's models.
//
// # Tables
//
// A table is read from LiteLLM's model_prices_and_context_window.json as
// it is, or from agentmeter's own format (below). The built-in table
// ([Default]) is a snapshot of LiteLLM's list, embedded gzipped in
// pricing/snapshot with the litellm release and date it was taken from. A
// [Source] names a table file, its format (told from the file when not
// declared, see [DetectFormat]) and an overrides file in agentmeter's
// format layered on top.
//
// From a LiteLLM file, entries of mode chat, responses and completion (or
// no mode) are read; the others are skipped and counted in the table's
// [Report]. Read are input_cost_per_token, output_cost_per_token,
// cache_read_input_token_cost (else input_cost_per_token_cache_hit),
// cache_creation_input_token_cost, cache_creation_input_token_cost_above_1hr,
// output_cost_per_reasoning_token, every *_above_<N>[k]_tokens tier of
// these (a rate a tier does not state stays the one below it, as litellm
// bills; xAI's tiers apply from the threshold on), tiered_pricing
// brackets and off_peak_pricing windows (applied at the call's time, see
// [ModelPrice.CostAt]). Per-token prices become per-million ones. An entry with an
// unusable value (negative, not a number, no litellm_provider) is skipped
// and listed; two entries that name one model of one provider at different
// prices are both left out and listed, unless one is the unprefixed key.
// Price fields a call's token counts cannot express (batch, flex and
// priority tiers, audio and image tokens, 12-hour cache writes, uplifts)
// are counted as unused. A file that is not a JSON object
// of entries, repeats a key or prices no chat model is refused whole.
//
// An overrides entry replaces the base table's entry of the same provider
// and name; with effective_from it is in force only from that time on, the
// base price before it. An override's aliases take their names over from the
// base table. A (provider, name) may be declared more than once in one file
// with different effective_from dates: its prices over time.
//
// # Hot path
//
// The collector keeps a [Watcher] as the processor's Pricer; for each
// LLMCall without cost_usd it does
//
//	cost, saved, ok := w.Price(call.GetProvider(), call.GetResponseModel(), eventTime, pricing.FromLLMCall(call))
//
// which looks the model up, takes the price in force at the event's time
// and prices the call. A (provider, model) pair seen before costs one map
// read under a read lock, and the call does not allocate. The lookups are memoised per Table, at
// most 4096 pairs (the memo is cleared when full) and only for names of up
// to 256 bytes, so a client sending random model names cannot grow memory.
//
// # Cost
//
// Token counts follow agentmeter's wire contract (OpenAI, litellm and
// OpenTelemetry's convention): the prompt INCLUDES the cache reads and
// writes, the completion INCLUDES the reasoning tokens. See [Usage] and
// [ModelPrice.Cost] for the formula, and FromOpenAIUsage, FromAnthropicUsage,
// FromLiteLLMUsage and FromBedrockUsage for mapping each provider's usage
// object to it (Anthropic and Bedrock count input tokens without the cache).
//
// # agentmeter's format
//
// agentmeter's own table (used for pricing.overrides, and possible as a
// whole table) is a YAML (.yaml, .yml) or JSON (.json) file. Decoding is strict:
// an unknown or repeated key is an error, as is a quoted number. Every
// problem of a file is reported at once, each with its line and path, e.g.
//
//	line 41: models[3].cache_read: must not be negative, got -0.3
//
// Prices are in USD per million tokens, as providers publish them.
//
//	# Optional. Version() returns it; without it, "sha256:" and the first
//	# 12 hex digits of the file's SHA-256.
//	version: "2025-11-24"
//	# Optional: the date the prices were taken from the sources, YYYY-MM-DD.
//	as_of: 2025-11-24
//	# Optional: the providers' pricing pages, http(s) URLs.
//	sources:
//	  - https://docs.claude.com/en/docs/about-claude/pricing
//	# Optional: more provider aliases (see Matching), alias: canonical name.
//	provider_aliases:
//	  my_gateway: openai
//	# Required, at least one entry.
//	models:
//	  - provider: anthropic          # required: gen_ai.provider.name
//	    name: claude-sonnet-4-20250514 # required, unique per provider
//	    aliases: [claude-sonnet-4-0, claude-sonnet-4]
//	    patterns: ["claude-sonnet-4-*"]
//	    input: 3.00                  # required
//	    output: 15.00                # required; reasoning tokens are output
//	    cache_read: 0.30             # default: input
//	    cache_write: 3.75            # 5-minute cache write; default: input
//	    cache_write_1h: 6.00         # 1-hour cache write; default: cache_write
//	    reasoning: 15.00             # reasoning tokens; default: output
//	    effective_from: 2026-03-01   # optional: date or RFC 3339 time the price starts
//	    tiers:                       # optional long-context tiers
//	      - threshold: 200000        # required, > 0
//	        input: 6.00              # required
//	        output: 22.50            # required
//	        cache_read: 0.60         # defaults as above, from the tier's input
//	        cache_write: 7.50
//	        cache_write_1h: 12.00
//
// A price must be a finite number >= 0 (0 is a free model). A tier applies
// when the call's prompt tokens (cache reads and writes included) are MORE
// than its threshold, and then every price of the call is the tier's: with
// several tiers, the one with the highest threshold the prompt exceeds. Two
// tiers of a model may not share a threshold; a model has at most 16.
//
// The fallbacks for absent cache prices are deliberate: cache_read and
// cache_write default to input (a provider that bills no cache discount or
// premium), cache_write_1h defaults to cache_write; LiteLLM's list
// defaults the same way, and relies on it for OpenAI before GPT-5.6 (no
// cache-write charge) and Gemini (cache storage is billed per hour, which a
// per-call price cannot express).
//
// YAML anchors and aliases work; merge keys (<<) do not. A file has one
// document and at most 8 MiB, 10000 models and 256 aliases or patterns per
// model. The document walking is internal/yamldecode, shared with the
// config.
//
// Validation rejects, naming the path: a negative, NaN or infinite price; a
// missing input or output; a missing provider or name, or an empty one; a
// name, alias or pattern declared twice for the same provider (names and
// aliases share one namespace, compared case-insensitively; a name may be
// declared again with another effective_from, without aliases or patterns); a tier without
// a threshold or with one <= 0; a pattern that is not valid path.Match
// syntax or has no wildcard (list it under aliases instead); an as_of that
// is not a date; a source that is not an http(s) URL.
//
// # Matching
//
// Provider and model names are compared case-insensitively, without
// surrounding spaces. A lookup (provider, model):
//
//  1. Canonicalises the provider through the provider aliases. Built in:
//     bedrock, bedrock_converse and aws_bedrock are aws.bedrock; vertex_ai,
//     vertex_ai_beta, vertexai and every vertex_ai-* are gcp.vertex_ai;
//     gemini is gcp.gemini; azure and azure_text are azure.ai.openai;
//     azure_ai is azure.ai.inference; xai is x_ai; mistral is mistral_ai;
//     text-completion-openai is openai; cohere_chat is cohere; watsonx is
//     ibm.watsonx.ai. A LiteLLM entry's litellm_provider is canonicalised
//     so, and its key loses a prefix naming that provider
//     ("gemini/gemini-3.1-pro-preview" is gcp.gemini's
//     "gemini-3.1-pro-preview"). The table's
//     provider_aliases add to these and override them; "x: x" makes x a
//     provider of its own. A model entry's provider is canonicalised the
//     same way.
//  2. Strips litellm-style prefixes from the model: while the model has a
//     "/", is not itself a name of the provider (LiteLLM's
//     "azure/eu/gpt-5.1" is azure.ai.openai's "eu/gpt-5.1"), and the part
//     before the "/" is a provider of the table or a provider alias, that
//     part is removed ("anthropic/claude-sonnet-4-0",
//     "openai/gpt-4o", "bedrock/us.anthropic..."); after aws.bedrock, so are
//     litellm's "converse/" and "invoke/" routes. When the call has no
//     provider, the first prefix becomes its provider; when it has one, the
//     call's provider wins.
//  3. Tries the model as sent, then, for a Bedrock cross-region inference
//     profile id (us., us-gov., eu., apac., jp., au., ca. or global.
//     followed by vendor.model), the id without that prefix: so
//     "us.anthropic.claude-sonnet-4-20250514-v1:0" finds the entry
//     "anthropic.claude-sonnet-4-20250514-v1:0", while an entry named
//     "global.anthropic..." (priced differently) is found first for its
//     own id.
//     A Bedrock id is also tried with its ":0" version added or removed.
//  4. Within the provider, an exact name beats an alias, which beats a
//     pattern (of the model as sent before the model without its region);
//     among patterns the longest wins, and between patterns of equal
//     length the first declared (overrides first). A pattern is a
//     path.Match glob ("*" does not cross "/"), except that a pattern
//     whose only wildcard is a final "*" is a plain prefix, which does.
//     The match is reported as exact, alias (an alias, or the name without
//     its region or version) or pattern; see [Table.Lookup].
//
// A pattern never lends a model another model's long-context tiers: a
// model found only by a pattern is priced at its entry's base prices below
// the entry's first tier, and is unpriced from it on ([ModelPrice.Covers]).
//  5. With no provider, every provider is searched; the best match (by
//     the order of step 4) wins if it is unambiguous: one provider matches
//     at that rank, or all that do charge the same prices. Otherwise the
//     call is unpriced.
//
// # Reloading
//
// [Watcher] serves the current table from an atomic pointer, reloads it on
// Reload (SIGHUP) and when the file changes, and keeps the previous table
// when a new one fails to load; see its documentation.
//
// The built-in table (Default) is a snapshot of LiteLLM's price list,
// embedded gzipped in pricing/snapshot with the release it was taken from
// and the date; scripts/refresh-prices.sh takes a new one from the newest
// litellm release on PyPI.
package pricing
