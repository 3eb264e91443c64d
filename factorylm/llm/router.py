"""One structured LLM call with validation, a bounded repair, failover and accounting.

Providers are tried in order. An answer must validate against the task's pydantic model (and
its extra check); an invalid answer gets one repair request to the same provider, then the next
provider is tried. Errors and timeouts fail over at once. When every provider has failed, or
none is configured, the task's offline rules answer, and the answer says so.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import activity

from factorylm.llm.base import InvalidOutput, LlmProvider, ProviderError, json_schema_for
from factorylm.llm.usage import UsageRecorder, UsageRow
from factorylm.models.agents import OFFLINE

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class StructuredTask(Generic[T]):
    agent: str
    system: str
    prompt: str
    output: type[T]
    offline: Callable[[], T] = field(repr=False)
    # Domain rules a schema cannot say (e.g. "only catalog actions"); raise ValueError.
    check: Callable[[T], None] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class CallContext:
    agent: str
    workflow_id: str | None = None
    activity: str | None = None

    @classmethod
    def current(cls, agent: str, workflow_id: str | None = None) -> CallContext:
        """The running activity's workflow and name, when called from one."""
        if activity.in_activity():
            info = activity.info()
            return cls(agent, workflow_id or info.workflow_id, info.activity_type)
        return cls(agent, workflow_id, None)


@dataclass(frozen=True)
class Answer(Generic[T]):
    value: T
    provider: str
    model: str
    failures: tuple[str, ...] = ()

    @property
    def offline(self) -> bool:
        return self.provider == "offline"

    @property
    def generated_by(self) -> str:
        return OFFLINE if self.offline else f"{self.provider} {self.model}"


def _schema_name(model: type[BaseModel]) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", model.__name__).lower()


def _errors(exc: ValidationError | ValueError) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
        )
    return str(exc)


def repair_prompt(prompt: str, raw: str, problem: str) -> str:
    return (
        f"{prompt}\n\nYour previous answer was:\n{raw[:4000]}\n\n"
        f"It was rejected: {problem}\n"
        "Answer again, following the schema exactly and fixing only what was rejected."
    )


class LlmRouter:
    def __init__(
        self,
        providers: Sequence[LlmProvider],
        recorder: UsageRecorder | None = None,
        *,
        timeout_s: float = 30.0,
        repair_attempts: int = 1,
    ) -> None:
        self.providers = list(providers)
        self._recorder = recorder
        self._timeout_s = timeout_s
        self._repairs = repair_attempts

    @property
    def offline(self) -> bool:
        return not self.providers

    async def structured(self, task: StructuredTask[T], context: CallContext) -> Answer[T]:
        failures: list[str] = []
        for provider in self.providers:
            try:
                value, model = await self._ask(provider, task, context)
            except ProviderError as exc:
                failures.append(str(exc))
                continue
            return Answer(value, provider.name, model, tuple(failures))
        value = task.offline()
        await self._record(context, "offline", "rules", "answer", 0, 0, 0.0, True, None)
        return Answer(value, "offline", "rules", tuple(failures))

    async def _ask(
        self, provider: LlmProvider, task: StructuredTask[T], context: CallContext
    ) -> tuple[T, str]:
        schema = json_schema_for(task.output)
        name = _schema_name(task.output)
        prompt = task.prompt
        problem = ""
        for attempt in range(1 + self._repairs):
            purpose = "answer" if attempt == 0 else "repair"
            started = time.perf_counter()
            try:
                completion = await asyncio.wait_for(
                    provider.complete_json(
                        system=task.system, prompt=prompt, schema=schema, schema_name=name
                    ),
                    self._timeout_s,
                )
            except (ProviderError, TimeoutError) as exc:
                error = str(exc) or f"{provider.name}: timed out after {self._timeout_s:g} s"
                await self._record(
                    context, provider.name, provider.model, purpose, 0, 0, started, False, error
                )
                raise ProviderError(error) from exc
            except InvalidOutput as exc:
                done = exc.completion
                problem = str(exc)
                await self._record(
                    context,
                    provider.name,
                    done.model if done else provider.model,
                    purpose,
                    done.input_tokens if done else 0,
                    done.output_tokens if done else 0,
                    started,
                    False,
                    f"invalid output: {problem}",
                )
                prompt = repair_prompt(task.prompt, exc.raw, problem)
                continue
            raw = json.dumps(completion.data, ensure_ascii=False)
            try:
                value = task.output.model_validate(completion.data)
                if task.check is not None:
                    task.check(value)
            except (ValidationError, ValueError) as exc:
                problem = _errors(exc)
                await self._record(
                    context,
                    provider.name,
                    completion.model,
                    purpose,
                    completion.input_tokens,
                    completion.output_tokens,
                    started,
                    False,
                    f"invalid output: {problem}",
                )
                prompt = repair_prompt(task.prompt, raw, problem)
                continue
            await self._record(
                context,
                provider.name,
                completion.model,
                purpose,
                completion.input_tokens,
                completion.output_tokens,
                started,
                True,
                None,
            )
            return value, completion.model
        raise ProviderError(
            f"{provider.name}: output still invalid after {self._repairs} repair(s): {problem}"
        )

    async def _record(
        self,
        context: CallContext,
        provider: str,
        model: str,
        purpose: str,
        input_tokens: int,
        output_tokens: int,
        started: float,
        ok: bool,
        error: str | None,
    ) -> None:
        if self._recorder is None:
            return
        latency = (time.perf_counter() - started) * 1000 if started else None
        await self._recorder.record(
            UsageRow(
                agent=context.agent,
                workflow_id=context.workflow_id,
                activity=context.activity,
                provider=provider,
                model=model,
                purpose=purpose,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                latency_ms=latency,
                ok=ok,
                error=error,
            )
        )
