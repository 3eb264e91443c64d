"""The token budget: llm_usage aggregated per hour and per day (UTC), in total and per agent.

Windows are calendar windows — the current hour and the current UTC day — so "the next
window" is a fixed time everyone can read off a clock. A limit of 0 means no limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from factorylm.settings import Settings

HOUR, DAY, AGENT_DAY = "hour", "day", "agent-day"


def window_bounds(window: str, now: datetime) -> tuple[datetime, datetime]:
    now = now.astimezone(UTC)
    if window == HOUR:
        start = now.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


@dataclass(frozen=True)
class Limits:
    hourly: int
    daily: int
    agent_daily: dict[str, int] = field(default_factory=dict)
    alert_fraction: float = 0.8

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            hourly=settings.budget_hourly_tokens,
            daily=settings.budget_daily_tokens,
            agent_daily=dict(settings.budget_agent_daily_tokens),
            alert_fraction=settings.budget_alert_fraction,
        )


@dataclass(frozen=True)
class WindowUsage:
    window: str
    start: datetime
    end: datetime
    used_tokens: int
    cost_usd: float
    limit_tokens: int  # 0: unlimited
    agent: str | None = None

    @property
    def remaining_tokens(self) -> int | None:
        return None if self.limit_tokens == 0 else max(0, self.limit_tokens - self.used_tokens)

    @property
    def fraction(self) -> float:
        return 0.0 if self.limit_tokens == 0 else self.used_tokens / self.limit_tokens

    def projected_exhaustion(self, now: datetime) -> datetime | None:
        """When this window's limit runs out at the window's average rate so far; None when
        it is unlimited or the rate does not exhaust it before the window ends."""
        if self.limit_tokens == 0:
            return None
        if self.used_tokens >= self.limit_tokens:
            return now
        elapsed = (now - self.start).total_seconds()
        if self.used_tokens <= 0 or elapsed <= 0:
            return None
        rate = self.used_tokens / elapsed
        at = now + timedelta(seconds=(self.limit_tokens - self.used_tokens) / rate)
        return at if at < self.end else None

    def as_json(self, now: datetime) -> dict[str, Any]:
        projected = self.projected_exhaustion(now)
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "used_tokens": self.used_tokens,
            "limit_tokens": self.limit_tokens or None,
            "remaining_tokens": self.remaining_tokens,
            "percent": round(100 * self.fraction, 1) if self.limit_tokens else None,
            "cost_usd": round(self.cost_usd, 6),
            "projected_exhaustion": projected.isoformat() if projected else None,
        }


@dataclass(frozen=True)
class BudgetStatus:
    at: datetime
    hour: WindowUsage
    day: WindowUsage
    agents: dict[str, dict[str, WindowUsage]]
    refusals_today: int

    def windows_for(self, agent: str) -> list[WindowUsage]:
        """The windows that bind `agent`: the totals, and its own daily limit if it has one."""
        found = [self.hour, self.day]
        own = self.agents.get(agent, {}).get(DAY)
        if own is not None and own.limit_tokens:
            found.append(
                WindowUsage(
                    AGENT_DAY,
                    own.start,
                    own.end,
                    own.used_tokens,
                    own.cost_usd,
                    own.limit_tokens,
                    agent,
                )
            )
        return found

    def as_json(self) -> dict[str, Any]:
        projections = [w.projected_exhaustion(self.at) for w in (self.hour, self.day)]
        projections += [
            usage.projected_exhaustion(self.at)
            for per_window in self.agents.values()
            for usage in per_window.values()
        ]
        known = [p for p in projections if p is not None]
        return {
            "at": self.at.isoformat(),
            "windows": {HOUR: self.hour.as_json(self.at), DAY: self.day.as_json(self.at)},
            "agents": {
                agent: {name: usage.as_json(self.at) for name, usage in windows.items()}
                for agent, windows in sorted(self.agents.items())
            },
            "refusals_today": self.refusals_today,
            "projected_exhaustion": min(known).isoformat() if known else None,
        }


class BudgetLedger:
    def __init__(self, pool: asyncpg.Pool, limits: Limits) -> None:
        self._pool = pool
        self.limits = limits

    async def status(self, now: datetime | None = None) -> BudgetStatus:
        now = now or datetime.now(UTC)
        hour_start, hour_end = window_bounds(HOUR, now)
        day_start, day_end = window_bounds(DAY, now)
        rows = await self._pool.fetch(
            """SELECT agent,
                      sum(input_tokens + output_tokens) FILTER (WHERE at >= $2) AS hour_tokens,
                      sum(cost_usd) FILTER (WHERE at >= $2) AS hour_cost,
                      sum(input_tokens + output_tokens) AS day_tokens,
                      sum(cost_usd) AS day_cost
               FROM llm_usage WHERE at >= $1 AND at < $3 GROUP BY agent""",
            day_start,
            hour_start,
            day_end,
        )
        agents: dict[str, dict[str, WindowUsage]] = {}
        hour_total = day_total = 0
        hour_cost = day_cost = 0.0
        for r in rows:
            h, d = int(r["hour_tokens"] or 0), int(r["day_tokens"] or 0)
            hc, dc = float(r["hour_cost"] or 0), float(r["day_cost"] or 0)
            hour_total, day_total = hour_total + h, day_total + d
            hour_cost, day_cost = hour_cost + hc, day_cost + dc
            agents[r["agent"]] = {
                HOUR: WindowUsage(HOUR, hour_start, hour_end, h, hc, 0, r["agent"]),
                DAY: WindowUsage(
                    DAY,
                    day_start,
                    day_end,
                    d,
                    dc,
                    self.limits.agent_daily.get(r["agent"], 0),
                    r["agent"],
                ),
            }
        for agent, limit in self.limits.agent_daily.items():
            agents.setdefault(
                agent,
                {
                    HOUR: WindowUsage(HOUR, hour_start, hour_end, 0, 0.0, 0, agent),
                    DAY: WindowUsage(DAY, day_start, day_end, 0, 0.0, limit, agent),
                },
            )
        refusals = await self._pool.fetchval(
            "SELECT count(*) FROM budget_refusals WHERE at >= $1 AND at < $2", day_start, day_end
        )
        return BudgetStatus(
            at=now,
            hour=WindowUsage(HOUR, hour_start, hour_end, hour_total, hour_cost, self.limits.hourly),
            day=WindowUsage(DAY, day_start, day_end, day_total, day_cost, self.limits.daily),
            agents=agents,
            refusals_today=int(refusals or 0),
        )

    async def record_refusal(
        self, agent: str, work_ref: str | None, window: WindowUsage, requested: int
    ) -> None:
        await self._pool.execute(
            """INSERT INTO budget_refusals (agent, work_ref, budget_window, used_tokens,
                   limit_tokens, requested_tokens) VALUES ($1, $2, $3, $4, $5, $6)""",
            agent,
            work_ref,
            window.window,
            window.used_tokens,
            window.limit_tokens,
            requested,
        )


def first_exceeded(windows: list[WindowUsage], requested: int) -> WindowUsage | None:
    """The window this work would overrun (the one reopening last), or None if it fits."""
    over = [
        w for w in windows if w.limit_tokens and w.used_tokens + max(requested, 1) > w.limit_tokens
    ]
    return max(over, key=lambda w: (w.end, w.limit_tokens)) if over else None
