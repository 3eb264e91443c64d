"""Scripted replies for the local LLM APIs (Gemini, Anthropic): a queue of answers, then a
default computed from the request, and a record of every request the official client sent."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reply:
    """One scripted answer: a JSON value for the structured output, raw text, or an error."""

    body: Any = None
    raw_text: str | None = None
    status: int = 200
    error_type: str = "api_error"
    delay_s: float = 0.0


@dataclass
class Script:
    """Replies served in order; when they run out, `default` computes one from the request."""

    replies: deque[Reply] = field(default_factory=deque)
    default: Callable[[dict[str, Any]], Reply] | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def push(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def next(self, request: dict[str, Any]) -> Reply:
        if self.replies:
            return self.replies.popleft()
        if self.default is not None:
            return self.default(request)
        return Reply(status=500, body={"message": "the fake has no reply scripted"})
