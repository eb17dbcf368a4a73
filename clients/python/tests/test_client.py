"""agentmeter.Client against the real collector binary."""

from __future__ import annotations

import datetime as dt
import math
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

import agentmeter
from agentmeter import event_pb2, ingest_pb2, usage_pb2
from agentmeter._client import _retry_delay
from agentmeter.v1 import ingest_pb2_grpc, usage_pb2_grpc
from conftest import TEST_MODEL, Sidecar, eventually, test_model_cost
from tcp_proxy import Proxy

ACCEPTED = "agentmeter_receiver_events_total"


def conv() -> str:
    return uuid.uuid4().hex


def test_llm_calls_usage_and_metrics_exact(sidecar: Sidecar) -> None:
    cid = conv()
    calls = [
        dict(prompt_tokens=1200, completion_tokens=300, cache_read_tokens=1000, reasoning_tokens=100, cost_usd=0.012),
        dict(prompt_tokens=5000, completion_tokens=40, cache_write_tokens=4000, cache_write_1h_tokens=500, cost_usd=0.02),
        dict(prompt_tokens=10, completion_tokens=0, cost_usd=0.0),  # free, not unknown
    ]
    with agentmeter.Client(sidecar.target, agent="pytest-agent") as client:
        for c in calls:
            assert client.llm_call(
                conversation_id=cid, provider="anthropic", request_model="claude-sonnet-4-20250514",
                latency_seconds=1.5, time_to_first_token_seconds=0.25, llm_service="agent", **c,
            )
        assert client.flush(timeout=10)
        st = client.stats
        u = client.usage(cid)
    assert (st.sent, st.accepted, st.duplicates, st.rejected, st.dropped, st.invalid, st.queued) == (3, 3, 0, 0, 0, 0, 0)
    assert u is not None
    assert u.agent == "pytest-agent"
    assert u.calls == 3 and u.failed_calls == 0 and u.unpriced_calls == 0
    assert u.tokens.input == 6210 and u.tokens.output == 340
    assert u.tokens.cache_read == 1000 and u.tokens.cache_write == 4000 and u.tokens.cache_write_1h == 500
    assert u.tokens.reasoning == 100
    assert math.isclose(u.reported_cost_usd, 0.032) and u.computed_cost_usd == 0.0
    assert u.per_turn_tokens[0].llm_service == "agent" and u.per_turn_tokens[0].tokens == 10

    assert sidecar.metric(ACCEPTED, event_type="llm_call", outcome="accepted") == 3
    model = {"gen_ai_request_model": "claude-sonnet-4-20250514", "gen_ai_provider_name": "anthropic"}
    tokens = "agentmeter_llm_tokens_total"
    assert sidecar.metric(tokens, gen_ai_token_type="input", **model) == 6210
    assert sidecar.metric(tokens, gen_ai_token_type="output", **model) == 340
    assert sidecar.metric(tokens, gen_ai_token_type="cache_read", **model) == 1000
    assert sidecar.metric(tokens, gen_ai_token_type="cache_write", **model) == 4500
    assert sidecar.metric(tokens, gen_ai_token_type="reasoning", **model) == 100
    assert math.isclose(sidecar.metric("agentmeter_llm_cost_usd_total", cost_source="reported", **model), 0.032)


def test_cost_none_is_unknown_and_priced_by_the_sidecar(priced_sidecar: Sidecar) -> None:
    cid, sidecar = conv(), priced_sidecar
    with agentmeter.Client(sidecar.target) as client:
        # Priced by the sidecar's table.
        client.llm_call(conversation_id=cid, provider="anthropic", request_model=TEST_MODEL,
                        prompt_tokens=100_000, completion_tokens=10_000, cache_read_tokens=50_000)
        # Unknown to everyone: counted unpriced, never priced at 0.
        client.llm_call(conversation_id=cid, provider="openai", request_model="no-such-model-xyz",
                        prompt_tokens=10, completion_tokens=10)
        assert client.flush(10)
        u = client.usage(cid)
    assert u is not None
    assert math.isclose(u.computed_cost_usd, test_model_cost(uncached=50_000, read=50_000, output=10_000))
    assert u.reported_cost_usd == 0
    assert u.unpriced_calls == 1
    assert sidecar.metric("agentmeter_llm_unpriced_calls_total", gen_ai_request_model="no-such-model-xyz") == 1


def test_conversation_lifecycle_events(sidecar: Sidecar) -> None:
    cid = conv()
    with agentmeter.Client(sidecar.target, agent="CodeActAgent") as client:
        assert client.concurrency_limit(7)
        assert client.conversation_created(cid, max_budget_usd=2.5, trigger="gui")
        assert client.session_started(cid, success=True, duration_seconds=1.25)
        assert client.agent_status(cid, "running")
        assert client.runtime_fault(cid, "command_timeout_hard", exit_code=-1)
        assert client.runtime_fault(cid, "OOM_KILLED", exit_code=137)
        assert client.llm_call(conversation_id=cid, provider="openai", request_model="gpt-4o",
                               prompt_tokens=100, completion_tokens=10, cost_usd=0.5)
        assert client.agent_status(cid, "awaiting_user_input", reason="done for now")
        assert client.flush(10)
        u = client.usage(cid)
        assert u is not None
        assert u.state == event_pb2.AGENT_STATE_AWAITING_USER_INPUT
        assert u.trigger == event_pb2.CONVERSATION_TRIGGER_GUI
        assert u.max_budget_usd == 2.5 and math.isclose(u.remaining_usd, 2.0)
        assert u.runtime_faults == 2 and not u.closed
        assert client.conversation_closed(cid, "finished")
        assert client.flush(10)
        u = client.usage(cid)
        assert u is not None and u.closed and u.close_reason == event_pb2.CLOSE_REASON_FINISHED
        assert client.stats.accepted == 9
    assert sidecar.metric("agentmeter_conversations_limit") == 7
    assert sidecar.metric("agentmeter_conversations_created_total", trigger="gui") == 1
    assert sidecar.metric("agentmeter_runtime_faults_total", kind="command_timeout_hard") == 1
    assert sidecar.metric("agentmeter_runtime_faults_total", kind="oom_killed") == 1
    assert sidecar.metric("agentmeter_conversations_closed_total", reason="finished") == 1
    assert sidecar.metric("agentmeter_agent_session_start_duration_seconds_count", success="true") == 1


def test_usage_of_unknown_conversation_is_none_and_watch_follows_changes(sidecar: Sidecar) -> None:
    cid = conv()
    with agentmeter.Client(sidecar.target) as client:
        assert client.usage(cid) is None
        client.conversation_created(cid)
        assert client.flush(10)
        seen: list[usage_pb2.ConversationUsage] = []
        watcher = client.watch_usage(cid)

        def watch() -> None:
            for u in watcher:
                seen.append(u)

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        eventually("first watch update", lambda: seen)
        client.llm_call(conversation_id=cid, provider="openai", request_model="gpt-4o", prompt_tokens=7,
                        cost_usd=0.001)
        assert client.flush(10)
        eventually("watch update with the call", lambda: any(u.calls == 1 and u.tokens.input == 7 for u in seen))
        client.conversation_closed(cid, "user")
        assert client.flush(10)
        t.join(20)
        assert not t.is_alive(), "WatchUsage did not end when the conversation closed"
        assert seen[-1].closed


def test_garbage_never_raises_and_valid_events_alongside_count(sidecar: Sidecar) -> None:
    cid = conv()
    with agentmeter.Client(sidecar.target) as client:
        ok = dict(conversation_id=cid, provider="openai", request_model="gpt-4o")
        # Refused by the client: these cannot form an event.
        invalid: list[Callable[[], bool]] = [
            lambda: client.llm_call(**ok, prompt_tokens="many"),  # type: ignore[arg-type]
            lambda: client.llm_call(**ok, latency_seconds="slow"),  # type: ignore[arg-type]
            lambda: client.llm_call(**ok, cost_usd="free"),  # type: ignore[arg-type]
            lambda: client.llm_call(conversation_id=cid, provider=42, request_model="gpt-4o"),  # type: ignore[arg-type]
            lambda: client.llm_call(**ok, prompt_tokens=2**70),
            lambda: client.llm_call(**ok, time="yesterday"),  # type: ignore[arg-type]
            lambda: client.llm_call(**ok, time=dt.datetime(2026, 1, 1)),  # naive
            lambda: client.llm_call(**dict(ok, conversation_id=object())),  # type: ignore[arg-type]
            lambda: client.agent_status(cid, "sleeping"),
            lambda: client.agent_status(cid, 999),
            lambda: client.agent_status(cid, None),  # type: ignore[arg-type]
            lambda: client.conversation_created(cid, trigger="carrier-pigeon"),
            lambda: client.conversation_created(cid, max_budget_usd="lots"),  # type: ignore[arg-type]
            lambda: client.conversation_closed(cid, "bored"),
            lambda: client.runtime_fault(cid, "meteor"),
            lambda: client.session_started(cid, success=True, duration_seconds="1s"),  # type: ignore[arg-type]
            lambda: client.concurrency_limit("ten"),  # type: ignore[arg-type]
            lambda: client.record("not an event"),  # type: ignore[arg-type]
            lambda: client.record(None),  # type: ignore[arg-type]
        ]
        for call in invalid:
            assert call() is False
        # Well-formed but invalid: the sidecar rejects them one by one.
        rejected: list[Callable[[], bool]] = [
            lambda: client.llm_call(**ok, prompt_tokens=-5),
            lambda: client.llm_call(**ok, prompt_tokens=10, cache_read_tokens=20),
            lambda: client.llm_call(**ok, latency_seconds=float("nan")),
            lambda: client.llm_call(**ok, cost_usd=-1.0),
            lambda: client.llm_call(conversation_id=cid, provider="openai", request_model=""),
            lambda: client.llm_call(**ok, response_id="x" * 300),
            lambda: client.record(event_pb2.Event(event_id="no-payload")),
        ]
        for call in rejected:
            assert call() is True
        valid = 5
        for i in range(valid):
            assert client.llm_call(**ok, prompt_tokens=100 + i, completion_tokens=1, cost_usd=0.01)
        assert client.flush(10)
        st = client.stats
        u = client.usage(cid)
    assert st.invalid == len(invalid)
    assert st.rejected == len(rejected)
    assert st.accepted == valid and st.dropped == 0
    assert u is not None and u.calls == valid and u.tokens.input == 100 + 101 + 102 + 103 + 104
    assert sidecar.metric(ACCEPTED, outcome="rejected") == len(rejected)
    assert sidecar.metric(ACCEPTED, outcome="accepted") == valid


def test_record_takes_a_ready_event_and_fills_id_time_agent(sidecar: Sidecar) -> None:
    cid = conv()
    ev = event_pb2.Event(conversation_id=cid, llm_call=event_pb2.LLMCall(
        provider="openai", request_model="gpt-4o", prompt_tokens=3, cost_usd=0.0))
    with agentmeter.Client(sidecar.target, agent="a1") as client:
        assert client.record(ev) and client.record(ev)  # two events: each gets its own id
        assert not ev.event_id, "record must not change the caller's message"
        ev.event_id = "fixed-id"
        assert client.record(ev) and client.record(ev)  # same id twice: one duplicate
        assert client.flush(10)
        st = client.stats
        u = client.usage(cid)
    assert (st.accepted, st.duplicates) == (3, 1)
    assert u is not None and u.calls == 3 and u.agent == "a1"


def test_conversation_scope_applies_to_llm_call(sidecar: Sidecar) -> None:
    cid = conv()
    with agentmeter.Client(sidecar.target) as client:
        with agentmeter.conversation(cid, llm_service="condenser"):
            client.llm_call(provider="openai", request_model="gpt-4o", prompt_tokens=11, cost_usd=0.0)
        client.llm_call(provider="openai", request_model="gpt-4o", prompt_tokens=11, cost_usd=0.0)  # no conversation
        assert client.flush(10)
        u = client.usage(cid)
    assert u is not None and u.calls == 1
    assert [(p.llm_service, p.tokens) for p in u.per_turn_tokens] == [("condenser", 11)]


def test_queue_full_drops_and_counts_without_blocking(make_sidecar: Callable[..., Sidecar]) -> None:
    down = make_sidecar(start=False)  # nothing listens there
    client = agentmeter.Client(down.target, max_queue=10, max_batch=1000, flush_interval=60)
    results = [client.llm_call(provider="openai", request_model="gpt-4o") for _ in range(100)]
    assert results.count(True) == 10 and results.count(False) == 90
    st = client.stats
    assert st.queued == 10 and st.dropped == 90
    client.close(timeout=0.5)
    st = client.stats
    assert st.dropped == 100 and st.queued == 0 and st.accepted == 0
    assert client.llm_call(provider="openai", request_model="gpt-4o") is False
    assert client.stats.dropped == 101


def test_sidecar_down_at_start_then_up_delivers(make_sidecar: Callable[..., Sidecar]) -> None:
    s = make_sidecar(start=False)
    cid = conv()
    client = agentmeter.Client(s.target, flush_interval=0.05, timeout=0.5, max_backoff=0.5)
    for _ in range(4):
        assert client.llm_call(conversation_id=cid, provider="openai", request_model="gpt-4o",
                               prompt_tokens=25, completion_tokens=5, cost_usd=0.001)
    eventually("the client retrying", lambda: client.stats.retried >= 2)
    s.start()
    assert client.flush(timeout=30)
    st = client.stats
    client.close()
    assert (st.accepted, st.duplicates, st.dropped) == (4, 0, 0)
    u = s.usage(cid)
    assert u is not None and u.calls == 4 and u.tokens.input == 100


def test_sidecar_restart_delivers_once(make_sidecar: Callable[..., Sidecar]) -> None:
    s = make_sidecar()
    cid = conv()
    client = agentmeter.Client(s.target, flush_interval=0.05, timeout=0.5, max_backoff=0.5)
    client.llm_call(conversation_id=cid, provider="openai", request_model="gpt-4o", prompt_tokens=1, cost_usd=0.0)
    assert client.flush(10)
    assert s.stop() == 0  # SIGTERM: drains and exits
    for _ in range(3):
        client.llm_call(conversation_id=cid, provider="openai", request_model="gpt-4o", prompt_tokens=10,
                        cost_usd=0.0)
    eventually("the client retrying", lambda: client.stats.retried >= 1)
    s.start()
    assert client.flush(timeout=30)
    st = client.stats
    client.close()
    assert (st.accepted, st.duplicates, st.dropped, st.rejected) == (4, 0, 0, 0)
    # The new process saw the three calls sent while it was down, once each.
    u = s.usage(cid)
    assert u is not None and u.calls == 3 and u.tokens.input == 30
    assert s.metric(ACCEPTED, outcome="accepted") == 3 and s.metric(ACCEPTED, outcome="duplicate") == 0


def test_request_too_large_for_the_sidecar_is_split(make_sidecar: Callable[..., Sidecar]) -> None:
    s = make_sidecar(receiver="  max_events_per_request: 50\n")
    cid = conv()
    with agentmeter.Client(s.target, max_batch=500, flush_interval=60) as client:
        for i in range(300):
            client.llm_call(conversation_id=cid, provider="openai", request_model="gpt-4o", prompt_tokens=i,
                            cost_usd=0.0)
        assert client.flush(20)
        st = client.stats
    assert (st.accepted, st.rejected, st.dropped) == (300, 0, 0)
    u = s.usage(cid)
    assert u is not None and u.calls == 300 and u.tokens.input == sum(range(300))
    assert s.metric("agentmeter_grpc_requests_refused_total", grpc_service="agentmeter.v1.IngestService", grpc_code="InvalidArgument") >= 1


def test_exit_flushes_within_a_bound(sidecar: Sidecar, make_sidecar: Callable[..., Sidecar]) -> None:
    cid = conv()
    script = textwrap.dedent(
        """
        import sys, agentmeter
        client = agentmeter.Client(sys.argv[1], flush_interval=60, exit_timeout=2.0)
        for i in range(25):
            client.llm_call(conversation_id=sys.argv[2], provider="openai", request_model="gpt-4o",
                            prompt_tokens=4, cost_usd=0.0)
        """
    )
    # No flush, no close: the interpreter's exit sends the queue.
    subprocess.run([sys.executable, "-c", script, sidecar.target, cid], check=True, timeout=60)
    u = sidecar.usage(cid)
    assert u is not None and u.calls == 25 and u.tokens.input == 100
    # With nobody listening, exit still happens: the flush gives up after exit_timeout.
    down = make_sidecar(start=False)
    subprocess.run([sys.executable, "-c", script, down.target, cid], check=True, timeout=60)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_fork_child_gets_its_own_queue_and_channel(sidecar: Sidecar) -> None:
    parent_cid, child_cid = conv(), conv()
    client = agentmeter.Client(sidecar.target)
    client.llm_call(conversation_id=parent_cid, provider="openai", request_model="gpt-4o", prompt_tokens=1,
                    cost_usd=0.0)
    assert client.flush(10)
    # Queued in the parent, not yet sent, at fork time: the child must not send it too.
    client.llm_call(conversation_id=parent_cid, provider="openai", request_model="gpt-4o", prompt_tokens=1,
                    cost_usd=0.0)
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            for _ in range(3):
                client.llm_call(conversation_id=child_cid, provider="openai", request_model="gpt-4o",
                                prompt_tokens=5, cost_usd=0.0)
            st = client.stats
            if client.flush(20) and st.queued == 3 and client.stats.accepted == 3:
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child could not send its events"
    client.llm_call(conversation_id=parent_cid, provider="openai", request_model="gpt-4o", prompt_tokens=1,
                    cost_usd=0.0)
    assert client.flush(10)
    assert client.stats.accepted == 3
    client.close()
    child, parent = sidecar.usage(child_cid), sidecar.usage(parent_cid)
    assert child is not None and child.calls == 3 and child.tokens.input == 15
    assert parent is not None and parent.calls == 3


def test_usage_errors_other_than_not_found_raise(sidecar: Sidecar) -> None:
    with agentmeter.Client(sidecar.target) as client:
        with pytest.raises(grpc.RpcError) as info:
            client.usage("")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_bad_constructor_arguments_raise_at_once() -> None:
    for kwargs in (dict(max_queue=0), dict(max_batch=0), dict(flush_interval=0), dict(timeout=-1)):
        with pytest.raises(ValueError):
            agentmeter.Client("127.0.0.1:1", **kwargs)  # type: ignore[arg-type]


def test_lost_answer_is_resent_with_the_same_ids_and_counted_once(sidecar: Sidecar) -> None:
    proxy = Proxy(sidecar.grpc_port)
    cid = conv()
    client = agentmeter.Client(f"127.0.0.1:{proxy.port}", flush_interval=0.05, timeout=0.5, max_backoff=0.2)
    try:
        assert client.conversation_created(cid) and client.flush(10)  # connection up, handshake done
        proxy.hold.set()  # from now on the sidecar's answers are lost on the way
        for i in range(5):
            client.llm_call(conversation_id=cid, provider="openai", request_model="gpt-4o", prompt_tokens=10 + i,
                            cost_usd=0.0)
        # The sidecar applied the batch (asked directly), the client never heard.
        eventually("the sidecar applying the batch", lambda: (u := sidecar.usage(cid)) is not None and u.calls == 5)
        eventually("the client retrying", lambda: client.stats.retried >= 1)
        proxy.hold.clear()
        proxy.drop_connections()
        assert client.flush(20)
        st = client.stats
    finally:
        client.close()
        proxy.close()
    assert (st.accepted, st.duplicates, st.dropped) == (1, 5, 0)
    u = sidecar.usage(cid)
    assert u is not None and u.calls == 5 and u.tokens.input == 10 + 11 + 12 + 13 + 14
    assert sidecar.metric(ACCEPTED, event_type="llm_call", outcome="accepted") == 5
    # Each resend that reached the sidecar counted 5 duplicates (more than one if a resend was also lost).
    dup = sidecar.metric(ACCEPTED, event_type="llm_call", outcome="duplicate")
    assert dup >= 5 and dup % 5 == 0


def test_give_up_after_drops_and_counts(make_sidecar: Callable[..., Sidecar]) -> None:
    down = make_sidecar(start=False)
    client = agentmeter.Client(down.target, flush_interval=0.05, timeout=0.2, max_backoff=0.2, give_up_after=1.0)
    for _ in range(3):
        client.llm_call(provider="openai", request_model="gpt-4o")
    assert client.flush(timeout=30)  # answered for: given up
    st = client.stats
    client.close()
    assert (st.dropped, st.sent, st.queued) == (3, 0, 0) and st.retried >= 1


def test_bearer_token(make_sidecar: Callable[..., Sidecar], tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    s = make_sidecar(receiver=f"  auth:\n    token_file: {str(token_file)!r}\n")
    cid = conv()
    with agentmeter.Client(s.target) as anonymous:
        assert anonymous.llm_call(conversation_id=cid, provider="openai", request_model="gpt-4o", cost_usd=0.0)
        assert anonymous.flush(10)
        assert anonymous.stats.dropped == 1 and anonymous.stats.accepted == 0
        with pytest.raises(grpc.RpcError) as info:
            anonymous.usage(cid)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with agentmeter.Client(s.target, token="wrong") as wrong:
        wrong.llm_call(conversation_id=cid, provider="openai", request_model="gpt-4o", cost_usd=0.0)
        assert wrong.flush(10) and wrong.stats.dropped == 1
    with agentmeter.Client(s.target, token="s3cret-token") as client:
        assert client.llm_call(conversation_id=cid, provider="openai", request_model="gpt-4o", prompt_tokens=9,
                               cost_usd=0.0)
        assert client.flush(10)
        assert client.stats.accepted == 1
        u = client.usage(cid)
    assert u is not None and u.calls == 1 and u.tokens.input == 9


def test_unix_socket(make_sidecar: Callable[..., Sidecar]) -> None:
    d = tempfile.mkdtemp(prefix="am-")  # short: a socket path has at most 107 bytes
    try:
        s = make_sidecar(endpoint=f"unix://{d}/agentmeter.sock")
        cid = conv()
        with agentmeter.Client(f"unix://{d}/agentmeter.sock") as client:
            assert client.llm_call(conversation_id=cid, provider="openai", request_model="gpt-4o", prompt_tokens=4,
                                   cost_usd=0.0)
            assert client.flush(10)
            u = client.usage(cid)
        assert u is not None and u.calls == 1 and u.tokens.input == 4
        s.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)


GARBAGE: list[object] = [None, "", "x", "é" * 300, -1, 0, 2**63, 2**80, 1.5, -0.5, float("nan"), float("inf"), True,
                         b"bytes", [], {}, object(), dt.datetime(2026, 1, 1), dt.timedelta(1)]


def test_every_argument_fed_garbage_never_raises(sidecar: Sidecar) -> None:
    """Each argument of each recording call, in turn, gets every garbage value: the call
    returns a bool, never raises, and each event ends counted exactly once."""
    cid = conv()
    valid_llm = dict(conversation_id=cid, provider="openai", request_model="gpt-4o", prompt_tokens=10,
                     completion_tokens=2, cost_usd=0.0)
    llm_args = ["conversation_id", "provider", "request_model", "prompt_tokens", "completion_tokens",
                "cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens",
                "context_window", "latency_seconds", "time_to_first_token_seconds", "cost_usd", "error_type",
                "response_model", "response_id", "llm_service", "operation", "event_id", "time"]
    calls: list[Callable[[], object]] = []
    for name in llm_args:
        for g in GARBAGE:
            calls.append(lambda name=name, g=g: client.llm_call(**{**valid_llm, name: g}))  # type: ignore[arg-type]
    for g in GARBAGE:
        calls += [
            lambda g=g: client.agent_status(cid, g),  # type: ignore[arg-type]
            lambda g=g: client.agent_status(g, "running", reason=g),  # type: ignore[arg-type]
            lambda g=g: client.conversation_created(g, max_budget_usd=g, trigger=g),  # type: ignore[arg-type]
            lambda g=g: client.session_started(g, success=g, duration_seconds=g),  # type: ignore[arg-type]
            lambda g=g: client.conversation_closed(g, g),  # type: ignore[arg-type]
            lambda g=g: client.concurrency_limit(g),  # type: ignore[arg-type]
            lambda g=g: client.runtime_fault(g, g, exit_code=g),  # type: ignore[arg-type]
            lambda g=g: client.record(g),  # type: ignore[arg-type]
        ]
    with agentmeter.Client(sidecar.target, max_queue=100_000) as client:
        results = [call() for call in calls]
        assert all(isinstance(r, bool) for r in results)
        assert client.flush(30)
        st = client.stats
    assert st.invalid == results.count(False)
    assert st.accepted + st.rejected + st.duplicates == results.count(True)
    assert st.dropped == 0 and st.queued == 0
    # What the sidecar counted agrees with the client.
    assert sidecar.metric(ACCEPTED, outcome="accepted") == st.accepted
    assert sidecar.metric(ACCEPTED, outcome="rejected") == st.rejected


def test_resource_exhausted_waits_as_long_as_the_sidecar_asks(make_sidecar: Callable[..., Sidecar]) -> None:
    s = make_sidecar(receiver="    max_inflight_rpcs: 1\n")
    cid = conv()
    with agentmeter.Client(s.target) as setup:
        assert setup.conversation_created(cid) and setup.flush(10)
    channel = grpc.insecure_channel(s.target)
    ingest = ingest_pb2_grpc.IngestServiceStub(channel)
    release = threading.Event()

    def silent() -> Iterator[ingest_pb2.RecordRequest]:
        release.wait(60)
        yield from ()

    # A RecordStream that sends nothing holds the only RPC slot. It is refused
    # itself while the setup client's stream, closed but not yet ended on the
    # sidecar's side, still holds it: then another one takes the slot.
    streams = [ingest.RecordStream(silent())]

    def refused() -> grpc.RpcError | None:
        if streams[-1].done():
            streams.append(ingest.RecordStream(silent()))
            return None
        try:
            ingest.Record(ingest_pb2.RecordRequest(), timeout=5)
        except grpc.RpcError as err:
            return err if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED else None
        return None

    # The real sidecar's refusal carries a google.rpc.RetryInfo the client reads.
    err = eventually("the slot taken", refused)
    assert isinstance(err, grpc.RpcError)
    hint = _retry_delay(err)
    assert hint > 0
    # Its own backoff (at most 10 ms) is shorter than the hint: the hint paces the resends.
    client = agentmeter.Client(s.target, flush_interval=0.01, max_backoff=0.01)
    try:
        client.llm_call(conversation_id=cid, provider="openai", request_model="gpt-4o", prompt_tokens=6, cost_usd=0.0)
        start = time.monotonic()
        eventually("the client retrying", lambda: client.stats.retried >= 3)
        time.sleep(4 * hint)
        retried, elapsed = client.stats.retried, time.monotonic() - start
        assert retried <= elapsed / hint + 1, f"{retried} resends in {elapsed:.2f}s with a {hint}s retry delay"
        release.set()
        for held in streams:
            held.cancel()
        assert client.flush(20)
        st = client.stats
    finally:
        client.close()
        channel.close()
    assert (st.accepted, st.dropped) == (1, 0)
    u = s.usage(cid)
    assert u is not None and u.calls == 1 and u.tokens.input == 6
