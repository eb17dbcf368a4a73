"""agentmeter.litellm.AgentmeterCallback with the real litellm package against local fake
OpenAI and Anthropic HTTP APIs (tests/fake_llm.py) and the real collector binary."""

from __future__ import annotations

import asyncio
import math
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no internet: litellm's bundled prices

import litellm  # noqa: E402

import agentmeter  # noqa: E402
from agentmeter.litellm import AgentmeterCallback, provider_name  # noqa: E402
from conftest import TEST_MODEL, Sidecar, eventually, test_model_cost  # noqa: E402
from fake_llm import FakeLLM, Reply  # noqa: E402

MSGS = [{"role": "user", "content": "hello"}]
# A model litellm has no price for; the sidecar prices it from the tests' table.
CLAUDE = TEST_MODEL


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLLM]:
    f = FakeLLM().start()
    yield f
    f.stop()


@pytest.fixture
def callback(priced_sidecar: Sidecar) -> Iterator[AgentmeterCallback]:
    client = agentmeter.Client(priced_sidecar.target, agent="litellm-agent")
    cb = AgentmeterCallback(client)
    saved = litellm.callbacks
    litellm.callbacks = [cb]
    yield cb
    litellm.callbacks = saved
    # litellm copies callbacks into its own lists and ignores a second instance of the same
    # logger class while the first is there: take this one out for the next test.
    litellm.logging_callback_manager.remove_callback_from_all_lists(cb)
    client.close()


def gpt4o_cost(prompt: int, completion: int, cached: int = 0) -> float:
    """What litellm's own price map says a gpt-4o call costs, computed here."""
    p = litellm.model_cost["gpt-4o"]
    return ((prompt - cached) * p["input_cost_per_token"] + cached * p["cache_read_input_token_cost"]
            + completion * p["output_cost_per_token"])


def openai_kw(fake: FakeLLM, **kw: Any) -> dict[str, Any]:
    return dict(api_base=fake.base_url + "/v1", api_key="sk-fake", messages=MSGS, **kw)


def anthropic_kw(fake: FakeLLM, **kw: Any) -> dict[str, Any]:
    return dict(api_base=fake.base_url, api_key="sk-ant-fake", messages=MSGS, **kw)


def handed_over(cb: AgentmeterCallback) -> int:
    st = cb.client.stats
    return st.queued + st.sent + st.dropped + st.invalid


def wait_recorded(cb: AgentmeterCallback, n: int) -> None:
    """litellm runs success callbacks on its own threads: wait until n events were handed over."""
    eventually(f"{n} litellm events recorded", lambda: handed_over(cb) >= n)
    assert cb.client.flush(20)


async def wait_recorded_async(cb: AgentmeterCallback, n: int, timeout: float = 20.0) -> None:
    """litellm runs async callbacks as tasks on the caller's event loop: keep it running until they ran."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while handed_over(cb) < n:
        if loop.time() > deadline:
            pytest.fail(f"after {timeout}s, {handed_over(cb)} of {n} litellm events recorded")
        await asyncio.sleep(0.02)


def check_sidecar(s: Sidecar, cid: str, *, calls: int, failed: int, input_: int, output: int, cache_read: int,
                  cache_write: int, cache_write_1h: int, reasoning: int, reported: float, computed: float,
                  unpriced: int) -> None:
    u = s.usage(cid)
    assert u is not None, f"conversation {cid} not tracked"
    got = (u.calls, u.failed_calls, u.tokens.input, u.tokens.output, u.tokens.cache_read, u.tokens.cache_write,
           u.tokens.cache_write_1h, u.tokens.reasoning, u.unpriced_calls)
    assert got == (calls, failed, input_, output, cache_read, cache_write, cache_write_1h, reasoning, unpriced)
    assert math.isclose(u.reported_cost_usd, reported, rel_tol=1e-9), (u.reported_cost_usd, reported)
    assert math.isclose(u.computed_cost_usd, computed, rel_tol=1e-9), (u.computed_cost_usd, computed)
    assert u.agent == "litellm-agent"


def test_sync_calls_become_exact_llm_call_events(fake: FakeLLM, callback: AgentmeterCallback,
                                                 priced_sidecar: Sidecar) -> None:
    s, cid = priced_sidecar, uuid.uuid4().hex
    md = {"conversation_id": cid, "llm_service": "agent"}

    # 1. Plain OpenAI call with cached prompt tokens and reasoning tokens; litellm prices it.
    fake.script("gpt-4o", [Reply(prompt_tokens=100, completion_tokens=20, cached_tokens=60, reasoning_tokens=5)])
    litellm.completion(model="openai/gpt-4o", metadata=md, **openai_kw(fake))
    # 2. Anthropic with cache reads, 5-minute and 1-hour cache writes; litellm has no price: the sidecar's.
    fake.script(CLAUDE, [Reply(prompt_tokens=50, completion_tokens=10, cached_tokens=1000, cache_write_5m=200,
                               cache_write_1h=300)])
    litellm.completion(model=f"anthropic/{CLAUDE}", metadata=md, **anthropic_kw(fake))
    # 3. A streamed OpenAI call: time to first token.
    fake.script("gpt-4o", [Reply(prompt_tokens=30, completion_tokens=9, first_chunk_delay=0.2)])
    for _ in litellm.completion(model="openai/gpt-4o", metadata=md, stream=True,
                                stream_options={"include_usage": True}, **openai_kw(fake)):
        pass
    # 4. A 429 and a 500, then success, through litellm's own retries: one call.
    fake.script("gpt-4o", [Reply(status=429), Reply(status=500), Reply(prompt_tokens=7, completion_tokens=3)])
    litellm.completion(model="openai/gpt-4o", metadata=md, num_retries=2, **openai_kw(fake))
    # 5. A call that keeps failing with 500: one failed call.
    fake.script("gpt-4o", [Reply(status=500)])
    with pytest.raises(litellm.InternalServerError):
        litellm.completion(model="openai/gpt-4o", metadata=md, num_retries=1, **openai_kw(fake))
    # 6. A model nobody prices: unpriced, never priced at 0.
    fake.script("gpt-private", [Reply(prompt_tokens=11, completion_tokens=1)])
    litellm.completion(model="openai/gpt-private", metadata=md, **openai_kw(fake))
    # 7. Anthropic 429 then success with retries.
    fake.script(CLAUDE, [Reply(status=429), Reply(prompt_tokens=5, completion_tokens=2)])
    litellm.completion(model=f"anthropic/{CLAUDE}", metadata=md, num_retries=2, **anthropic_kw(fake))

    wait_recorded(callback, 7)
    st = callback.client.stats
    assert (st.accepted, st.rejected, st.invalid, st.dropped) == (7, 0, 0, 0)

    prompt_anthropic = 50 + 1000 + 200 + 300
    check_sidecar(
        s, cid, calls=7, failed=1,
        input_=100 + prompt_anthropic + 30 + 7 + 11 + 5, output=20 + 10 + 9 + 3 + 1 + 2,
        cache_read=60 + 1000, cache_write=200, cache_write_1h=300, reasoning=5,
        reported=gpt4o_cost(100, 20, cached=60) + gpt4o_cost(30, 9) + gpt4o_cost(7, 3),
        computed=test_model_cost(50, 1000, 200, 300, 10) + test_model_cost(5, 0, 0, 0, 2),
        unpriced=1,
    )
    u = s.usage(cid)
    assert u is not None and [(p.llm_service, p.tokens) for p in u.per_turn_tokens] == [("agent", 7)]

    openai_ = {"gen_ai_provider_name": "openai", "gen_ai_request_model": "gpt-4o"}
    anthropic = {"gen_ai_provider_name": "anthropic", "gen_ai_request_model": CLAUDE}
    tokens = "agentmeter_llm_tokens_total"
    assert s.metric(tokens, gen_ai_token_type="input", **openai_) == 137
    assert s.metric(tokens, gen_ai_token_type="cache_read", **openai_) == 60
    assert s.metric(tokens, gen_ai_token_type="reasoning", **openai_) == 5
    assert s.metric(tokens, gen_ai_token_type="input", **anthropic) == prompt_anthropic + 5
    assert s.metric(tokens, gen_ai_token_type="cache_read", **anthropic) == 1000
    assert s.metric(tokens, gen_ai_token_type="cache_write", **anthropic) == 500
    assert math.isclose(s.metric("agentmeter_llm_cost_usd_total", cost_source="computed", **anthropic),
                        test_model_cost(50, 1000, 200, 300, 10) + test_model_cost(5, 0, 0, 0, 2))
    # Only the streamed call has a time to first token, and it includes the server's delay.
    ttft = "gen_ai_client_operation_time_to_first_chunk_seconds"
    assert s.metric(ttft + "_count") == 1
    assert s.metric(ttft + "_sum") >= 0.2
    duration = "gen_ai_client_operation_duration_seconds_count"
    assert s.metric(duration, error_type="InternalServerError", **openai_) == 1
    assert s.metric(duration) == 7
    assert s.metric("agentmeter_llm_unpriced_calls_total", gen_ai_request_model="gpt-private") == 1


def test_async_calls_and_conversation_scopes(fake: FakeLLM, callback: AgentmeterCallback,
                                             priced_sidecar: Sidecar) -> None:
    s = priced_sidecar
    a, b = uuid.uuid4().hex, uuid.uuid4().hex

    async def conversation_a() -> None:
        with agentmeter.conversation(a, llm_service="agent"):
            await litellm.acompletion(model="openai/gpt-4o", **openai_kw(fake, user="a"))
            stream = await litellm.acompletion(model="openai/gpt-4o", stream=True,
                                               stream_options={"include_usage": True}, **openai_kw(fake, user="a"))
            async for _ in stream:
                pass

    async def conversation_b() -> None:
        with agentmeter.conversation(b, llm_service="condenser"):
            await litellm.acompletion(model=f"anthropic/{CLAUDE}", **anthropic_kw(fake))
            with pytest.raises(litellm.InternalServerError):
                await litellm.acompletion(model="openai/gpt-fails", num_retries=1, **openai_kw(fake))

    async def main() -> None:
        await asyncio.gather(conversation_a(), conversation_b())
        await wait_recorded_async(callback, 4)

    fake.script("gpt-4o", [Reply(prompt_tokens=40, completion_tokens=4, cached_tokens=10, reasoning_tokens=2)])
    fake.script(CLAUDE, [Reply(prompt_tokens=8, completion_tokens=3, cached_tokens=100, cache_write_1h=50)])
    fake.script("gpt-fails", [Reply(status=500)])
    asyncio.run(main())

    wait_recorded(callback, 4)
    st = callback.client.stats
    assert (st.accepted, st.rejected, st.invalid, st.dropped) == (4, 0, 0, 0)
    check_sidecar(s, a, calls=2, failed=0, input_=80, output=8, cache_read=20, cache_write=0, cache_write_1h=0,
                  reasoning=4, reported=2 * gpt4o_cost(40, 4, cached=10), computed=0.0, unpriced=0)
    check_sidecar(s, b, calls=2, failed=1, input_=158, output=3, cache_read=100, cache_write=0, cache_write_1h=50,
                  reasoning=0, reported=0.0, computed=test_model_cost(8, 100, 0, 50, 3), unpriced=0)
    ua, ub = s.usage(a), s.usage(b)
    assert ua is not None and ub is not None
    assert [p.llm_service for p in ua.per_turn_tokens] == ["agent"]
    assert [p.llm_service for p in ub.per_turn_tokens] == ["condenser"]
    assert s.metric("gen_ai_client_operation_time_to_first_chunk_seconds_count") == 1


def test_streamed_sync_call_keeps_its_conversation_scope(fake: FakeLLM, callback: AgentmeterCallback,
                                                         priced_sidecar: Sidecar) -> None:
    """litellm runs a streamed call's success callback on a thread without the caller's
    context: the scope is taken before the call."""
    cid = uuid.uuid4().hex
    fake.script("gpt-4o", [Reply(prompt_tokens=21, completion_tokens=4)])
    with agentmeter.conversation(cid, llm_service="planner"):
        for _ in litellm.completion(model="openai/gpt-4o", stream=True, stream_options={"include_usage": True},
                                    **openai_kw(fake)):
            pass
    wait_recorded(callback, 1)
    u = priced_sidecar.usage(cid)
    assert u is not None and u.calls == 1 and u.tokens.input == 21 and u.tokens.output == 4
    assert [(p.llm_service, p.tokens) for p in u.per_turn_tokens] == [("planner", 25)]


def test_garbage_from_litellm_never_raises(callback: AgentmeterCallback, priced_sidecar: Sidecar) -> None:
    cid = uuid.uuid4().hex
    junk: list[tuple[Any, Any]] = [
        ({}, None),  # no model: the sidecar rejects it
        (None, None),
        ("not a dict", object()),
        ({"model": "gpt-4o", "custom_llm_provider": "openai", "litellm_params": {"metadata": {"conversation_id": cid}}},
         {"usage": {"prompt_tokens": -3, "completion_tokens": "many"}}),  # negative: rejected
        ({"model": "gpt-4o", "custom_llm_provider": "openai", "litellm_params": {"metadata": {"conversation_id": cid}},
          "response_cost": float("nan"), "stream": True, "completion_start_time": "soon"},
         {"usage": {"prompt_tokens": 12, "completion_tokens": 2.0}, "id": 42, "model": None}),  # usable
        ({"model": "gpt-4o", "litellm_params": {"metadata": "not a dict"}, "standard_logging_object": []}, None),
    ]
    for kwargs, resp in junk:
        callback.log_success_event(kwargs, resp, "start", None)
        callback.log_failure_event(kwargs, resp, None, 3)
        asyncio.run(callback.async_log_success_event(kwargs, resp, None, None))
    assert callback.client.flush(20)
    st = callback.client.stats
    # Usable: the 5th (its conversation) and the 6th (none); no model or negative tokens: rejected.
    assert (st.accepted, st.rejected, st.invalid, st.dropped) == (6, 12, 0, 0)
    u = priced_sidecar.usage(cid)
    assert u is not None and u.tokens.input == 3 * 12 and u.failed_calls == 1


def test_litellm_cache_hits_are_not_llm_calls(callback: AgentmeterCallback, priced_sidecar: Sidecar) -> None:
    cid = uuid.uuid4().hex
    kwargs = {"model": "gpt-4o", "custom_llm_provider": "openai", "litellm_params": {"metadata": {"conversation_id": cid}}}
    usage = {"usage": {"prompt_tokens": 50, "completion_tokens": 5}}
    callback.log_success_event(kwargs, usage, None, None)
    callback.log_success_event({**kwargs, "cache_hit": True}, usage, None, None)
    callback.log_success_event({**kwargs, "standard_logging_object": {"cache_hit": True}}, usage, None, None)
    assert callback.client.flush(20)
    assert callback.client.stats.accepted == 1
    u = priced_sidecar.usage(cid)
    assert u is not None and u.calls == 1 and u.tokens.input == 50


@pytest.mark.parametrize(("litellm_name", "otel_name"), [
    ("openai", "openai"), ("anthropic", "anthropic"), ("bedrock", "aws.bedrock"),
    ("bedrock_converse", "aws.bedrock"), ("vertex_ai", "gcp.vertex_ai"), ("gemini", "gcp.gemini"),
    ("azure", "azure.ai.openai"), ("azure_ai", "azure.ai.inference"), ("xai", "x_ai"), ("deepseek", "deepseek"),
    ("mistral", "mistral_ai"), ("groq", "groq"), ("watsonx", "ibm.watsonx.ai"), ("openrouter", "openrouter"),
    ("", ""), (None, ""),
])
def test_provider_names(litellm_name: str | None, otel_name: str) -> None:
    assert provider_name(litellm_name) == otel_name
