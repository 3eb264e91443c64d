"""The Monkey's hands: read the sprint, move and comment cards, prepare the card's branch, work
a card (the model's change applied with git, committed, its checks run in the sandbox), push
it for review, merge it when a person accepts it, report progress. Trello and git calls block
(py-trello, subprocess), so they run in threads."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.budget import BudgetActivities
from activities.cartographer import Cartographer, CartographerActivities
from activities.monkey_workspace import (
    GitError,
    GitWorkspace,
    InvalidChange,
    WorkspaceUnusable,
    branch_name,
    short_id,
    validate_change,
)
from activities.notify import NotifyActivities
from factorylm.embeddings import get_embedder
from factorylm.llm import CallContext, LlmRouter, StructuredTask, build_router
from factorylm.models.agents import OFFLINE
from factorylm.models.messages import SendMessageInput
from factorylm.models.monkey import (
    BLOCKED,
    CURRENT_SPRINT,
    MONKEY_AGENT,
    NO_PROVIDER,
    PASSED,
    CardOutcome,
    CardWork,
    CheckBudgetInput,
    ExecuteCardInput,
    MergeCardInput,
    MergeResult,
    MonkeyReportInput,
    PrepareWorkspaceInput,
    PublishBranchInput,
    ReadSprintInput,
    RepoContext,
    SprintCard,
    SprintSnapshot,
    UpdateCardInput,
    Workspace,
)
from factorylm.sandbox import SandboxLimits, SandboxResult, SandboxUnavailable, run_sandboxed
from factorylm.settings import Settings
from factorylm.trello.board import MONKEY_MARK, TrelloBoard, TrelloError, TrelloNotConfigured

log = logging.getLogger(__name__)

NOT_CONFIGURED = "MonkeyNotConfigured"
SYSTEM = (
    "You are the Monkey, FactoryLM's build agent. You receive one Trello card (a task with a "
    "description, a checklist and success checks), a map of the git repository it is about, "
    "and the contents of the files most relevant to it. Make the task true by changing the "
    "repository: answer with a unified diff against the files as shown (`diff`), or with the "
    "complete new content of each file you change or add (`files`), not both. Paths are "
    "relative to the repository root. Your change is committed and the success checks run on "
    "that commit in the repository root, in a sandbox without network. Keep the summary short "
    "and factual: what you changed, and anything a reviewer must look at."
)
_TAIL = 1500
# At most this many checks per card, all of them within this many seconds (the execute
# activity's start-to-close timeout is 15 minutes).
MAX_CHECKS = 20
CHECKS_DEADLINE_S = 600.0
_DIFF_IN_PROMPT = 8000


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "\n…(truncated)"


def tail(text: str, limit: int = _TAIL) -> str:
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-limit:]


def workspace_dir(settings: Settings) -> Path:
    return settings.monkey_workspace_dir or settings.state_dir / "monkey"


def monkey_workspace(settings: Settings) -> GitWorkspace:
    return GitWorkspace(settings.monkey_repo, settings.monkey_base_branch, workspace_dir(settings))


def cartographer_for(pool: asyncpg.Pool, settings: Settings) -> CartographerActivities:
    """The Cartographer over the same clone the Monkey works in."""
    return CartographerActivities(
        Cartographer(pool, monkey_workspace(settings), get_embedder(settings))
    )


def card_prompt(
    card: SprintCard,
    context: RepoContext | None,
    contents: list[tuple[str, str, str]],
    *,
    feedback: list[str] | None = None,
    previous_diff: str | None = None,
    previous_failure: str | None = None,
) -> str:
    """The card, the repository's map and relevant files, a reviewer's feedback, and on a retry
    the previous attempt's diff and what failed."""
    parts = [f"Card: {card.name}", card.url, "", card.description.strip() or "(no description)"]
    if card.checklist:
        parts += ["", "Checklist:", *[f"- {item}" for item in card.checklist]]
    parts += ["", "Success checks (each must exit 0 on your committed change):"]
    parts += [f"- {check}" for check in card.success_checks]
    if context is not None:
        parts += ["", f"Repository map at commit {context.commit[:12]} ({context.files} files):"]
        parts += [context.map_text]
    for path, reason, text in contents:
        parts += ["", f"=== {path} ({reason}) ===", text]
    if feedback:
        parts += ["", "A reviewer sent the last result back with this feedback:"]
        parts += [f"> {line}" for item in feedback for line in item.strip().splitlines()]
    if previous_failure:
        parts += ["", "Your previous attempt failed. Its change was:"]
        parts += [clip(previous_diff or "(no diff)", _DIFF_IN_PROMPT), "", "What failed:"]
        parts += [previous_failure, "", "Retry with a different approach, from the files shown."]
    elif previous_diff:
        parts += ["", "The earlier change on this card's branch (replaced by yours):"]
        parts += [clip(previous_diff, _DIFF_IN_PROMPT)]
    return "\n".join(parts)


def file_contents(
    workspace: GitWorkspace, context: RepoContext, token_cap: int
) -> list[tuple[str, str, str]]:
    """The relevant files' text, most relevant first, within ~token_cap tokens (4 chars each)."""
    left = token_cap * 4
    found = []
    for item in context.relevant:
        if left <= 200:
            break
        text = workspace.read(context.commit, item.path)
        if text is None:
            continue
        shown = clip(text, left)
        left -= len(shown)
        found.append((item.path, item.reason, shown))
    return found


def check_line(result: SandboxResult) -> str:
    head = f"{'PASS' if result.passed else 'FAIL'} `{result.command}` ({result.seconds:.2f} s)"
    if result.passed:
        return head
    if result.timed_out:
        why = "killed at the timeout"
    elif result.signal_name:
        why = f"killed by {result.signal_name}"
    elif result.exit_code is None:
        why = "not run"
    else:
        why = f"exit {result.exit_code}"
    output = tail(result.output)
    return f"{head}: {why}" + (f"\n{output}" if output else "")


@dataclass(frozen=True)
class Attempt:
    passed: bool
    report: str
    failing_output: str
    commit: str = ""
    diff: str = ""
    diff_stat: str = ""


class MonkeyActivities:
    def __init__(
        self, pool: asyncpg.Pool, settings: Settings, router: LlmRouter | None = None
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._router = router or build_router(settings, pool)
        self._budget = BudgetActivities(pool, settings)
        self._notify = NotifyActivities(pool, settings)
        self.workspace = monkey_workspace(settings)
        self._limits = SandboxLimits(
            timeout_s=settings.monkey_check_timeout_s,
            cpu_s=settings.monkey_check_cpu_s,
            memory_mb=settings.monkey_check_memory_mb,
            processes=settings.monkey_check_processes,
            file_mb=settings.monkey_check_file_mb,
            uid=settings.monkey_check_uid,
            path=settings.monkey_check_path,
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

    @activity.defn(name="monkey_prepare_workspace")
    async def prepare_workspace(self, req: PrepareWorkspaceInput) -> Workspace:
        """The card's branch name and the base branch's current commit (fetched now)."""
        ws, branch = self.workspace, branch_name(req.card)

        def prepare() -> Workspace:
            ws.ensure_clone()
            base = ws.base_commit()
            earlier = ws.remote_branch(branch)
            previous = ws.branch_change(base, earlier) if earlier and earlier != base else ""
            return Workspace(
                repo=ws.shown,
                branch=branch,
                base_branch=ws.base,
                base_commit=base,
                previous_diff=previous,
            )

        try:
            return await asyncio.to_thread(prepare)
        except WorkspaceUnusable as exc:
            return Workspace(
                repo=ws.shown, branch=branch, base_branch=ws.base, base_commit="", problem=str(exc)
            )

    @activity.defn(name="monkey_execute_card")
    async def execute_card(self, req: ExecuteCardInput) -> CardOutcome:
        done = await self._pool.fetchrow(
            "SELECT * FROM monkey_runs WHERE run_key = $1", req.run_key
        )
        if done is not None:  # a retried activity: the card was already worked and recorded
            return _outcome(done)
        card, ws = req.card, req.workspace
        if self._router.offline:
            return CardOutcome(
                passed=False,
                status=NO_PROVIDER,
                summary="needs an LLM provider: no Anthropic or Gemini key is configured, and "
                "the Monkey does not pretend to work a card without one",
                check_report="not run",
                generated_by=OFFLINE,
            )
        if ws is None or ws.problem:
            raise ApplicationError(
                ws.problem if ws else "no workspace", type=NOT_CONFIGURED, non_retryable=True
            )
        info = activity.info()
        # Checked here too, not only by the workflow: no path reaches the model over budget.
        reservation = await self._budget.check(
            CheckBudgetInput(
                agent=MONKEY_AGENT,
                requested_tokens=card.estimated_tokens,
                work_ref=card.id,
                workflow_id=info.workflow_id,
                reserve_observed=True,
            )
        )
        feedback: list[str] = []
        if req.board_id:
            feedback = await asyncio.to_thread(lambda: self._board(req.board_id).feedback(card.id))
        contents: list[tuple[str, str, str]] = []
        if req.context is not None:
            contents = await asyncio.to_thread(
                file_contents, self.workspace, req.context, self._settings.monkey_context_tokens
            )
        started: datetime = await self._pool.fetchval("SELECT clock_timestamp()")
        limit = self._settings.monkey_max_change_bytes
        task = StructuredTask(
            agent=MONKEY_AGENT,
            system=SYSTEM,
            prompt=card_prompt(
                card,
                req.context,
                contents,
                feedback=feedback,
                previous_diff=req.previous_diff or ws.previous_diff or None,
                previous_failure=req.previous_failure,
            ),
            output=CardWork,
            # Never used as work: an offline answer below becomes "needs an LLM provider".
            offline=lambda: CardWork(summary=f"{OFFLINE}: no change"),
            check=lambda work: _validate(work, limit),
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
        summary = answer.value.summary.strip()
        if answer.value.notes:
            summary += f"\n\nNotes: {answer.value.notes.strip()}"
        if answer.offline:
            status = NO_PROVIDER
            summary = (
                "needs an LLM provider: every configured provider failed ("
                + "; ".join(answer.failures)[:1500]
                + ")"
            )
            attempt = Attempt(passed=False, report="not run", failing_output="")
        else:
            attempt = await asyncio.to_thread(self._attempt, ws, card, req.attempt, answer.value)
            status = PASSED if attempt.passed else "failed"
        row = await self._pool.fetchrow(
            """INSERT INTO monkey_runs (run_key, workflow_id, card_id, card_name, attempt, passed,
                   generated_by, summary, check_report, input_tokens, output_tokens, cost_usd,
                   started_at, status, branch, commit_sha, diff_stat, diff, reserved_tokens)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                       $17, $18, $19)
               ON CONFLICT (run_key) DO UPDATE SET run_key = EXCLUDED.run_key RETURNING *""",
            req.run_key,
            info.workflow_id,
            card.id,
            card.name,
            req.attempt,
            attempt.passed,
            answer.generated_by,
            summary,
            attempt.report,
            int(usage["input"]),
            int(usage["output"]),
            usage["cost"],
            started,
            status,
            ws.branch,
            attempt.commit or None,
            attempt.diff_stat,
            attempt.diff,
            reservation.reserved_tokens,
        )
        return _outcome(row, attempt.failing_output)

    def _attempt(self, ws: Workspace, card: SprintCard, number: int, work: CardWork) -> Attempt:
        """Blocking: a fresh worktree at the base, the change applied and committed, then every
        check on that commit in the sandbox. The worktree is deleted after: git never runs in
        a directory a check has written to."""
        git = self.workspace
        worktree = git.fresh_worktree(ws.branch, ws.base_commit)
        try:
            try:
                git.apply(worktree, work, self._settings.monkey_max_change_bytes)
                applied = git.commit(
                    worktree,
                    ws.base_commit,
                    f"{card.name}\n\n{work.summary.strip()[:2000]}\n\n"
                    f"Trello card: {card.url or card.id}\nAttempt {number} by {self._who()}\n",
                )
            except (InvalidChange, GitError, OSError, UnicodeError) as exc:
                # OSError: a file over a directory, a full disk; UnicodeError: text git cannot
                # store. The model's answer is at fault, not the worker: a failed attempt.
                reason = f"the change was not applied: {exc}"
                return Attempt(False, f"FAIL `apply the change`: {tail(reason)}", tail(reason))
            results = self._run_checks(card.success_checks, worktree)
        except SandboxUnavailable as exc:
            raise ApplicationError(str(exc), type=NOT_CONFIGURED, non_retryable=True) from exc
        finally:
            git.discard(ws.branch)
        failing = "\n\n".join(check_line(r) for r in results if not r.passed)
        return Attempt(
            passed=bool(results) and all(r.passed for r in results),
            report="\n".join(check_line(r) for r in results),
            failing_output=tail(failing, 3000),
            commit=applied.commit,
            diff=applied.diff,
            diff_stat=applied.diff_stat,
        )

    def _who(self) -> str:
        return "FactoryLM Monkey"

    def _run_checks(self, checks: list[str], worktree: Path) -> list[SandboxResult]:
        """Each check under the sandbox's limits, all of them within CHECKS_DEADLINE_S: the
        activity's own timeout must never be what stops a card's checks."""
        deadline = time.monotonic() + CHECKS_DEADLINE_S
        results = []
        for index, command in enumerate(checks):
            if index >= MAX_CHECKS:
                why = f"not run: a card may have {MAX_CHECKS} checks; split it"
                results.append(SandboxResult(command, None, why, 0.0))
                continue
            left = deadline - time.monotonic()
            if left < 1:
                results.append(
                    SandboxResult(
                        command,
                        None,
                        f"not run: the card's checks took over {CHECKS_DEADLINE_S:g} s together",
                        0.0,
                        timed_out=True,
                    )
                )
                continue
            limits = replace(self._limits, timeout_s=min(self._limits.timeout_s, left))
            results.append(run_sandboxed(command, worktree, limits))
        return results

    @activity.defn(name="monkey_publish_branch")
    async def publish_branch(self, req: PublishBranchInput) -> None:
        await asyncio.to_thread(self.workspace.push, req.branch, req.commit)

    @activity.defn(name="monkey_merge_card")
    async def merge_card(self, req: MergeCardInput) -> MergeResult:
        """A person moved the card to Done: merge its branch into the base and push."""
        board = self._board(req.board_id)
        card = await asyncio.to_thread(board.card, req.card_id)
        ws = self.workspace

        def merge() -> MergeResult:
            ws.ensure_clone()
            found = ws.branches_for(short_id(card))
            if not found:
                return MergeResult(merged=False, detail="no Monkey branch for this card")
            branch = branch_name(card) if branch_name(card) in found else found[0]
            try:
                commit = ws.merge(
                    branch,
                    f"Merge {branch}: {card.name}\n\nAccepted in review on Trello: {card.url}\n",
                )
            except GitError as exc:
                return MergeResult(merged=False, branch=branch, detail=tail(str(exc), 800))
            return MergeResult(merged=True, branch=branch, commit=commit)

        result = await asyncio.to_thread(merge)
        if result.merged:
            text = f"{MONKEY_MARK}: merged `{result.branch}` into `{ws.base}` as {result.commit[:12]} and pushed."
        else:
            text = (
                f"{MONKEY_MARK}: could not merge into `{ws.base}`, so the card is Blocked: "
                f"{result.detail}\nResolve it on the branch (or move the card back to "
                f"{CURRENT_SPRINT} to have it redone from the current `{ws.base}`)."
            )
        await asyncio.to_thread(board.comment, req.card_id, text)
        if not result.merged:
            await asyncio.to_thread(board.move, req.card_id, BLOCKED)
        return result

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


def _validate(work: CardWork, limit: int) -> None:
    # Before anything is applied: an invalid change gets the router's repair request.
    validate_change(work, limit)


def _outcome(row: asyncpg.Record, failing_output: str = "") -> CardOutcome:
    return CardOutcome(
        passed=row["passed"],
        summary=row["summary"],
        check_report=row["check_report"],
        generated_by=row["generated_by"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        status=row["status"],
        branch=row["branch"] or "",
        commit=row["commit_sha"] or "",
        diff_stat=row["diff_stat"],
        diff=row["diff"],
        failing_output=failing_output
        or "\n".join(line for line in row["check_report"].splitlines() if line)[-3000:],
        reserved_tokens=row["reserved_tokens"],
        cost_usd=float(row["cost_usd"]),
    )
