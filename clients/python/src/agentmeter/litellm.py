"""litellm integration: every litellm call of the process becomes an ``llm_call`` event.

    import litellm
    from agentmeter.litellm import AgentmeterCallback

    litellm.callbacks = [AgentmeterCallback()]          # or AgentmeterCallback(client)

The conversation and the LLM's role come from the call's
``metadata={"conversation_id": ..., "llm_service": ...}``, else from the
enclosing ``with agentmeter.conversation("id", llm_service="agent"):``.

Requires the ``litellm`` package (``pip install agentmeter[litellm]``).
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from . import _context
from ._client import Client

__all__ = ["PROVIDER_NAMES", "AgentmeterCallback", "provider_name"]

_log = logging.getLogger("agentmeter")

#: litellm's ``custom_llm_provider`` → OpenTelemetry ``gen_ai.provider.name``
#: (semantic conventions v1.41.0). A provider not listed keeps litellm's name.
PROVIDER_NAMES: Mapping[str, str] = {
    "openai": "openai",
    "text-completion-openai": "openai",
    "anthropic": "anthropic",
    "anthropic_text": "anthropic",
    "bedrock": "aws.bedrock",
    "bedrock_converse": "aws.bedrock",
    "aws_bedrock": "aws.bedrock",
    "vertex_ai": "gcp.vertex_ai",
    "vertex_ai_beta": "gcp.vertex_ai",
    "vertexai": "gcp.vertex_ai",
    "gemini": "gcp.gemini",
    "azure": "azure.ai.openai",
    "azure_text": "azure.ai.openai",
    "azure_ai": "azure.ai.inference",
    "xai": "x_ai",
    "deepseek": "deepseek",
    "mistral": "mistral_ai",
    "codestral": "mistral_ai",
    "groq": "groq",
    "cohere": "cohere",
    "cohere_chat": "cohere",
    "perplexity": "perplexity",
    "watsonx": "ibm.watsonx.ai",
    "watsonx_text": "ibm.watsonx.ai",
}

# litellm call types → gen_ai.operation.name.
_OPERATIONS: Mapping[str, str] = {
    "completion": "chat",
    "acompletion": "chat",
    "anthropic_messages": "chat",
    "responses": "chat",
    "aresponses": "chat",
    "text_completion": "text_completion",
    "atext_completion": "text_completion",
    "embedding": "embeddings",
    "aembedding": "embeddings",
}

# Conversation scopes captured before a call, for the callbacks litellm runs
# on its own threads (a streamed call's success runs without the caller's context).
_MAX_PENDING_SCOPES = 10000


def provider_name(custom_llm_provider: str | None) -> str:
    """The gen_ai.provider.name of a litellm provider ("bedrock" → "aws.bedrock")."""
    p = (custom_llm_provider or "").strip().lower()
    return PROVIDER_NAMES.get(p, p)


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _count(value: Any) -> int:
    """A token count as litellm reports it; None and junk are 0."""
    if isinstance(value, bool) or value is None:
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return 0


def _seconds(start: Any, end: Any) -> float:
    if isinstance(start, _dt.datetime) and isinstance(end, _dt.datetime):
        return max((end - start).total_seconds(), 0.0)
    if isinstance(start, (int, float)) and isinstance(end, (int, float)):
        return max(float(end) - float(start), 0.0)
    return 0.0


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


class AgentmeterCallback(CustomLogger):
    """A litellm ``CustomLogger`` that records each call as an agentmeter ``llm_call``.

    ``client`` is the :class:`agentmeter.Client` to record with; without one,
    the callback makes its own, on ``target`` (default ``$AGENTMETER_TARGET``,
    else ``localhost:4320``) with ``client_options``.

    Per call it records: the provider (``custom_llm_provider`` mapped to
    ``gen_ai.provider.name``), request and response model, response id, prompt
    and completion tokens, cache reads, 5-minute and 1-hour cache writes,
    reasoning tokens, latency, time to first token when streamed, the model's
    context window when litellm knows it, ``cost_usd`` when litellm priced
    the call (left unset, for the sidecar to price, when litellm could not),
    and ``error_type`` (the exception's class) when the call failed. A response
    litellm serves from its own cache is no LLM call and is not recorded.
    Recording never raises into litellm and never blocks it.
    """

    def __init__(self, client: Client | None = None, *, target: str | None = None, **client_options: Any) -> None:
        super().__init__()
        if client is None:
            client = Client(target or os.environ.get("AGENTMETER_TARGET") or "localhost:4320", **client_options)
        self.client = client
        self._lock = threading.Lock()
        self._scopes: OrderedDict[str, _context.Scope] = OrderedDict()  # guarded by _lock

    # -- litellm hooks --------------------------------------------------------------

    def log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
        try:
            scope = _context.current()
            call_id = _str(_get(kwargs, "litellm_call_id"))
            if scope is not None and call_id:
                with self._lock:
                    self._scopes[call_id] = scope
                    while len(self._scopes) > _MAX_PENDING_SCOPES:
                        self._scopes.popitem(last=False)
        except Exception:  # noqa: BLE001 - never fail the caller's LLM call
            _log.exception("agentmeter: litellm pre-call hook failed")

    def log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._record(kwargs, response_obj, start_time, end_time, failed=False)

    def log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._record(kwargs, response_obj, start_time, end_time, failed=True)

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._record(kwargs, response_obj, start_time, end_time, failed=False)

    async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._record(kwargs, response_obj, start_time, end_time, failed=True)

    # -- the event ------------------------------------------------------------------

    def _record(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any, *, failed: bool) -> bool:
        try:
            return self._record_call(kwargs, response_obj, start_time, end_time, failed)
        except Exception as err:  # noqa: BLE001 - a surprise in litellm's data must not reach the agent
            return self.client._refuse("litellm call", err)

    def _record_call(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any, failed: bool) -> bool:
        if not isinstance(kwargs, Mapping):
            kwargs = {}
        slo = kwargs.get("standard_logging_object") or {}
        if kwargs.get("cache_hit") is True or _get(slo, "cache_hit") is True:
            return False  # served from litellm's cache: no LLM call was made
        params = kwargs.get("litellm_params") or {}
        metadata = _get(params, "metadata") or {}

        call_id = _str(kwargs.get("litellm_call_id"))
        with self._lock:
            scope = self._scopes.pop(call_id, None) if call_id else None
        if scope is None:
            scope = _context.current()
        conversation_id = _str(_get(metadata, "conversation_id")) or (scope.conversation_id if scope else "")
        llm_service = _str(_get(metadata, "llm_service")) or (scope.llm_service if scope else "")

        usage = _get(response_obj, "usage")
        prompt = _count(_get(usage, "prompt_tokens")) or _count(slo.get("prompt_tokens"))
        completion = _count(_get(usage, "completion_tokens")) or _count(slo.get("completion_tokens"))
        details = _get(usage, "prompt_tokens_details")
        cache_read = _count(_get(details, "cached_tokens")) or _count(_get(usage, "cache_read_input_tokens"))
        cache_write = (
            _count(_get(details, "cache_creation_tokens"))
            or _count(_get(details, "cache_write_tokens"))
            or _count(_get(usage, "cache_creation_input_tokens"))
        )
        # Anthropic's split of the writes by retention; writes kept an hour or
        # more are billed at the 1-hour price.
        split = _get(details, "cache_creation_token_details")
        write_1h = _count(_get(split, "ephemeral_1h_input_tokens")) + _count(_get(split, "ephemeral_12h_input_tokens"))
        cache_write = max(cache_write, write_1h)
        reasoning = _count(_get(_get(usage, "completion_tokens_details"), "reasoning_tokens"))

        latency = _seconds(start_time, end_time) or _seconds(slo.get("startTime"), slo.get("endTime"))
        ttft = 0.0
        if kwargs.get("stream") or slo.get("stream"):
            ttft = min(_seconds(start_time, kwargs.get("completion_start_time")), latency)

        error_type = ""
        if failed:
            exc = kwargs.get("exception")
            error_info = slo.get("error_information") or {}
            error_type = (
                type(exc).__name__ if isinstance(exc, BaseException) else _str(_get(error_info, "error_class"))
            ) or "error"

        call_type = _str(kwargs.get("call_type")) or _str(slo.get("call_type"))
        return self.client.llm_call(
            conversation_id=conversation_id or None,
            provider=provider_name(_str(kwargs.get("custom_llm_provider")) or _str(slo.get("custom_llm_provider"))),
            request_model=_str(kwargs.get("model")) or _str(slo.get("model")),
            response_model=_str(_get(response_obj, "model")),
            response_id=_str(_get(response_obj, "id")),
            llm_service=llm_service,
            operation=_OPERATIONS.get(call_type, call_type or "chat"),
            prompt_tokens=prompt,
            completion_tokens=completion,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write - write_1h,
            cache_write_1h_tokens=write_1h,
            reasoning_tokens=reasoning,
            context_window=self._context_window(slo),
            latency_seconds=latency,
            time_to_first_token_seconds=ttft,
            cost_usd=self._cost(kwargs, slo, prompt + completion),
            error_type=error_type,
        )

    @staticmethod
    def _context_window(slo: Mapping[str, Any]) -> int:
        info = _get(_get(slo.get("model_map_information"), "model_map_value"), "max_input_tokens")
        return info if isinstance(info, int) and not isinstance(info, bool) and info > 0 else 0

    @staticmethod
    def _cost(kwargs: Mapping[str, Any], slo: Mapping[str, Any], tokens: int) -> float | None:
        """litellm's price of the call, or None when litellm could not price it.

        litellm reports 0.0 both for a free model and for one missing from its
        price map; only the first is a price."""
        cost = kwargs.get("response_cost", slo.get("response_cost"))
        if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not math.isfinite(cost) or cost < 0:
            return None
        if slo.get("response_cost_failure_debug_info") or slo.get("zero_cost_diagnostic"):
            return None
        if cost > 0 or tokens == 0:
            return float(cost)
        return 0.0 if _in_litellm_price_map(slo) else None


def _in_litellm_price_map(slo: Mapping[str, Any]) -> bool:
    import litellm

    info = slo.get("model_map_information") or {}
    keys = (_get(info, "model_map_key"), _get(_get(info, "model_map_value"), "key"))
    return any(isinstance(k, str) and k in litellm.model_cost for k in keys)
