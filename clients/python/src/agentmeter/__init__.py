"""agentmeter: record an AI agent's LLM calls and events to its agentmeter sidecar.

    import agentmeter

    client = agentmeter.Client("localhost:4320", agent="my-agent")
    with agentmeter.conversation("c1", llm_service="agent"):
        client.llm_call(provider="openai", request_model="gpt-4o", prompt_tokens=1200,
                        completion_tokens=80, latency_seconds=1.4)
    print(client.usage("c1").cost_usd)

Every litellm call of the process, with one line::

    litellm.callbacks = [agentmeter.litellm.AgentmeterCallback()]
"""

from ._client import RETRYABLE_CODES, Client, Stats
from ._context import Scope, conversation
from .v1 import event_pb2, ingest_pb2, usage_pb2

__all__ = [
    "RETRYABLE_CODES",
    "Client",
    "Scope",
    "Stats",
    "conversation",
    "event_pb2",
    "ingest_pb2",
    "usage_pb2",
]
