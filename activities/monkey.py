"""The Monkey's hands: read the sprint, move and comment cards, work a card with Claude and
check the result, report progress. Trello calls block (py-trello), so they run in threads."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import asyncpg
from temporalio import activity

from activities.budget import BudgetActivities
from activities.monkey_checks import CheckPolicy, run_checks
from activities.notify import NotifyActivities
from factorylm.llm import CallContext, LlmRouter, StructuredTask, build_router
from factorylm.models.agents import OFFLINE
from factorylm.models.messages import SendMessageInput
from factorylm.models.monkey import (
    CURRENT_SPRINT,
    MONKEY_AGENT,
    CardOutcome,
    CardWork,
    CheckBudgetInput,
    ExecuteCardInput,
    FileChange,
    MonkeyReportInput,
    ReadSprintInput,
    SprintCard,
    SprintSnapshot,
    UpdateCardInput,
)
from factorylm.settings import Settings
from factorylm.trello.board import TrelloBoard, TrelloError, TrelloNotConfigured

log = logging.getLogger(__name__)

SYSTEM = (
    "You are the Monkey, FactoryLM's build agent. You receive one Trello card: a task with a "
    "description, a checklist and success checks. Do the task by writing the complete files "
    "it needs. The success checks then run in an empty directory that holds only your files, "
    "so every file they need must be in your answer. Paths are relative. Keep the summary "
    "short and factual: what you did, and anything a reviewer must look at."
)
RESULT_FILE = "MONKEY_RESULT.md"


def card_prompt(card: SprintCard, previous_failure: str | None) -> str:
    parts = [f"Card: {card.name}", "", card.description.strip() or "(no description)"]
    if card.checklist:
        parts += ["", "Checklist:", *[f"- {item}" for item in card.checklist]]
    if card.success_checks:
        parts += ["", "Success checks (argv, run in your files' directory):"]
        parts += [f"- {check}" for check in card.success_checks]
    if previous_failure:
        parts += [
            "",
            "Your previous attempt failed. What failed:",
            previous_failure,
            "Fix exactly that; answer with the complete set of files again.",
        ]
    return "\n".join(parts)


def offline_work(card: SprintCard) -> CardWork:
    note = (
        f"OFFLINE ({OFFLINE}; no LLM key configured): card '{card.name}' was not worked on by "
        "a model. A placeholder result file was written so the checks and the board flow run; "
        "a person or Claude must do the actual task."
    )
    content = "\n".join(
        [f"# {card.name}", "", note, "", "Checklist as received:"]
        + [f"- [ ] {item}" for item in card.checklist]
    )
    return CardWork(summary=note, files=[FileChange(path=RESULT_FILE, content=content + "\n")])


class MonkeyActivities:
    def __init__(
        self, pool: asyncpg.Pool, settings: Settings, router: LlmRouter | None = None
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._router = router or build_router(settings, pool)
        self._budget = BudgetActivities(pool, settings)
        self._notify = NotifyActivities(pool, settings)
        self._policy = CheckPolicy(
            allowlist=tuple(settings.monkey_check_allowlist),
            search_path=settings.monkey_check_path,
            timeout_s=settings.monkey_check_timeout_s,
        )

    def _board(self, board_id: str) -> TrelloBoard:
        return TrelloBoard.from_settings(self._settings, board_id)

    @activity.defn(name="monkey_read_sprint")
    async def read_sprint(self, req: ReadSprintInput) -> SprintSnapshot:
        cards = await asyncio.to_thread(lambda: self._board(req.board_id).cards(CURRENT_SPRINT))
        return SprintSnapshot(cards=cards)

    @activity.defn(name="monkey_update_card")
    async def update_card(self, req: UpdateCardInput) -> None:
        def update() -> None:
            board = self._board(req.board_id)
            if req.comment:
                board.comment(req.card_id, req.comment)
            if req.to_list:
                board.move(req.card_id, req.to_list)

        await asyncio.to_thread(update)

    @activity.defn(name="monkey_execute_card")
    async def execute_card(self, req: ExecuteCardInput) -> CardOutcome:
        done = await self._pool.fetchrow(
            "SELECT * FROM monkey_runs WHERE run_key = $1", req.run_key
        )
        if done is not None:  # a retried activity: the card was already worked and recorded
            return _outcome(done)
        card = req.card
        info = activity.info()
        # Checked here too, not only by the workflow: no path reaches Claude over budget.
        await self._budget.check(
            CheckBudgetInput(
                agent=MONKEY_AGENT,
                requested_tokens=card.estimated_tokens,
                work_ref=card.id,
                workflow_id=info.workflow_id,
            )
        )
        started: datetime = await self._pool.fetchval("SELECT clock_timestamp()")
        task = StructuredTask(
            agent=MONKEY_AGENT,
            system=SYSTEM,
            prompt=card_prompt(card, req.previous_failure),
            output=CardWork,
            offline=lambda: offline_work(card),
        )
        answer = await self._router.structured(task, CallContext.current(MONKEY_AGENT))
        usage = await self._pool.fetchrow(
            """SELECT coalesce(sum(input_tokens), 0) AS input, coalesce(sum(output_tokens), 0)
                      AS output, coalesce(sum(cost_usd), 0) AS cost
               FROM llm_usage WHERE agent = $1 AND workflow_id = $2 AND activity = $3
                    AND at >= $4""",
            MONKEY_AGENT,
            info.workflow_id,
            info.activity_type,
            started,
        )
        report = await asyncio.to_thread(
            run_checks, card.success_checks, answer.value.files, self._policy
        )
        summary = answer.value.summary.strip()
        if answer.value.notes:
            summary += f"\n\nNotes: {answer.value.notes.strip()}"
        if answer.offline and OFFLINE not in summary:
            summary = f"[{OFFLINE}] {summary}"
        row = await self._pool.fetchrow(
            """INSERT INTO monkey_runs (run_key, workflow_id, card_id, card_name, attempt, passed,
                   generated_by, summary, check_report, input_tokens, output_tokens, cost_usd,
                   started_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
               ON CONFLICT (run_key) DO UPDATE SET run_key = EXCLUDED.run_key RETURNING *""",
            req.run_key,
            info.workflow_id,
            card.id,
            card.name,
            req.attempt,
            report.passed,
            answer.generated_by,
            summary,
            report.as_text(),
            int(usage["input"]),
            int(usage["output"]),
            usage["cost"],
            started,
        )
        return _outcome(row)

    @activity.defn(name="monkey_progress_report")
    async def progress_report(self, req: MonkeyReportInput) -> bool:
        """The 4-hourly report: the board's lists, the Monkey's last runs, the budget."""
        since = datetime.now(UTC) - timedelta(seconds=self._settings.monkey_report_every_s)
        runs = await self._pool.fetchrow(
            """SELECT count(*) AS attempts, count(*) FILTER (WHERE passed) AS passed,
                      coalesce(sum(input_tokens + output_tokens), 0) AS tokens
               FROM monkey_runs WHERE finished_at >= $1""",
            since,
        )
        status = await self._budget.ledger.status()
        lines = ["FactoryLM Monkey progress report"]
        try:
            counts = await asyncio.to_thread(lambda: self._board(req.board_id).counts())
            lines.append("Board: " + ", ".join(f"{name} {n}" for name, n in counts.items()))
        except TrelloNotConfigured as exc:
            lines.append(f"Board: not configured ({exc})")
        except TrelloError as exc:
            lines.append(f"Board: unreadable ({exc})")
        lines.append(
            f"Since {since:%H:%M} UTC: {runs['attempts']} attempt(s), {runs['passed']} passed "
            f"checks, {int(runs['tokens']):,} tokens."
        )
        for window in (status.hour, status.day):
            limit = f"{window.limit_tokens:,}" if window.limit_tokens else "no limit"
            lines.append(
                f"Budget this {window.window}: {window.used_tokens:,} of {limit} tokens "
                f"(${window.cost_usd:.2f})."
            )
        sent = await self._notify.send_message(
            SendMessageInput(
                dedup_key=req.report_key, recipients=req.recipients, body="\n".join(lines)
            )
        )
        return sent > 0


def _outcome(row: asyncpg.Record) -> CardOutcome:
    return CardOutcome(
        passed=row["passed"],
        summary=row["summary"],
        check_report=row["check_report"],
        generated_by=row["generated_by"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
    )
