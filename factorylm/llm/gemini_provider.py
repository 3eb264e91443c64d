"""Gemini through the official google-genai client; structured output by a JSON schema."""

from __future__ import annotations

import json
from typing import Any

import httpx
from google import genai
from google.genai import errors, types

from factorylm.llm.base import Completion, InvalidOutput, ProviderError


class GeminiProvider:
    name = "gemini"

    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        base_url: str | None = None,
        api_version: str = "v1beta",
        timeout_s: float = 30.0,
        max_tokens: int = 2048,
    ) -> None:
        self.model = model
        self._max_tokens = max_tokens
        self._client = genai.Client(
            api_key=api_key,
            http_options=types.HttpOptions(
                base_url=base_url, api_version=api_version, timeout=int(timeout_s * 1000)
            ),
        )

    async def complete_json(
        self, *, system: str, prompt: str, schema: dict[str, Any], schema_name: str
    ) -> Completion:
        return await self.generate_json(prompt, system=system, schema=schema)

    async def generate_json(
        self,
        contents: types.ContentUnion,
        *,
        system: str,
        schema: dict[str, Any],
        label: str = "gemini",
    ) -> Completion:
        """One JSON answer to `contents` (text, or parts such as an image and a prompt)."""
        try:
            response = await self._client.aio.models.generate_content(
                model=self.model,
                contents=contents,
                config=types.GenerateContentConfig(
                    system_instruction=system,
                    response_mime_type="application/json",
                    response_json_schema=schema,
                    max_output_tokens=self._max_tokens,
                ),
            )
        except (errors.APIError, httpx.HTTPError) as exc:
            raise ProviderError(f"{label}: {type(exc).__name__}: {exc}") from exc
        usage = response.usage_metadata
        completion = Completion(
            data=None,
            model=response.model_version or self.model,
            input_tokens=(usage.prompt_token_count or 0) if usage else 0,
            output_tokens=(usage.candidates_token_count or 0) if usage else 0,
        )
        text = response.text or ""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidOutput(f"not JSON: {exc}", text, completion) from exc
        return Completion(
            data=data,
            model=completion.model,
            input_tokens=completion.input_tokens,
            output_tokens=completion.output_tokens,
        )
