"""What every LLM provider offers: one structured completion, JSON in and JSON out."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel


class ProviderError(RuntimeError):
    """The provider failed (HTTP error, timeout, refusal): the router fails over."""


class InvalidOutput(ValueError):
    """The provider answered, but not with parseable JSON: the router asks for a repair."""

    def __init__(self, message: str, raw: str, completion: Completion | None = None) -> None:
        super().__init__(message)
        self.raw = raw
        self.completion = completion


@dataclass(frozen=True)
class Completion:
    data: Any
    model: str
    input_tokens: int
    output_tokens: int


class LlmProvider(Protocol):
    name: str
    model: str

    async def complete_json(
        self, *, system: str, prompt: str, schema: dict[str, Any], schema_name: str
    ) -> Completion:
        """Answer `prompt` with a JSON value meant to match `schema`; raise ProviderError."""
        ...


def json_schema_for(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with every $ref inlined: tool and response schemas of both
    providers accept plain nested objects everywhere, $defs not everywhere."""
    schema = model.model_json_schema()
    defs: dict[str, Any] = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                target = copy.deepcopy(defs[ref.removeprefix("#/$defs/")])
                return inline(target)
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    result: dict[str, Any] = inline(schema)
    return result
