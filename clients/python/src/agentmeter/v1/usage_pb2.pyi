from agentmeter.v1 import event_pb2 as _event_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetUsageRequest(_message.Message):
    __slots__ = ("conversation_id",)
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    def __init__(self, conversation_id: _Optional[str] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("usage",)
    USAGE_FIELD_NUMBER: _ClassVar[int]
    usage: ConversationUsage
    def __init__(self, usage: _Optional[_Union[ConversationUsage, _Mapping]] = ...) -> None: ...

class WatchUsageRequest(_message.Message):
    __slots__ = ("conversation_id",)
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    def __init__(self, conversation_id: _Optional[str] = ...) -> None: ...

class WatchUsageResponse(_message.Message):
    __slots__ = ("usage",)
    USAGE_FIELD_NUMBER: _ClassVar[int]
    usage: ConversationUsage
    def __init__(self, usage: _Optional[_Union[ConversationUsage, _Mapping]] = ...) -> None: ...

class ListUsageRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "state")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    state: _event_pb2.AgentState
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., state: _Optional[_Union[_event_pb2.AgentState, str]] = ...) -> None: ...

class ListUsageResponse(_message.Message):
    __slots__ = ("usage", "next_page_token")
    USAGE_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    usage: _containers.RepeatedCompositeFieldContainer[ConversationUsage]
    next_page_token: str
    def __init__(self, usage: _Optional[_Iterable[_Union[ConversationUsage, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class TokenUsage(_message.Message):
    __slots__ = ("input", "output", "cache_read", "cache_write", "cache_write_1h", "reasoning")
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    CACHE_READ_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_1H_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    input: int
    output: int
    cache_read: int
    cache_write: int
    cache_write_1h: int
    reasoning: int
    def __init__(self, input: _Optional[int] = ..., output: _Optional[int] = ..., cache_read: _Optional[int] = ..., cache_write: _Optional[int] = ..., cache_write_1h: _Optional[int] = ..., reasoning: _Optional[int] = ...) -> None: ...

class PerTurnTokens(_message.Message):
    __slots__ = ("llm_service", "tokens")
    LLM_SERVICE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    llm_service: str
    tokens: int
    def __init__(self, llm_service: _Optional[str] = ..., tokens: _Optional[int] = ...) -> None: ...

class ConversationUsage(_message.Message):
    __slots__ = ("conversation_id", "agent", "cost_usd", "reported_cost_usd", "computed_cost_usd", "unpriced_calls", "tokens", "context_window", "per_turn_tokens", "context_utilization", "calls", "failed_calls", "state", "first_event_time", "last_event_time", "max_budget_usd", "remaining_usd", "budget_exceeded", "closed", "close_reason", "trigger", "runtime_faults")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    REPORTED_COST_USD_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_COST_USD_FIELD_NUMBER: _ClassVar[int]
    UNPRICED_CALLS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_WINDOW_FIELD_NUMBER: _ClassVar[int]
    PER_TURN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    FAILED_CALLS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FIRST_EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    MAX_BUDGET_USD_FIELD_NUMBER: _ClassVar[int]
    REMAINING_USD_FIELD_NUMBER: _ClassVar[int]
    BUDGET_EXCEEDED_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    CLOSE_REASON_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FAULTS_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    agent: str
    cost_usd: float
    reported_cost_usd: float
    computed_cost_usd: float
    unpriced_calls: int
    tokens: TokenUsage
    context_window: int
    per_turn_tokens: _containers.RepeatedCompositeFieldContainer[PerTurnTokens]
    context_utilization: float
    calls: int
    failed_calls: int
    state: _event_pb2.AgentState
    first_event_time: _timestamp_pb2.Timestamp
    last_event_time: _timestamp_pb2.Timestamp
    max_budget_usd: float
    remaining_usd: float
    budget_exceeded: bool
    closed: bool
    close_reason: _event_pb2.CloseReason
    trigger: _event_pb2.ConversationTrigger
    runtime_faults: int
    def __init__(self, conversation_id: _Optional[str] = ..., agent: _Optional[str] = ..., cost_usd: _Optional[float] = ..., reported_cost_usd: _Optional[float] = ..., computed_cost_usd: _Optional[float] = ..., unpriced_calls: _Optional[int] = ..., tokens: _Optional[_Union[TokenUsage, _Mapping]] = ..., context_window: _Optional[int] = ..., per_turn_tokens: _Optional[_Iterable[_Union[PerTurnTokens, _Mapping]]] = ..., context_utilization: _Optional[float] = ..., calls: _Optional[int] = ..., failed_calls: _Optional[int] = ..., state: _Optional[_Union[_event_pb2.AgentState, str]] = ..., first_event_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., last_event_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., max_budget_usd: _Optional[float] = ..., remaining_usd: _Optional[float] = ..., budget_exceeded: bool = ..., closed: bool = ..., close_reason: _Optional[_Union[_event_pb2.CloseReason, str]] = ..., trigger: _Optional[_Union[_event_pb2.ConversationTrigger, str]] = ..., runtime_faults: _Optional[int] = ...) -> None: ...
