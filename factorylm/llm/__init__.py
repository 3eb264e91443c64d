"""LLM providers behind one interface: Claude (anthropic), Gemini (google-genai), and an
offline rules-based answer when no key is configured. See docs/agents.md."""

from __future__ import annotations

import asyncpg

from factorylm.llm.anthropic_provider import AnthropicProvider
from factorylm.llm.base import LlmProvider
from factorylm.llm.gemini_provider import GeminiProvider
from factorylm.llm.router import Answer, CallContext, LlmRouter, StructuredTask
from factorylm.llm.usage import UsageRecorder
from factorylm.settings import Settings

__all__ = [
    "Answer",
    "CallContext",
    "LlmRouter",
    "StructuredTask",
    "build_providers",
    "build_router",
]


def build_providers(settings: Settings) -> list[LlmProvider]:
    """The configured providers, the primary first; empty when no key is set."""
    found: dict[str, LlmProvider] = {}
    if settings.anthropic_api_key is not None:
        found["anthropic"] = AnthropicProvider(
            api_key=settings.anthropic_api_key.get_secret_value(),
            model=settings.anthropic_model,
            base_url=settings.anthropic_base_url,
            timeout_s=settings.llm_timeout_s,
            max_tokens=settings.llm_max_tokens,
        )
    if settings.gemini_api_key is not None:
        found["gemini"] = GeminiProvider(
            api_key=settings.gemini_api_key.get_secret_value(),
            model=settings.gemini_model,
            base_url=settings.gemini_base_url,
            api_version=settings.gemini_api_version,
            timeout_s=settings.llm_timeout_s,
            max_tokens=settings.llm_max_tokens,
        )
    order = sorted(found, key=lambda name: name != settings.llm_primary)
    return [found[name] for name in order]


def build_router(settings: Settings, pool: asyncpg.Pool | None) -> LlmRouter:
    return LlmRouter(
        build_providers(settings),
        UsageRecorder(pool) if pool is not None else None,
        # The router's own deadline backs up the clients' and covers a stalled stream.
        timeout_s=settings.llm_timeout_s + 5,
    )
