"""The conversation an agent is working on, carried in a context variable."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Scope:
    """The conversation and LLM role set by :func:`conversation`."""

    conversation_id: str
    llm_service: str = ""


_scope: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("agentmeter_scope", default=None)


@contextlib.contextmanager
def conversation(conversation_id: str, *, llm_service: str = "") -> Iterator[Scope]:
    """Attribute every event recorded inside the block to ``conversation_id``.

    Applies to ``Client.llm_call`` calls that name no conversation and to every
    litellm call seen by ``agentmeter.litellm.AgentmeterCallback``; ``llm_service``
    (``"agent"``, ``"condenser"``, ...) is the LLM's role. The scope follows
    contextvars: threads started inside the block do not inherit it, asyncio
    tasks created inside it do.
    """
    scope = Scope(conversation_id, llm_service)
    token = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(token)


def current() -> Scope | None:
    """The innermost active :func:`conversation` scope, or None."""
    return _scope.get()
