"""Photo → finding: Gemini vision first (retried), Claude vision on failure, offline last.

The image is bound to a provider for one call, so the shared LlmRouter does what it does for
text — validation against `VisionFinding`, one repair request, failover in order and a row in
llm_usage per call — while the image goes to each API as an image part (Gemini inline data,
Anthropic base64 image block). With no provider answering, the offline rules file the photo
as "needs manual review": a person looks at it, nothing is guessed.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Literal, cast

import anthropic
from anthropic.types import (
    Base64ImageSourceParam,
    ImageBlockParam,
    MessageParam,
    TextBlockParam,
    ToolParam,
)
from google.genai import types

from factorylm.llm.base import Completion, InvalidOutput, LlmProvider, ProviderError
from factorylm.llm.gemini_provider import GeminiProvider
from factorylm.llm.router import CallContext, LlmRouter, StructuredTask
from factorylm.llm.usage import UsageRecorder
from factorylm.models.agents import OFFLINE
from factorylm.models.photos import PhotoAnalysis, VisionFinding, unanalysed_finding
from factorylm.settings import Settings

AGENT = "photo_intake"

SYSTEM = (
    "You are a maintenance engineer looking at a photo a technician took on a plant floor. "
    "Say what the equipment is, what problem is visible (or 'none visible'), how severe it is "
    "for safe operation, and the work you would order. Read any asset tag, nameplate or QR "
    "code text exactly as printed. Never invent text you cannot read; lower your confidence "
    "when the photo is blurred, dark or does not show the problem."
)


def vision_prompt(note: str, known_assets: list[str]) -> str:
    lines = ["Analyse the attached photo."]
    if note.strip():
        lines.append(f"The technician wrote: {note.strip()!r}")
    if known_assets:
        lines.append("Asset tags in this plant: " + ", ".join(known_assets) + ".")
    return "\n".join(lines)


@dataclass(frozen=True)
class Image:
    data: bytes
    content_type: str


class GeminiVision:
    """Gemini with the photo as an inline image part, over the text provider's request."""

    name = "gemini"

    def __init__(self, settings: Settings) -> None:
        assert settings.gemini_api_key is not None
        self.model = settings.gemini_model
        self._gemini = GeminiProvider(
            api_key=settings.gemini_api_key.get_secret_value(),
            model=settings.gemini_model,
            base_url=settings.gemini_base_url,
            api_version=settings.gemini_api_version,
            timeout_s=settings.llm_timeout_s,
            max_tokens=settings.llm_max_tokens,
        )

    async def describe(
        self, image: Image, *, system: str, prompt: str, schema: dict[str, Any]
    ) -> Completion:
        contents = types.Content(
            role="user",
            parts=[
                types.Part.from_bytes(data=image.data, mime_type=image.content_type),
                types.Part.from_text(text=prompt),
            ],
        )
        return await self._gemini.generate_json(
            contents, system=system, schema=schema, label="gemini vision"
        )


def _image_message(image: Image, prompt: str) -> MessageParam:
    media_type = cast(
        Literal["image/jpeg", "image/png", "image/gif", "image/webp"], image.content_type
    )
    message: MessageParam = {
        "role": "user",
        "content": [
            ImageBlockParam(
                type="image",
                source=Base64ImageSourceParam(
                    type="base64",
                    media_type=media_type,
                    data=base64.b64encode(image.data).decode("ascii"),
                ),
            ),
            TextBlockParam(type="text", text=prompt),
        ],
    }
    return message


class ClaudeVision:
    name = "anthropic"

    def __init__(self, settings: Settings) -> None:
        assert settings.anthropic_api_key is not None
        self.model = settings.anthropic_model
        self._max_tokens = settings.llm_max_tokens
        # No client retries: Gemini was already retried, and offline is the next step.
        self._client = anthropic.AsyncAnthropic(
            api_key=settings.anthropic_api_key.get_secret_value(),
            base_url=settings.anthropic_base_url,
            timeout=settings.llm_timeout_s,
            max_retries=0,
        )

    async def describe(
        self, image: Image, *, system: str, prompt: str, schema: dict[str, Any]
    ) -> Completion:
        tool = "photo_finding"
        try:
            message = await self._client.messages.create(
                model=self.model,
                max_tokens=self._max_tokens,
                system=system,
                messages=[_image_message(image, prompt)],
                tools=[
                    ToolParam(
                        name=tool,
                        description="Record what the photo shows.",
                        input_schema=schema,
                    )
                ],
                tool_choice={"type": "tool", "name": tool},
            )
        except anthropic.APIError as exc:
            raise ProviderError(f"anthropic vision: {type(exc).__name__}: {exc}") from exc
        model = message.model or self.model
        for block in message.content:
            if block.type == "tool_use" and block.name == tool:
                return Completion(
                    block.input, model, message.usage.input_tokens, message.usage.output_tokens
                )
        text = " ".join(getattr(b, "text", "") for b in message.content)
        raise InvalidOutput(
            "no photo_finding tool call in the answer",
            text,
            Completion(None, model, message.usage.input_tokens, message.usage.output_tokens),
        )


VisionModel = GeminiVision | ClaudeVision


class _Bound:
    """One vision model with one image: the text-provider interface the router drives."""

    def __init__(self, vision: VisionModel, image: Image) -> None:
        self.vision = vision
        self.image = image
        self.name = vision.name
        self.model = vision.model

    async def complete_json(
        self, *, system: str, prompt: str, schema: dict[str, Any], schema_name: str
    ) -> Completion:
        return await self.vision.describe(self.image, system=system, prompt=prompt, schema=schema)


class PhotoAnalyst:
    def __init__(self, settings: Settings, recorder: UsageRecorder | None) -> None:
        self._settings = settings
        self._recorder = recorder
        # Clients are built once; each photo binds its image to them for one call.
        self._models: list[VisionModel] = []
        if settings.gemini_api_key is not None:
            self._models += [GeminiVision(settings)] * settings.photo_gemini_attempts
        if settings.anthropic_api_key is not None:
            self._models.append(ClaudeVision(settings))

    @property
    def offline(self) -> bool:
        return not self._models

    async def analyse(
        self, image: Image, note: str, known_assets: list[str], workflow_id: str | None
    ) -> PhotoAnalysis:
        providers: list[LlmProvider] = [_Bound(m, image) for m in self._models]
        router = LlmRouter(providers, self._recorder, timeout_s=self._settings.llm_timeout_s + 5)
        answer = await router.structured(
            StructuredTask(
                agent=AGENT,
                system=SYSTEM,
                prompt=vision_prompt(note, known_assets),
                output=VisionFinding,
                offline=lambda: unanalysed_finding(note, "offline: no vision model answered"),
            ),
            CallContext.current(AGENT, workflow_id),
        )
        finding = answer.value
        reason = ""
        if answer.offline:
            reason = (
                "no vision model is configured (offline rules)"
                if not answer.failures
                else "every vision model failed: " + " | ".join(answer.failures)[:500]
            )
        elif finding.confidence < self._settings.photo_review_below_confidence:
            reason = f"the model is only {finding.confidence:.0%} sure"
        return PhotoAnalysis(
            finding=finding,
            generated_by=OFFLINE if answer.offline else answer.generated_by,
            needs_manual_review=bool(reason),
            review_reason=reason,
        )
