from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGENT_STATE_UNSPECIFIED: _ClassVar[AgentState]
    AGENT_STATE_LOADING: _ClassVar[AgentState]
    AGENT_STATE_RUNNING: _ClassVar[AgentState]
    AGENT_STATE_AWAITING_USER_INPUT: _ClassVar[AgentState]
    AGENT_STATE_PAUSED: _ClassVar[AgentState]
    AGENT_STATE_STOPPED: _ClassVar[AgentState]
    AGENT_STATE_FINISHED: _ClassVar[AgentState]
    AGENT_STATE_REJECTED: _ClassVar[AgentState]
    AGENT_STATE_ERROR: _ClassVar[AgentState]
    AGENT_STATE_AWAITING_USER_CONFIRMATION: _ClassVar[AgentState]
    AGENT_STATE_USER_CONFIRMED: _ClassVar[AgentState]
    AGENT_STATE_USER_REJECTED: _ClassVar[AgentState]
    AGENT_STATE_RATE_LIMITED: _ClassVar[AgentState]

class ConversationTrigger(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONVERSATION_TRIGGER_UNSPECIFIED: _ClassVar[ConversationTrigger]
    CONVERSATION_TRIGGER_GUI: _ClassVar[ConversationTrigger]
    CONVERSATION_TRIGGER_RESOLVER: _ClassVar[ConversationTrigger]
    CONVERSATION_TRIGGER_API: _ClassVar[ConversationTrigger]
    CONVERSATION_TRIGGER_SLACK: _ClassVar[ConversationTrigger]
    CONVERSATION_TRIGGER_SUGGESTED_TASK: _ClassVar[ConversationTrigger]
    CONVERSATION_TRIGGER_MICROAGENT_MANAGEMENT: _ClassVar[ConversationTrigger]
    CONVERSATION_TRIGGER_JIRA: _ClassVar[ConversationTrigger]
    CONVERSATION_TRIGGER_LINEAR: _ClassVar[ConversationTrigger]

class CloseReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLOSE_REASON_UNSPECIFIED: _ClassVar[CloseReason]
    CLOSE_REASON_FINISHED: _ClassVar[CloseReason]
    CLOSE_REASON_EVICTED: _ClassVar[CloseReason]
    CLOSE_REASON_IDLE: _ClassVar[CloseReason]
    CLOSE_REASON_ERROR: _ClassVar[CloseReason]
    CLOSE_REASON_USER: _ClassVar[CloseReason]
    CLOSE_REASON_DELETED: _ClassVar[CloseReason]

class RuntimeFaultKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUNTIME_FAULT_KIND_UNSPECIFIED: _ClassVar[RuntimeFaultKind]
    RUNTIME_FAULT_KIND_COMMAND_TIMEOUT_SOFT: _ClassVar[RuntimeFaultKind]
    RUNTIME_FAULT_KIND_COMMAND_TIMEOUT_HARD: _ClassVar[RuntimeFaultKind]
    RUNTIME_FAULT_KIND_OOM_KILLED: _ClassVar[RuntimeFaultKind]
    RUNTIME_FAULT_KIND_RUNTIME_DISCONNECTED: _ClassVar[RuntimeFaultKind]
AGENT_STATE_UNSPECIFIED: AgentState
AGENT_STATE_LOADING: AgentState
AGENT_STATE_RUNNING: AgentState
AGENT_STATE_AWAITING_USER_INPUT: AgentState
AGENT_STATE_PAUSED: AgentState
AGENT_STATE_STOPPED: AgentState
AGENT_STATE_FINISHED: AgentState
AGENT_STATE_REJECTED: AgentState
AGENT_STATE_ERROR: AgentState
AGENT_STATE_AWAITING_USER_CONFIRMATION: AgentState
AGENT_STATE_USER_CONFIRMED: AgentState
AGENT_STATE_USER_REJECTED: AgentState
AGENT_STATE_RATE_LIMITED: AgentState
CONVERSATION_TRIGGER_UNSPECIFIED: ConversationTrigger
CONVERSATION_TRIGGER_GUI: ConversationTrigger
CONVERSATION_TRIGGER_RESOLVER: ConversationTrigger
CONVERSATION_TRIGGER_API: ConversationTrigger
CONVERSATION_TRIGGER_SLACK: ConversationTrigger
CONVERSATION_TRIGGER_SUGGESTED_TASK: ConversationTrigger
CONVERSATION_TRIGGER_MICROAGENT_MANAGEMENT: ConversationTrigger
CONVERSATION_TRIGGER_JIRA: ConversationTrigger
CONVERSATION_TRIGGER_LINEAR: ConversationTrigger
CLOSE_REASON_UNSPECIFIED: CloseReason
CLOSE_REASON_FINISHED: CloseReason
CLOSE_REASON_EVICTED: CloseReason
CLOSE_REASON_IDLE: CloseReason
CLOSE_REASON_ERROR: CloseReason
CLOSE_REASON_USER: CloseReason
CLOSE_REASON_DELETED: CloseReason
RUNTIME_FAULT_KIND_UNSPECIFIED: RuntimeFaultKind
RUNTIME_FAULT_KIND_COMMAND_TIMEOUT_SOFT: RuntimeFaultKind
RUNTIME_FAULT_KIND_COMMAND_TIMEOUT_HARD: RuntimeFaultKind
RUNTIME_FAULT_KIND_OOM_KILLED: RuntimeFaultKind
RUNTIME_FAULT_KIND_RUNTIME_DISCONNECTED: RuntimeFaultKind

class Event(_message.Message):
    __slots__ = ("event_id", "time", "conversation_id", "agent", "llm_call", "agent_status", "conversation", "runtime_fault")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    LLM_CALL_FIELD_NUMBER: _ClassVar[int]
    AGENT_STATUS_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FAULT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    time: _timestamp_pb2.Timestamp
    conversation_id: str
    agent: str
    llm_call: LLMCall
    agent_status: AgentStatus
    conversation: ConversationEvent
    runtime_fault: RuntimeFault
    def __init__(self, event_id: _Optional[str] = ..., time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., conversation_id: _Optional[str] = ..., agent: _Optional[str] = ..., llm_call: _Optional[_Union[LLMCall, _Mapping]] = ..., agent_status: _Optional[_Union[AgentStatus, _Mapping]] = ..., conversation: _Optional[_Union[ConversationEvent, _Mapping]] = ..., runtime_fault: _Optional[_Union[RuntimeFault, _Mapping]] = ...) -> None: ...

class LLMCall(_message.Message):
    __slots__ = ("provider", "operation", "request_model", "response_model", "response_id", "llm_service", "prompt_tokens", "completion_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "context_window", "latency_seconds", "time_to_first_token_seconds", "cost_usd", "error_type", "cache_write_1h_tokens")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_MODEL_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_MODEL_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    LLM_SERVICE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_READ_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_WINDOW_FIELD_NUMBER: _ClassVar[int]
    LATENCY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_1H_TOKENS_FIELD_NUMBER: _ClassVar[int]
    provider: str
    operation: str
    request_model: str
    response_model: str
    response_id: str
    llm_service: str
    prompt_tokens: int
    completion_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    context_window: int
    latency_seconds: float
    time_to_first_token_seconds: float
    cost_usd: float
    error_type: str
    cache_write_1h_tokens: int
    def __init__(self, provider: _Optional[str] = ..., operation: _Optional[str] = ..., request_model: _Optional[str] = ..., response_model: _Optional[str] = ..., response_id: _Optional[str] = ..., llm_service: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., cache_read_tokens: _Optional[int] = ..., cache_write_tokens: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ..., context_window: _Optional[int] = ..., latency_seconds: _Optional[float] = ..., time_to_first_token_seconds: _Optional[float] = ..., cost_usd: _Optional[float] = ..., error_type: _Optional[str] = ..., cache_write_1h_tokens: _Optional[int] = ...) -> None: ...

class AgentStatus(_message.Message):
    __slots__ = ("state", "reason")
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    state: AgentState
    reason: str
    def __init__(self, state: _Optional[_Union[AgentState, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class ConversationEvent(_message.Message):
    __slots__ = ("created", "session_started", "closed", "limit")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    SESSION_STARTED_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    created: ConversationCreated
    session_started: SessionStarted
    closed: ConversationClosed
    limit: ConcurrencyLimit
    def __init__(self, created: _Optional[_Union[ConversationCreated, _Mapping]] = ..., session_started: _Optional[_Union[SessionStarted, _Mapping]] = ..., closed: _Optional[_Union[ConversationClosed, _Mapping]] = ..., limit: _Optional[_Union[ConcurrencyLimit, _Mapping]] = ...) -> None: ...

class ConversationCreated(_message.Message):
    __slots__ = ("max_budget_usd", "trigger")
    MAX_BUDGET_USD_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    max_budget_usd: float
    trigger: ConversationTrigger
    def __init__(self, max_budget_usd: _Optional[float] = ..., trigger: _Optional[_Union[ConversationTrigger, str]] = ...) -> None: ...

class SessionStarted(_message.Message):
    __slots__ = ("success", "duration_seconds")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    success: bool
    duration_seconds: float
    def __init__(self, success: bool = ..., duration_seconds: _Optional[float] = ...) -> None: ...

class ConversationClosed(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: CloseReason
    def __init__(self, reason: _Optional[_Union[CloseReason, str]] = ...) -> None: ...

class ConcurrencyLimit(_message.Message):
    __slots__ = ("max_concurrent_conversations",)
    MAX_CONCURRENT_CONVERSATIONS_FIELD_NUMBER: _ClassVar[int]
    max_concurrent_conversations: int
    def __init__(self, max_concurrent_conversations: _Optional[int] = ...) -> None: ...

class RuntimeFault(_message.Message):
    __slots__ = ("kind", "exit_code")
    KIND_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    kind: RuntimeFaultKind
    exit_code: int
    def __init__(self, kind: _Optional[_Union[RuntimeFaultKind, str]] = ..., exit_code: _Optional[int] = ...) -> None: ...
