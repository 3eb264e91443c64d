"""Alarm Triage, Watchman, Weaver and outcome feedback against the real database, the real
embedding model, and Claude through the official client talking to a local fake API."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import numpy as np
import pytest
from fakes.anthropic_api import fake_anthropic
from fakes.server import Reply, Script

from activities.agents.alarm_triage import AlarmTriage
from activities.agents.outcomes import OutcomeActivities
from activities.agents.watchman import Watchman
from activities.agents.weaver import Weaver
from activities.events import EventActivities
from activities.planning import gate_proposals
from factorylm.embeddings import get_embedder
from factorylm.llm import build_router
from factorylm.memory import VectorMemory
from factorylm.models.agents import (
    OFFLINE,
    AlarmTriageInput,
    OutcomeKind,
    RecordOutcomeInput,
    WatchmanInput,
    WeaverInput,
)
from factorylm.models.drift import DriftAlert, RecordEventInput
from factorylm.plant import load_plant
from factorylm.settings import PROJECT_ROOT, Settings
from helpers import make_alert

PLANT = load_plant(PROJECT_ROOT / "config" / "plant.yaml")


def drift(plc: str, vendor: str, sigma: float, when: datetime | None = None) -> DriftAlert:
    t = when or datetime.now(UTC)
    return DriftAlert(
        plc_id=plc,
        vendor=vendor,
        metric="vibration",
        unit="mm/s",
        sigma=sigma,
        window_mean=2.0 + sigma * 0.3,
        window_count=3000,
        window_seconds=300,
        baseline_mean=2.0,
        baseline_std=0.3,
        sample_time=t,
        detected_at=t,
        related={"motor_temp": 1.1},
    )


@pytest.fixture
def memory(pool: asyncpg.Pool, settings: Settings) -> VectorMemory:
    return VectorMemory(pool, get_embedder(settings))


async def record(pool: asyncpg.Pool, memory: VectorMemory, alert: DriftAlert) -> int:
    return await EventActivities(pool, memory).record_drift_event(
        RecordEventInput(workflow_id=f"t-{uuid.uuid4().hex[:8]}", alert=alert)
    )


async def test_what_fixed_the_siemens_press_leads_the_allen_bradley_triage(
    pool: asyncpg.Pool, settings: Settings, memory: VectorMemory
) -> None:
    tag = uuid.uuid4().hex[:4]
    router = build_router(settings, pool)
    past = await record(
        pool,
        memory,
        drift(f"press-{tag}", "siemens_s7", 2.3, datetime(2026, 1, 15, 8, 0, tzinfo=UTC)),
    )
    # The technician's reply, through the activity (and the LLM-less rules).
    outcome = await OutcomeActivities(memory, router).record_outcome(
        RecordOutcomeInput(event_id=past, text="fixed bearing")
    )
    assert (outcome.kind, outcome.action_taken, outcome.resolved) == (
        OutcomeKind.RESOLVED,
        "replaced_bearing",
        True,
    )
    assert outcome.generated_by == OFFLINE
    row = await pool.fetchrow("SELECT * FROM drift_events WHERE id = $1", past)
    assert (row["outcome"], row["outcome_kind"], row["action_taken"], row["resolved"]) == (
        "fixed bearing",
        "resolved",
        "replaced_bearing",
        True,
    )

    now = drift(f"mixer-{tag}", "allen_bradley", 2.6)
    current = await record(pool, memory, now)
    triage = await AlarmTriage(memory, router).alarm_triage(
        AlarmTriageInput(event_id=current, alert=now)
    )
    assert triage.generated_by == OFFLINE and 1 <= len(triage.similar) <= 5
    assert current not in [e.event_id for e in triage.similar]
    assert triage.what_worked is not None and triage.checklist[0] == triage.what_worked
    assert triage.checklist[0].startswith("Last time this worked: replaced bearing")
    assert f"similar to 2026-01-15 on press-{tag} (siemens_s7" in triage.checklist[0]
    assert any("sensor" in step for step in triage.checklist[1:])

    code = await AlarmTriage(memory, router).alarm_triage(
        AlarmTriageInput(alarm_code="F0812", plc_id=f"mixer-{tag}")
    )
    assert code.subject == f"alarm F0812 on mixer-{tag}" and "F0812" in code.checklist[0]


async def test_a_false_alarm_is_remembered_as_one(
    pool: asyncpg.Pool, settings: Settings, memory: VectorMemory
) -> None:
    tag = uuid.uuid4().hex[:4]
    router = build_router(settings, pool)
    past = await record(pool, memory, drift(f"fan-{tag}", "generic_modbus", 3.0))
    result = await OutcomeActivities(memory, router).record_outcome(
        RecordOutcomeInput(event_id=past, text="false alarm, sensor cable was loose")
    )
    assert result.kind is OutcomeKind.FALSE_POSITIVE and not result.resolved
    now = drift(f"fan-{tag}", "generic_modbus", 3.1)
    triage = await AlarmTriage(memory, router).alarm_triage(
        AlarmTriageInput(event_id=await record(pool, memory, now), alert=now)
    )
    assert triage.checklist[0].startswith("Last time this was a false alarm")


async def test_watchman_finds_what_moved_with_the_drift(pool: asyncpg.Pool) -> None:
    plc = f"line-{uuid.uuid4().hex[:6]}"
    end = datetime.now(UTC)
    rng = np.random.default_rng(3)
    rows = []
    for i in range(240):  # 2 minutes at 2 Hz: the preceding minute calm, the last one drifting
        t = end - timedelta(seconds=120) + timedelta(seconds=i * 0.5)
        ramp = max(0.0, (i - 120) / 120)
        rows += [
            (t, plc, "vibration", 2.0 + 3.0 * ramp + rng.normal(0, 0.05)),
            (t, plc, "motor_temp", 50.0 + 8.0 * ramp + rng.normal(0, 0.1)),
            (t, plc, "current", 12.0 + rng.normal(0, 0.2)),
        ]
    await pool.copy_records_to_table(
        "samples", records=rows, columns=["time", "plc_id", "metric", "value"]
    )
    result = await Watchman(pool).watchman(
        WatchmanInput(plc_id=plc, metric="vibration", end=end, window_s=60, bucket_s=2)
    )
    by_metric = {m.metric: m for m in result.movements}
    assert set(by_metric) == {"motor_temp", "current"}
    temp, current = by_metric["motor_temp"], by_metric["current"]
    assert temp.correlation is not None and temp.correlation > 0.9 and temp.moved
    assert temp.shift_sigma is not None and temp.shift_sigma > 2 and temp.buckets >= 25
    assert current.correlation is not None and abs(current.correlation) < 0.5
    assert not current.moved
    assert result.summary.startswith(f"moved with vibration on {plc}: motor_temp (r = +")

    quiet = await Watchman(pool).watchman(
        WatchmanInput(plc_id="no-such-plc", metric="vibration", end=end)
    )
    assert quiet.movements == [] and "no other metrics" in quiet.summary


WEAVER_BAD = {
    "summary": "Vibration on conveyor-1 is far above normal with a bearing precedent.",
    "findings": ["bearing precedent"],
    "proposals": [{"action": "replace_bearing_now", "reason": "the precedent says so"}],
}
WEAVER_GOOD = {
    "summary": "Vibration on conveyor-1 is far above normal with a bearing precedent.",
    "findings": ["A similar drift was fixed by replacing the bearing."],
    "proposals": [
        {"action": "reduce_motor_speed_to_60pct", "reason": "buys time until a planned stop"},
        {"action": "shutdown_motor", "reason": "vibration is above the trip level"},
    ],
}


async def test_weaver_on_claude_proposes_only_catalog_actions(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    script = Script()
    server = fake_anthropic(script)
    await server.start()
    try:
        s = Settings.model_validate(
            {
                **settings.model_dump(),
                "anthropic_api_key": "sk-ant-test",
                "anthropic_base_url": server.url,
            }
        )
        script.push(Reply(body=WEAVER_BAD), Reply(body=WEAVER_GOOD))
        alert = make_alert(6.0)
        wf = f"weaver-{uuid.uuid4().hex[:6]}"
        report = await Weaver(PLANT, build_router(s, pool)).weaver_report(
            WeaverInput(workflow_id=wf, event_id=1, alert=alert)
        )
    finally:
        await server.stop()
    repair = script.requests[1]["messages"][0]["content"]
    assert "replace_bearing_now" in repair and "choose only from" in repair
    assert [p.action for p in report.proposals] == ["reduce_motor_speed_to_60pct", "shutdown_motor"]
    assert not report.offline and report.generated_by.startswith("anthropic ")
    assert "_Written by anthropic" in report.markdown
    assert "- shutdown_motor: vibration is above the trip level" in report.markdown
    rows = await pool.fetch(
        "SELECT agent, purpose, ok FROM llm_usage WHERE workflow_id = $1 ORDER BY id", wf
    )
    assert [(r["agent"], r["purpose"], r["ok"]) for r in rows] == [
        ("weaver", "answer", False),
        ("weaver", "repair", True),
    ]
    # plan_response stays the gate: the Weaver's first choice is allowed here, so it is taken.
    plan = gate_proposals(PLANT, alert, list(report.proposals))
    assert plan is not None and plan.action == "reduce_motor_speed_to_60pct"


async def test_the_offline_weaver_says_so(pool: asyncpg.Pool, settings: Settings) -> None:
    report = await Weaver(PLANT, build_router(settings, pool)).weaver_report(
        WeaverInput(event_id=1, alert=make_alert(6.0))
    )
    assert report.offline and report.generated_by == OFFLINE
    assert "Offline report" in report.markdown
    assert [p.action for p in report.proposals] == ["shutdown_motor", "reduce_motor_speed_to_60pct"]


def test_the_outcome_command(settings: Settings) -> None:
    env = {
        **os.environ,
        "FACTORYLM_PG_PORT": str(settings.pg_port),
        "FACTORYLM_PG_DATABASE": settings.pg_database,
    }
    for key in list(env):
        if key.startswith(("FACTORYLM_ANTHROPIC", "FACTORYLM_GEMINI")):
            del env[key]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    import asyncio

    async def one_event() -> int:
        conn = await asyncpg.connect(settings.pg_dsn)
        try:
            return int(
                await conn.fetchval(
                    """INSERT INTO drift_events (workflow_id, plc_id, vendor, metric,
                           magnitude_sigma, window_mean, baseline_mean, baseline_std,
                           detected_at, text)
                       VALUES ($1, 'press-1', 'siemens_s7', 'vibration', 2.3, 2.7, 2.0, 0.3,
                               now(), 'vibration on press-1 drifted') RETURNING id""",
                    f"cli-{uuid.uuid4().hex[:6]}",
                )
            )
        finally:
            await conn.close()

    event_id = asyncio.run(one_event())
    done = cli("outcome", str(event_id), "fixed bearing")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"event {event_id}: resolved, action replaced_bearing (offline rules)"
    )
    missing = cli("outcome", "999999999", "false alarm")
    assert missing.returncode == 1 and "no drift event 999999999" in missing.stderr
