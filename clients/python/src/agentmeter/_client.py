"""The agentmeter client: a bounded queue and one daemon sender thread."""

from __future__ import annotations

import atexit
import datetime as _dt
import logging
import math
import os
import threading
import time as _time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import tenacity
from google.rpc import error_details_pb2, status_pb2

from . import _context
from .v1 import event_pb2, ingest_pb2, ingest_pb2_grpc, usage_pb2, usage_pb2_grpc

_log = logging.getLogger("agentmeter")

#: Status codes after which the same batch is sent again (same event ids).
RETRYABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)

# A request stays well under the sidecar's default receiver.grpc.max_recv_msg_size_mib (4).
_MAX_BATCH_BYTES = 1 << 20

# Reconnect promptly once the sidecar is back: gRPC's default backoff grows to 120 s.
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


@dataclass(frozen=True)
class Stats:
    """Counters of a :class:`Client` since it was created (``queued`` is current).

    Every event handed to the client ends in exactly one of ``accepted``,
    ``duplicates``, ``rejected``, ``invalid`` or ``dropped``, or is still
    ``queued`` (or in flight).
    """

    #: Events waiting in the queue or in the request being sent.
    queued: int
    #: Events sent in requests the sidecar answered.
    sent: int
    #: Events the sidecar applied.
    accepted: int
    #: Events the sidecar had already applied (a resend after a lost answer).
    duplicates: int
    #: Events the sidecar refused as invalid (logged, never retried).
    rejected: int
    #: Calls whose arguments could not even form an event (logged).
    invalid: int
    #: Events lost: queue full, batch given up, refused as a whole, or recorded after close.
    dropped: int
    #: Resends of a batch after a retryable failure.
    retried: int


class _Permanent(Exception):
    """A batch the sidecar refused for good (no retry can help)."""


class _TooLarge(Exception):
    """The sidecar refused a request as a whole for its size: split it."""


class _Abandoned(Exception):
    """The client is closing and gave up the batch."""


def _code(err: BaseException) -> grpc.StatusCode | None:
    code = getattr(err, "code", None)
    if callable(code):
        try:
            return code()
        except Exception:  # noqa: BLE001 - a foreign RpcError without a code
            return None
    return None


def _details(err: BaseException) -> str:
    details = getattr(err, "details", None)
    if callable(details):
        try:
            return details() or ""
        except Exception:  # noqa: BLE001
            return ""
    return ""


def _retry_delay(err: BaseException) -> float:
    """The delay the sidecar asked for in a google.rpc.RetryInfo detail, in seconds; 0 without one."""
    trailing = getattr(err, "trailing_metadata", None)
    try:
        for key, value in (trailing() if callable(trailing) else None) or ():
            if key != "grpc-status-details-bin" or not isinstance(value, bytes):
                continue
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    return max(float(info.retry_delay.ToTimedelta().total_seconds()), 0.0)
    except Exception:  # noqa: BLE001 - a malformed detail is no hint
        return 0.0
    return 0.0


def _refused_for_size(err: grpc.RpcError) -> bool:
    """Whether err refuses a whole request for its size (bytes or event count)."""
    code, details = _code(err), _details(err).lower()
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return "larger than max" in details or "message size" in details or "too large" in details
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return "max_events_per_request" in details or "split" in details
    return False


def _enum_value(enum: Any, prefix: str, value: object) -> Any:
    """Map an OpenHands-style name ("running", "awaiting_user_input"), the
    full enum name, or an int to the enum's number; ValueError otherwise."""
    if isinstance(value, bool):
        raise TypeError(f"{prefix.lower()}: a bool is not a valid value")
    if isinstance(value, int):
        if value not in enum.values():
            raise ValueError(f"{value} is not a valid {enum.DESCRIPTOR.name}")
        return value
    if not isinstance(value, str):
        raise TypeError(f"{enum.DESCRIPTOR.name} must be a str or int, got {type(value).__name__}")
    name = value.strip().upper().replace("-", "_").replace(" ", "_")
    if not name.startswith(prefix):
        name = prefix + name
    try:
        number: int = enum.Value(name)
    except ValueError:
        raise ValueError(f"{value!r} is not a valid {enum.DESCRIPTOR.name}") from None
    if number == 0:
        raise ValueError(f"{value!r} is not a valid {enum.DESCRIPTOR.name}")
    return number


def _set_time(ev: event_pb2.Event, when: object) -> None:
    if when is None:
        ev.time.FromNanoseconds(_time.time_ns())
    elif isinstance(when, _dt.datetime):
        if when.tzinfo is None:
            raise ValueError("time must be timezone-aware")
        ev.time.FromDatetime(when.astimezone(_dt.timezone.utc))
    elif isinstance(when, (int, float)) and not isinstance(when, bool) and math.isfinite(when):
        ev.time.FromNanoseconds(int(when * 1e9))
    else:
        raise TypeError(f"time must be a datetime or epoch seconds, got {when!r}")


def _weak(obj: Any, method: str) -> Callable[[], None]:
    """A callable that calls obj.method() while obj is alive (for atexit and
    os.register_at_fork, which would otherwise keep every client forever)."""
    ref = weakref.ref(obj)

    def call() -> None:
        target = ref()
        if target is not None:
            getattr(target, method)()

    return call


class Client:
    """Records an agent's events to its agentmeter sidecar and reads usage back.

    Recording never raises and never blocks: each call builds an event, puts it
    on a bounded queue and returns True, or False (counted in ``stats``) when
    the queue is full, the arguments cannot form an event, or the client is
    closed. One daemon thread sends the queue in batches (``max_batch`` events
    or ``flush_interval`` seconds, whichever comes first) with the unary
    ``IngestService.Record``. On UNAVAILABLE, DEADLINE_EXCEEDED and
    RESOURCE_EXHAUSTED it resends the same batch, same event ids, with
    exponential backoff and full jitter (or after the sidecar's RetryInfo
    when that asks for longer), so a sidecar that is not up yet or
    restarts loses nothing and counts nothing twice; after ``give_up_after``
    seconds (keep it below the sidecar's ``receiver.dedupe_window``, 10m by
    default) the batch is dropped and counted. A request refused as a whole
    for its size is split in halves; events the sidecar rejects are logged and
    counted, never resent.

    The client is safe to use from many threads and across ``os.fork()`` (the
    child starts with an empty queue, a new thread and a new channel); queued
    events are flushed at interpreter exit for at most ``exit_timeout`` seconds.

    ``target`` is any gRPC target: ``localhost:4320``, ``unix:///run/agentmeter.sock``.
    ``token`` is sent as ``authorization: Bearer <token>`` on every call.
    """

    def __init__(
        self,
        target: str = "localhost:4320",
        *,
        agent: str | None = None,
        max_queue: int = 10000,
        max_batch: int = 500,
        flush_interval: float = 0.2,
        timeout: float = 2.0,
        token: str | None = None,
        give_up_after: float = 300.0,
        max_backoff: float = 5.0,
        exit_timeout: float = 5.0,
    ) -> None:
        if max_queue < 1 or max_batch < 1:
            raise ValueError("max_queue and max_batch must be >= 1")
        if not (flush_interval > 0 and timeout > 0 and give_up_after > 0 and max_backoff > 0):
            raise ValueError("flush_interval, timeout, give_up_after and max_backoff must be > 0")
        self._target = target
        self._agent = agent or ""
        self._max_queue = max_queue
        self._max_batch = max_batch
        self._flush_interval = flush_interval
        self._timeout = timeout
        self._give_up_after = give_up_after
        self._max_backoff = max_backoff
        self._exit_timeout = exit_timeout
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        # Channels a forked child inherited: kept referenced, never used or closed there.
        self._inherited: list[grpc.Channel] = []
        self._reset()
        atexit.register(_weak(self, "_at_exit"))
        os.register_at_fork(after_in_child=_weak(self, "_after_fork_in_child"))

    def _reset(self) -> None:
        """(Re)create the per-process state: lock, queue, counters, channel, thread.

        The lock guards everything below it; the sender thread owns the channel
        use and the batch in flight.
        """
        self._cv = threading.Condition(threading.Lock())
        self._queue: deque[event_pb2.Event] = deque()
        self._enqueued = 0  # events ever queued (sequence of the newest)
        self._done = 0  # events taken off the queue and settled
        self._inflight = 0
        self._flush_upto = 0  # a flush waits for events up to this sequence
        self._closed = False
        self._stopping = False  # the sender exits once the queue is empty
        self._abandon = threading.Event()  # stop retrying: close() ran out of time
        self._thread: threading.Thread | None = None
        self._channel: grpc.Channel | None = None
        self._ingest: ingest_pb2_grpc.IngestServiceStub | None = None
        self._usage: usage_pb2_grpc.UsageServiceStub | None = None
        self._full_logged = False
        self._sent = self._accepted = self._duplicates = self._rejected = 0
        self._invalid = self._dropped = self._retried = 0

    def _after_fork_in_child(self) -> None:
        if self._channel is not None:
            self._inherited.append(self._channel)
        closed = self._closed
        self._reset()
        self._closed = closed

    # -- recording ----------------------------------------------------------------

    def llm_call(
        self,
        *,
        conversation_id: str | None = None,
        provider: str,
        request_model: str,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        cache_write_1h_tokens: int = 0,
        reasoning_tokens: int = 0,
        context_window: int = 0,
        latency_seconds: float = 0.0,
        time_to_first_token_seconds: float = 0.0,
        cost_usd: float | None = None,
        error_type: str = "",
        response_model: str = "",
        response_id: str = "",
        llm_service: str = "",
        operation: str = "chat",
        event_id: str | None = None,
        time: _dt.datetime | float | None = None,
    ) -> bool:
        """Record one LLM call. Token counts follow OpenAI and litellm:
        ``prompt_tokens`` includes the cache tokens, ``completion_tokens`` the
        reasoning tokens. ``cost_usd=None`` means unknown (the sidecar prices
        the call); ``0.0`` means free. ``conversation_id`` and ``llm_service``
        default to the active :func:`agentmeter.conversation` scope.
        Returns whether the event was queued."""
        try:
            scope = _context.current()
            if conversation_id is None and scope is not None:
                conversation_id = scope.conversation_id
            if not llm_service and scope is not None:
                llm_service = scope.llm_service
            call = event_pb2.LLMCall(
                provider=provider,
                operation=operation,
                request_model=request_model,
                response_model=response_model,
                response_id=response_id,
                llm_service=llm_service,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cache_read_tokens=cache_read_tokens,
                cache_write_tokens=cache_write_tokens,
                cache_write_1h_tokens=cache_write_1h_tokens,
                reasoning_tokens=reasoning_tokens,
                context_window=context_window,
                latency_seconds=latency_seconds,
                time_to_first_token_seconds=time_to_first_token_seconds,
                error_type=error_type,
            )
            if cost_usd is not None:
                call.cost_usd = cost_usd
            ev = self._event(conversation_id, event_id, time)
            ev.llm_call.CopyFrom(call)
        except Exception as err:  # noqa: BLE001 - recording never raises
            return self._refuse("llm_call", err)
        return self._enqueue(ev)

    def agent_status(self, conversation_id: str, state: str | int, reason: str = "") -> bool:
        """Record a change of the agent's state, named as OpenHands names it
        (``"running"``, ``"awaiting_user_input"``, ``"error"``, ...) or as an
        ``AgentState`` value."""
        try:
            ev = self._event(conversation_id, None, None)
            ev.agent_status.state = _enum_value(event_pb2.AgentState, "AGENT_STATE_", state)
            ev.agent_status.reason = reason
        except Exception as err:  # noqa: BLE001
            return self._refuse("agent_status", err)
        return self._enqueue(ev)

    def conversation_created(
        self, conversation_id: str, *, max_budget_usd: float | None = None, trigger: str | int = "api"
    ) -> bool:
        """Record a conversation's creation, with its budget (None = the
        sidecar's default) and trigger (``"gui"``, ``"api"``, ``"resolver"``, ...)."""
        try:
            ev = self._event(conversation_id, None, None)
            created = ev.conversation.created
            created.trigger = _enum_value(event_pb2.ConversationTrigger, "CONVERSATION_TRIGGER_", trigger)
            if max_budget_usd is not None:
                created.max_budget_usd = max_budget_usd
        except Exception as err:  # noqa: BLE001
            return self._refuse("conversation_created", err)
        return self._enqueue(ev)

    def session_started(self, conversation_id: str, *, success: bool, duration_seconds: float) -> bool:
        """Record an agent session start and how long it took."""
        try:
            ev = self._event(conversation_id, None, None)
            ev.conversation.session_started.success = success
            ev.conversation.session_started.duration_seconds = duration_seconds
        except Exception as err:  # noqa: BLE001
            return self._refuse("session_started", err)
        return self._enqueue(ev)

    def conversation_closed(self, conversation_id: str, reason: str | int) -> bool:
        """Record the end of a conversation (``"finished"``, ``"evicted"``,
        ``"idle"``, ``"error"``, ``"user"``, ``"deleted"``)."""
        try:
            ev = self._event(conversation_id, None, None)
            ev.conversation.closed.reason = _enum_value(event_pb2.CloseReason, "CLOSE_REASON_", reason)
        except Exception as err:  # noqa: BLE001
            return self._refuse("conversation_closed", err)
        return self._enqueue(ev)

    def concurrency_limit(self, n: int) -> bool:
        """Record the agent server's max_concurrent_conversations."""
        try:
            ev = self._event("", None, None)
            ev.conversation.limit.max_concurrent_conversations = n
        except Exception as err:  # noqa: BLE001
            return self._refuse("concurrency_limit", err)
        return self._enqueue(ev)

    def runtime_fault(self, conversation_id: str, kind: str | int, exit_code: int = 0) -> bool:
        """Record a sandbox runtime fault (``"command_timeout_soft"``,
        ``"command_timeout_hard"``, ``"oom_killed"``, ``"runtime_disconnected"``)."""
        try:
            ev = self._event(conversation_id, None, None)
            ev.runtime_fault.kind = _enum_value(event_pb2.RuntimeFaultKind, "RUNTIME_FAULT_KIND_", kind)
            ev.runtime_fault.exit_code = exit_code
        except Exception as err:  # noqa: BLE001
            return self._refuse("runtime_fault", err)
        return self._enqueue(ev)

    def record(self, event: event_pb2.Event) -> bool:
        """Record a ready-made ``agentmeter.v1.Event`` (copied); a missing
        ``event_id``, ``time`` or ``agent`` is filled in."""
        try:
            if not isinstance(event, event_pb2.Event):
                raise TypeError(f"record takes an agentmeter.v1.Event, got {type(event).__name__}")
            ev = event_pb2.Event()
            ev.CopyFrom(event)
            if not ev.event_id:
                ev.event_id = str(uuid.uuid4())
            if not ev.HasField("time"):
                _set_time(ev, None)
            if not ev.agent:
                ev.agent = self._agent
        except Exception as err:  # noqa: BLE001
            return self._refuse("record", err)
        return self._enqueue(ev)

    def _event(self, conversation_id: str | None, event_id: str | None, when: object) -> event_pb2.Event:
        ev = event_pb2.Event(
            event_id=event_id or str(uuid.uuid4()),
            conversation_id=conversation_id or "",
            agent=self._agent,
        )
        _set_time(ev, when)
        return ev

    def _refuse(self, what: str, err: BaseException) -> bool:
        with self._cv:
            self._invalid += 1
        _log.warning("agentmeter: %s not recorded: %s", what, err)
        return False

    def _enqueue(self, ev: event_pb2.Event) -> bool:
        with self._cv:
            if self._closed:
                self._dropped += 1
                return False
            if len(self._queue) >= self._max_queue:
                self._dropped += 1
                log_full = not self._full_logged
                self._full_logged = True
            else:
                self._queue.append(ev)
                self._enqueued += 1
                self._full_logged = False
                if self._thread is None:
                    self._start_sender()
                if len(self._queue) == 1 or len(self._queue) >= self._max_batch:
                    self._cv.notify_all()  # wake an idle sender, or a full batch
                return True
        if log_full:
            _log.warning("agentmeter: queue full (%d events), dropping events until it drains", self._max_queue)
        return False

    def _start_sender(self) -> None:
        # Called with the lock held, on the first event of this process.
        self._open_channel()
        self._thread = threading.Thread(target=self._run, name="agentmeter-sender", daemon=True)
        self._thread.start()

    def _open_channel(self) -> None:
        # Called with the lock held.
        if self._channel is None:
            self._channel = grpc.insecure_channel(self._target, options=_CHANNEL_OPTIONS)
            self._ingest = ingest_pb2_grpc.IngestServiceStub(self._channel)  # type: ignore[no-untyped-call]

    # -- sending ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stopping:
                    self._cv.wait()
                if not self._queue:
                    return
                # Wait for a full batch, the interval, a flush or close.
                deadline = _time.monotonic() + self._flush_interval
                while (
                    len(self._queue) < self._max_batch
                    and self._flush_upto <= self._done
                    and not self._stopping
                ):
                    remaining = deadline - _time.monotonic()
                    if remaining <= 0:
                        break
                    self._cv.wait(remaining)
                batch: list[event_pb2.Event] = []
                size = 0
                while self._queue and len(batch) < self._max_batch:
                    ev_size = self._queue[0].ByteSize()
                    if batch and size + ev_size > _MAX_BATCH_BYTES:
                        break
                    batch.append(self._queue.popleft())
                    size += ev_size
                self._inflight = len(batch)
            try:
                self._deliver(batch, _time.monotonic())
            except Exception:  # noqa: BLE001 - the sender thread must survive anything
                _log.exception("agentmeter: unexpected error sending %d events; dropped", len(batch))
                with self._cv:
                    self._dropped += len(batch)
            with self._cv:
                self._inflight = 0
                self._done += len(batch)
                self._cv.notify_all()

    def _deliver(self, batch: list[event_pb2.Event], started: float) -> None:
        """Send batch until answered, split when too large, or give it up."""
        try:
            resp = self._send_with_retries(batch, started)
        except _TooLarge as err:
            if len(batch) == 1:
                self._count_dropped(batch, f"refused as too large: {_details(err.__cause__ or err)}")
                return
            half = len(batch) // 2
            _log.info("agentmeter: request of %d events refused for its size; splitting", len(batch))
            self._deliver(batch[:half], started)
            self._deliver(batch[half:], started)
            return
        except _Abandoned:
            self._count_dropped(batch, "client closed before the sidecar answered")
            return
        except _Permanent as err:
            self._count_dropped(batch, f"refused by the sidecar: {err}")
            return
        except grpc.RpcError as err:  # retryable, but out of time
            if self._abandon.is_set():
                self._count_dropped(batch, f"client closed while retrying ({_code(err)})")
                return
            self._count_dropped(
                batch,
                f"not answered within give_up_after={self._give_up_after}s "
                f"(last: {_code(err)} {_details(err)})",
            )
            return
        self._count_response(batch, resp)

    def _send_with_retries(self, batch: list[event_pb2.Event], started: float) -> ingest_pb2.RecordResponse:
        request = ingest_pb2.RecordRequest(events=batch)

        def attempt() -> ingest_pb2.RecordResponse:
            if self._abandon.is_set():
                raise _Abandoned()
            assert self._ingest is not None
            try:
                resp: ingest_pb2.RecordResponse = self._ingest.Record(
                    request, timeout=self._timeout, metadata=self._metadata
                )
                return resp
            except grpc.RpcError as err:
                if _refused_for_size(err):
                    raise _TooLarge() from err
                if _code(err) in RETRYABLE_CODES:
                    raise
                raise _Permanent(f"{_code(err)}: {_details(err)}") from err

        def stop(state: tenacity.RetryCallState) -> bool:
            # Give up before a resend could reach the sidecar after its dedupe
            # window forgot the first copy.
            elapsed = _time.monotonic() - started + state.upcoming_sleep + self._timeout
            return self._abandon.is_set() or elapsed > self._give_up_after

        def before_sleep(state: tenacity.RetryCallState) -> None:
            with self._cv:
                self._retried += 1
            if state.attempt_number == 1:
                err = state.outcome.exception() if state.outcome else None
                _log.info("agentmeter: sidecar not answering (%s); retrying with backoff", _code(err) if err else None)

        def sleep(seconds: float) -> None:
            self._abandon.wait(seconds)  # close() cuts a backoff short

        backoff = tenacity.wait_random_exponential(multiplier=0.05, max=self._max_backoff)

        def wait(state: tenacity.RetryCallState) -> float:
            # Exponential backoff with full jitter, or the sidecar's RetryInfo when it asks for longer.
            err = state.outcome.exception() if state.outcome else None
            return max(backoff(state), min(_retry_delay(err), self._give_up_after) if err else 0.0)

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, grpc.RpcError) and _code(e) in RETRYABLE_CODES),
            wait=wait,
            stop=stop,
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        result: ingest_pb2.RecordResponse = retrying(attempt)
        return result

    def _count_response(self, batch: list[event_pb2.Event], resp: ingest_pb2.RecordResponse) -> None:
        with self._cv:
            self._sent += len(batch)
            self._accepted += resp.accepted
            self._duplicates += resp.duplicates
            self._rejected += len(resp.rejected)
        if resp.rejected:
            first = resp.rejected[0]
            _log.warning(
                "agentmeter: sidecar rejected %d of %d events; first: event %s field %s: %s",
                len(resp.rejected), len(batch), first.event_id, first.field, first.reason,
            )
            for r in resp.rejected:
                _log.debug("agentmeter: rejected event %s field %s: %s", r.event_id, r.field, r.reason)

    def _count_dropped(self, batch: list[event_pb2.Event], why: str) -> None:
        with self._cv:
            self._dropped += len(batch)
        _log.warning("agentmeter: dropped %d events: %s", len(batch), why)

    # -- lifecycle ----------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Send everything recorded so far; True once the sidecar answered for
        (or the client gave up) every such event, False after ``timeout``."""
        deadline = _time.monotonic() + timeout
        with self._cv:
            target = self._enqueued
            if self._done >= target:
                return True
            self._flush_upto = max(self._flush_upto, target)
            self._cv.notify_all()
            while self._done < target:
                remaining = deadline - _time.monotonic()
                if remaining <= 0 or self._thread is None:
                    return False
                self._cv.wait(remaining)
            return True

    def close(self, timeout: float = 5.0) -> None:
        """Flush for at most ``timeout`` seconds, then stop the sender and close
        the channel; events still queued are dropped and counted. Idempotent;
        recording after close returns False."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
        deadline = _time.monotonic() + timeout
        flushed = self.flush(timeout)
        with self._cv:
            self._stopping = True
            if not flushed:
                self._abandon.set()
                self._dropped += len(self._queue)
                self._queue.clear()
            self._cv.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.1, deadline - _time.monotonic()))
        if self._channel is not None:
            self._channel.close()

    def _at_exit(self) -> None:
        self.close(self._exit_timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def stats(self) -> Stats:
        """A snapshot of the client's counters."""
        with self._cv:
            return Stats(
                queued=len(self._queue) + self._inflight,
                sent=self._sent,
                accepted=self._accepted,
                duplicates=self._duplicates,
                rejected=self._rejected,
                invalid=self._invalid,
                dropped=self._dropped,
                retried=self._retried,
            )

    # -- usage API ----------------------------------------------------------------

    def _usage_stub(self) -> usage_pb2_grpc.UsageServiceStub:
        with self._cv:
            if self._closed:
                raise RuntimeError("agentmeter client is closed")
            self._open_channel()
            if self._usage is None:
                self._usage = usage_pb2_grpc.UsageServiceStub(self._channel)  # type: ignore[no-untyped-call]
            return self._usage

    def usage(self, conversation_id: str, *, timeout: float | None = None) -> usage_pb2.ConversationUsage | None:
        """The conversation's ledger entry (``u.cost_usd``, ``u.tokens.input``,
        ``u.remaining_usd``, ...), or None when the sidecar does not track it.
        Unlike recording, this raises ``grpc.RpcError`` on other failures."""
        try:
            resp = self._usage_stub().GetUsage(
                usage_pb2.GetUsageRequest(conversation_id=conversation_id),
                timeout=timeout if timeout is not None else self._timeout,
                metadata=self._metadata,
            )
        except grpc.RpcError as err:
            if _code(err) == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        usage: usage_pb2.ConversationUsage = resp.usage
        return usage

    def watch_usage(self, conversation_id: str) -> Iterator[usage_pb2.ConversationUsage]:
        """Yield the conversation's ledger entry now and on every change (at most
        a few a second) until it closes; closing the iterator cancels the call.
        Raises ``grpc.RpcError`` (NOT_FOUND for an unknown conversation)."""
        call = self._usage_stub().WatchUsage(
            usage_pb2.WatchUsageRequest(conversation_id=conversation_id), metadata=self._metadata
        )
        try:
            for resp in call:
                yield resp.usage
        finally:
            call.cancel()
