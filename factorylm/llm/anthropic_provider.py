"""Claude through the official anthropic client; structured output by forced tool use."""

from __future__ import annotations

from typing import Any

import anthropic

from factorylm.llm.base import Completion, InvalidOutput, ProviderError


class AnthropicProvider:
    name = "anthropic"

    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        base_url: str | None = None,
        timeout_s: float = 30.0,
        max_tokens: int = 2048,
    ) -> None:
        self.model = model
        self._max_tokens = max_tokens
        # No client-side retries: on a failure the router moves to the other provider.
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0
        )

    async def complete_json(
        self, *, system: str, prompt: str, schema: dict[str, Any], schema_name: str
    ) -> Completion:
        try:
            message = await self._client.messages.create(
                model=self.model,
                max_tokens=self._max_tokens,
                system=system,
                messages=[{"role": "user", "content": prompt}],
                tools=[
                    {
                        "name": schema_name,
                        "description": f"Record the {schema_name} answer.",
                        "input_schema": schema,
                    }
                ],
                tool_choice={"type": "tool", "name": schema_name},
            )
        except anthropic.APIError as exc:
            raise ProviderError(f"anthropic: {type(exc).__name__}: {exc}") from exc
        completion = Completion(
            data=None,
            model=message.model or self.model,
            input_tokens=message.usage.input_tokens,
            output_tokens=message.usage.output_tokens,
        )
        for block in message.content:
            if block.type == "tool_use" and block.name == schema_name:
                return Completion(
                    data=block.input,
                    model=completion.model,
                    input_tokens=completion.input_tokens,
                    output_tokens=completion.output_tokens,
                )
        text = " ".join(getattr(b, "text", "") for b in message.content)
        raise InvalidOutput(f"no {schema_name} tool call in the answer", text, completion)
