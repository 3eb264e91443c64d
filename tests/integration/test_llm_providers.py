"""The LLM router with the official anthropic and google-genai clients against local fake
servers: structured output, a bounded repair, failover on errors and timeouts, the offline
answer, and one llm_usage row per call."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import asyncpg
import pytest
from fakes.anthropic_api import fake_anthropic
from fakes.gemini_api import fake_gemini
from fakes.server import FakeServer, Reply, Script
from pydantic import BaseModel, Field

from factorylm.llm import CallContext, StructuredTask, build_providers, build_router
from factorylm.llm.router import LlmRouter
from factorylm.llm.usage import UsageRecorder
from factorylm.models.agents import OFFLINE
from factorylm.settings import Settings


class Step(BaseModel):
    text: str = Field(min_length=3)


class Verdict(BaseModel):
    label: Literal["fault", "normal"]
    confidence: float = Field(ge=0, le=1)
    steps: list[Step]


GOOD = {"label": "fault", "confidence": 0.8, "steps": [{"text": "check the bearing"}]}
BAD = {"label": "broken", "confidence": 3, "steps": []}


def task(check: bool = False) -> StructuredTask[Verdict]:
    def only_fault(v: Verdict) -> None:
        if v.label != "fault":
            raise ValueError("label must be fault for a drift this large")

    return StructuredTask(
        agent="test_agent",
        system="You classify drifts.",
        prompt="vibration on press-1 drifted +6σ",
        output=Verdict,
        offline=lambda: Verdict(label="fault", confidence=0.5, steps=[Step(text="rules step")]),
        check=only_fault if check else None,
    )


@dataclass
class Fakes:
    anthropic: Script
    gemini: Script
    settings: Settings
    workflow_id: str


@pytest.fixture
async def fakes(settings: Settings) -> AsyncIterator[Fakes]:
    a_script, g_script = Script(), Script()
    servers: list[FakeServer] = [fake_anthropic(a_script), fake_gemini(g_script)]
    for server in servers:
        await server.start()
    s = settings.model_copy(
        update={
            "anthropic_api_key": "sk-ant-test",
            "anthropic_base_url": servers[0].url,
            "gemini_api_key": "gemini-test-key",
            "gemini_base_url": servers[1].url,
            "llm_timeout_s": 1.0,
        }
    )
    s = Settings.model_validate(s.model_dump())  # re-validate: the keys become SecretStr
    yield Fakes(a_script, g_script, s, f"wf-{uuid.uuid4().hex[:8]}")
    for server in servers:
        await server.stop()


def router(f: Fakes, pool: asyncpg.Pool) -> LlmRouter:
    r = build_router(f.settings, pool)
    r._timeout_s = 1.0  # the fakes answer in milliseconds; a stalled one is a timeout
    return r


async def usage(pool: asyncpg.Pool, workflow_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT * FROM llm_usage WHERE workflow_id = $1 ORDER BY id", workflow_id
    )
    return rows


async def test_claude_answers_through_forced_tool_use(fakes: Fakes, pool: asyncpg.Pool) -> None:
    fakes.anthropic.push(Reply(body=GOOD))
    ctx = CallContext("test_agent", fakes.workflow_id, "triage")
    answer = await router(fakes, pool).structured(task(), ctx)
    assert answer.value == Verdict.model_validate(GOOD), answer.failures
    assert answer.generated_by == "anthropic claude-sonnet-4-6" and not answer.offline
    sent = fakes.anthropic.requests[0]
    assert sent["tool_choice"] == {"type": "tool", "name": "verdict"}
    schema = sent["tools"][0]["input_schema"]
    assert "$defs" not in schema and schema["properties"]["steps"]["items"]["type"] == "object"
    assert "sk-ant-test" in str(fakes.anthropic.headers[0])
    [row] = await usage(pool, fakes.workflow_id)
    assert (row["provider"], row["model"], row["agent"], row["activity"]) == (
        "anthropic",
        "claude-sonnet-4-6",
        "test_agent",
        "triage",
    )
    assert row["ok"] and row["input_tokens"] > 0 and row["output_tokens"] > 0
    expected = (row["input_tokens"] * 3 + row["output_tokens"] * 15) / 1e6
    assert float(row["cost_usd"]) == pytest.approx(expected, abs=1e-6)


async def test_invalid_output_gets_one_repair(fakes: Fakes, pool: asyncpg.Pool) -> None:
    fakes.anthropic.push(Reply(body=BAD), Reply(body=GOOD))
    answer = await router(fakes, pool).structured(
        task(), CallContext("test_agent", fakes.workflow_id)
    )
    assert answer.provider == "anthropic" and answer.value.label == "fault"
    repair = fakes.anthropic.requests[1]["messages"][0]["content"]
    assert "rejected" in repair and "label" in repair and "broken" in repair
    rows = await usage(pool, fakes.workflow_id)
    assert [(r["purpose"], r["ok"]) for r in rows] == [("answer", False), ("repair", True)]
    assert "invalid output" in rows[0]["error"] and rows[0]["input_tokens"] > 0


async def test_domain_check_failure_is_repaired_too(fakes: Fakes, pool: asyncpg.Pool) -> None:
    normal = {**GOOD, "label": "normal"}
    fakes.anthropic.push(Reply(body=normal), Reply(body=GOOD))
    answer = await router(fakes, pool).structured(
        task(check=True), CallContext("test_agent", fakes.workflow_id)
    )
    assert answer.value.label == "fault"
    assert "label must be fault" in fakes.anthropic.requests[1]["messages"][0]["content"]


async def test_still_invalid_after_repair_fails_over(fakes: Fakes, pool: asyncpg.Pool) -> None:
    fakes.anthropic.push(Reply(body=BAD), Reply(body=BAD))
    fakes.gemini.push(Reply(body=GOOD))
    answer = await router(fakes, pool).structured(
        task(), CallContext("test_agent", fakes.workflow_id)
    )
    assert answer.provider == "gemini" and len(fakes.anthropic.requests) == 2
    assert "still invalid after 1 repair" in answer.failures[0]


@pytest.mark.parametrize("status", [500, 529, 429])
async def test_claude_error_fails_over_to_gemini(
    fakes: Fakes, pool: asyncpg.Pool, status: int
) -> None:
    fakes.anthropic.push(Reply(status=status, error_type="overloaded_error", body="Overloaded"))
    fakes.gemini.push(Reply(body=GOOD))
    answer = await router(fakes, pool).structured(
        task(), CallContext("test_agent", fakes.workflow_id)
    )
    assert answer.generated_by == "gemini gemini-2.5-flash"
    sent = fakes.gemini.requests[0]
    assert sent["_version"] == "v1beta" and sent["_model"] == "gemini-2.5-flash"
    assert sent["generationConfig"]["responseMimeType"] == "application/json"
    assert "responseJsonSchema" in sent["generationConfig"]
    assert fakes.gemini.headers[0]["x-goog-api-key"] == "gemini-test-key"
    rows = await usage(pool, fakes.workflow_id)
    assert [(r["provider"], r["ok"]) for r in rows] == [("anthropic", False), ("gemini", True)]
    assert str(status) in rows[0]["error"]
    assert rows[1]["input_tokens"] > 0 and float(rows[1]["cost_usd"]) > 0


async def test_claude_timeout_fails_over(fakes: Fakes, pool: asyncpg.Pool) -> None:
    fakes.anthropic.push(Reply(body=GOOD, delay_s=3.0))
    fakes.gemini.push(Reply(body=GOOD))
    answer = await router(fakes, pool).structured(
        task(), CallContext("test_agent", fakes.workflow_id)
    )
    assert answer.provider == "gemini"
    rows = await usage(pool, fakes.workflow_id)
    assert rows[0]["provider"] == "anthropic" and not rows[0]["ok"]
    assert "timeout" in rows[0]["error"].lower() or "timed out" in rows[0]["error"].lower()


async def test_gemini_primary_and_non_json_text_is_repaired(
    fakes: Fakes, pool: asyncpg.Pool
) -> None:
    s = fakes.settings.model_copy(update={"llm_primary": "gemini"})
    r = LlmRouter(build_providers(s), UsageRecorder(pool), timeout_s=2.0)
    assert [p.name for p in r.providers] == ["gemini", "anthropic"]
    fakes.gemini.push(Reply(raw_text="Sure! Here is the answer: fault"), Reply(body=GOOD))
    answer = await r.structured(task(), CallContext("test_agent", fakes.workflow_id))
    assert answer.provider == "gemini" and answer.value.label == "fault"
    assert not fakes.anthropic.requests
    rows = await usage(pool, fakes.workflow_id)
    assert [(r["purpose"], r["ok"]) for r in rows] == [("answer", False), ("repair", True)]


async def test_every_provider_down_falls_back_to_offline_rules(
    fakes: Fakes, pool: asyncpg.Pool
) -> None:
    fakes.anthropic.push(Reply(status=500, body="down"))
    fakes.gemini.push(Reply(status=503, body="The model is overloaded."))
    answer = await router(fakes, pool).structured(
        task(), CallContext("test_agent", fakes.workflow_id)
    )
    assert answer.offline and answer.generated_by == OFFLINE
    assert answer.value.steps[0].text == "rules step" and len(answer.failures) == 2
    rows = await usage(pool, fakes.workflow_id)
    assert [r["provider"] for r in rows] == ["anthropic", "gemini", "offline"]
    assert float(rows[2]["cost_usd"]) == 0


async def test_no_key_means_offline(settings: Settings, pool: asyncpg.Pool) -> None:
    wf = f"wf-{uuid.uuid4().hex[:8]}"
    r = build_router(settings, pool)
    assert r.offline and build_providers(settings) == []
    answer = await r.structured(task(), CallContext("test_agent", wf))
    assert answer.offline and answer.generated_by == "offline rules"
    [row] = await usage(pool, wf)
    assert row["provider"] == "offline" and row["input_tokens"] == 0
