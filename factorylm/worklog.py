"""The Workflow Tracker: one list of every agent's work — drift responses, photo intakes,
health checks, baselines, outcome follow-ups, and the Monkey's cards — with when, what, the
outcome, tokens and cost, and a link to its Temporal history.

Workflows come from Temporal's visibility (`list_workflows`), their tokens from `llm_usage`
by workflow id. The Monkey is one long workflow, so its work is listed per card instead, from
`monkey_runs` (one item per time a card was worked, all its attempts together).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import asyncpg
from temporalio.client import Client, WorkflowExecutionStatus

from factorylm.settings import Settings

# Workflow type -> agent. MonkeyWorkflow is absent on purpose: its cards are its work.
WORKFLOW_AGENTS = {
    "DriftResponseWorkflow": "drift",
    "PhotoIntakeWorkflow": "photo",
    "HealthMonitorWorkflow": "health",
    "DailySummaryWorkflow": "health",
    "BaselineWorkflow": "baseline",
    "OutcomeFollowUpWorkflow": "outcome",
    "MonkeyReportWorkflow": "monkey",
}
AGENTS = sorted({*WORKFLOW_AGENTS.values(), "monkey"})
OUTCOMES = (
    "running", "completed", "failed", "canceled", "terminated", "timed_out", "continued_as_new",
    "passed", "blocked", "needs_provider",
)  # fmt: skip
MAX_ITEMS = 1000


class WorkLogError(ValueError):
    """A filter is not one the Workflow Tracker knows; the message lists the known ones."""


@dataclass(frozen=True)
class WorkItem:
    agent: str
    what: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    tokens: int
    cost_usd: float
    workflow_id: str
    run_id: str
    history_url: str

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        data["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        data["cost_usd"] = round(self.cost_usd, 6)
        return data


@dataclass(frozen=True)
class WorkFilter:
    agent: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    outcome: str | None = None
    limit: int = 100

    def __post_init__(self) -> None:
        if self.agent is not None and self.agent not in AGENTS:
            raise WorkLogError(f"unknown agent {self.agent!r}; known: {', '.join(AGENTS)}")
        if self.outcome is not None and self.outcome not in OUTCOMES:
            raise WorkLogError(f"unknown outcome {self.outcome!r}; known: {', '.join(OUTCOMES)}")
        if not 1 <= self.limit <= MAX_ITEMS:
            raise WorkLogError(f"limit must be 1..{MAX_ITEMS}")
        if self.since and self.until and self.since > self.until:
            raise WorkLogError("since is after until")


def history_url(settings: Settings, workflow_id: str, run_id: str) -> str:
    return (
        f"{settings.temporal_ui_url}/namespaces/{quote(settings.temporal_namespace)}/workflows/"
        f"{quote(workflow_id, safe='')}/{quote(run_id, safe='')}/history"
    )


def _visibility_query(f: WorkFilter) -> str:
    types = [t for t, agent in WORKFLOW_AGENTS.items() if f.agent in (None, agent)]
    parts = ["WorkflowType IN (" + ", ".join(f"'{t}'" for t in types) + ")"]
    if f.since:
        parts.append(f"StartTime >= '{f.since.isoformat()}'")
    if f.until:
        parts.append(f"StartTime <= '{f.until.isoformat()}'")
    return " AND ".join(parts)


def _status(status: WorkflowExecutionStatus | None) -> str:
    return status.name.lower() if status is not None else "unknown"


async def _workflow_items(
    client: Client, pool: asyncpg.Pool, settings: Settings, f: WorkFilter
) -> list[WorkItem]:
    if f.agent is not None and f.agent not in WORKFLOW_AGENTS.values():
        return []
    if f.outcome in ("passed", "blocked", "needs_provider"):
        return []
    found = []
    async for execution in client.list_workflows(_visibility_query(f), limit=MAX_ITEMS):
        outcome = _status(execution.status)
        if f.outcome is not None and outcome != f.outcome:
            continue
        found.append(execution)
        if len(found) >= f.limit:
            break
    usage = await pool.fetch(
        """SELECT workflow_id, sum(input_tokens + output_tokens) AS tokens,
                  sum(cost_usd) AS cost
           FROM llm_usage WHERE workflow_id = ANY($1::text[]) GROUP BY workflow_id""",
        [e.id for e in found],
    )
    spent = {r["workflow_id"]: (int(r["tokens"]), float(r["cost"])) for r in usage}
    return [
        WorkItem(
            agent=WORKFLOW_AGENTS.get(e.workflow_type, e.workflow_type),
            what=f"{e.workflow_type} {e.id}",
            started_at=e.start_time,
            finished_at=e.close_time,
            outcome=_status(e.status),
            tokens=spent.get(e.id, (0, 0.0))[0],
            cost_usd=spent.get(e.id, (0, 0.0))[1],
            workflow_id=e.id,
            run_id=e.run_id or "",
            history_url=history_url(settings, e.id, e.run_id or ""),
        )
        for e in found
    ]


_CARD_OUTCOME = {"passed": "passed", "failed": "blocked", "no_provider": "needs_provider"}


async def _card_items(pool: asyncpg.Pool, settings: Settings, f: WorkFilter) -> list[WorkItem]:
    if f.agent not in (None, "monkey"):
        return []
    wanted = [k for k, v in _CARD_OUTCOME.items() if f.outcome in (None, v)]
    if not wanted:
        return []
    # One item per working of a card: the run key without its attempt number.
    rows = await pool.fetch(
        """SELECT workflow_id, split_part(run_key, '/', 2) AS run_id, card_name,
                  min(started_at) AS started, max(finished_at) AS finished,
                  (array_agg(status ORDER BY attempt DESC))[1] AS status,
                  (array_agg(branch ORDER BY attempt DESC))[1] AS branch,
                  count(*) AS attempts, sum(input_tokens + output_tokens) AS tokens,
                  sum(cost_usd) AS cost
           FROM monkey_runs
           WHERE ($1::timestamptz IS NULL OR started_at >= $1)
             AND ($2::timestamptz IS NULL OR started_at <= $2)
           GROUP BY workflow_id, regexp_replace(run_key, '/[0-9]+$', ''), card_name,
                    split_part(run_key, '/', 2)
           HAVING (array_agg(status ORDER BY attempt DESC))[1] = ANY($3::text[])
           ORDER BY min(started_at) DESC LIMIT $4""",
        f.since,
        f.until,
        wanted,
        f.limit,
    )
    return [
        WorkItem(
            agent="monkey",
            what=f"card {r['card_name']!r} ({r['attempts']} attempt(s)"
            + (f", branch {r['branch']})" if r["branch"] else ")"),
            started_at=r["started"],
            finished_at=r["finished"],
            outcome=_CARD_OUTCOME.get(r["status"], r["status"]),
            tokens=int(r["tokens"]),
            cost_usd=float(r["cost"]),
            workflow_id=r["workflow_id"],
            run_id=r["run_id"],
            history_url=history_url(settings, r["workflow_id"], r["run_id"]),
        )
        for r in rows
    ]


async def work_log(
    client: Client, pool: asyncpg.Pool, settings: Settings, f: WorkFilter
) -> list[WorkItem]:
    """Newest first, at most `f.limit` items."""
    items = await _workflow_items(client, pool, settings, f) + await _card_items(pool, settings, f)
    items.sort(key=lambda item: item.started_at, reverse=True)
    return items[: f.limit]


def parse_time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise WorkLogError(f"{name}: expected an ISO 8601 time, got {value!r}") from exc
    if parsed.tzinfo is None:
        raise WorkLogError(f"{name}: give a time zone (e.g. 2026-12-01T08:00:00Z)")
    return parsed
