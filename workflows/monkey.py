"""MonkeyWorkflow: works through the Trello board's Current Sprint in a git repository, within
budget, and hands each result to a person for review.

One cycle: merge the branches of cards a person accepted (moved to Done); read Current Sprint;
alert a person (once) for each card labelled Human Action Required; pick the next Autonomous
card (Critical Path first, then board position). A card without success checks goes to Blocked
asking for them. Reserve the budget (the card's estimate or past cards' p90, whichever is
larger); In Progress; the card's branch from the base; the Cartographer's map and relevant
files; execute (the model's change committed on the branch, its checks run in the sandbox on
that commit); on a pass push the branch and move it to Review Needed with the branch, commit,
diff stat, checks and tokens — or comment the failure, retry once with the diff and the
failing output, then Blocked. With no LLM provider the card goes to Blocked: nothing is marked
done without a model. Over budget, the loop waits for the next window. Signals pause, resume,
stop, wake (the Trello webhook wakes it when a card moves) and card_accepted (the webhook, when
a person moves a Review Needed card to Done). MonkeyReportWorkflow is the 4-hourly progress
report (a Schedule).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.budget import BudgetActivities
    from activities.cartographer import CartographerActivities
    from activities.monkey import NOT_CONFIGURED, MonkeyActivities
    from activities.notify import NotifyActivities
    from factorylm.models.messages import SendMessageInput
    from factorylm.models.monkey import (
        BLOCKED,
        BUDGET_EXCEEDED,
        CURRENT_SPRINT,
        IN_PROGRESS,
        MONKEY_AGENT,
        NO_PROVIDER,
        REVIEW_NEEDED,
        BranchRecord,
        BudgetRefusal,
        CardOutcome,
        CheckBudgetInput,
        ExecuteCardInput,
        MapRepositoryInput,
        MergeCardInput,
        MergeResult,
        MonkeyCounters,
        MonkeyInput,
        MonkeyReportInput,
        MonkeyStatus,
        MonkeySummary,
        PrepareWorkspaceInput,
        PublishBranchInput,
        ReadSprintInput,
        RepoContext,
        SprintCard,
        SprintSnapshot,
        UpdateCardInput,
        Workspace,
    )

_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=5,
    non_retryable_error_types=[BUDGET_EXCEEDED],
)
_TRELLO_TIMEOUT = timedelta(minutes=2)
_EXECUTE_TIMEOUT = timedelta(minutes=15)
_MAX_ALERTED = 500  # card ids remembered across continue-as-new; the dedup key backs it up
_MAX_BRANCHES = 50  # the latest branches kept for the summary
_ATTEMPTS = 2
MARK = "FactoryLM Monkey"  # every comment starts with it: the rest on a card are people's


class _BudgetWait(Exception):
    def __init__(self, refusal: BudgetRefusal) -> None:
        super().__init__(refusal.window)
        self.refusal = refusal


def budget_refusal(error: ActivityError) -> BudgetRefusal | None:
    cause = error.cause
    if isinstance(cause, ApplicationError) and cause.type == BUDGET_EXCEEDED and cause.details:
        return BudgetRefusal.model_validate(cause.details[0])
    return None


def next_card(cards: list[SprintCard]) -> SprintCard | None:
    ready = [c for c in cards if c.autonomous]
    ready.sort(key=lambda c: (not c.critical, c.pos))
    return ready[0] if ready else None


def clip(text: str, limit: int = 6000) -> str:
    return text if len(text) <= limit else text[:limit] + "\n…(truncated)"


def not_configured(error: ActivityError) -> str | None:
    cause = error.cause
    if isinstance(cause, ApplicationError) and cause.type == NOT_CONFIGURED:
        return cause.message
    return None


def hand_off(outcome: CardOutcome, attempt: int) -> str:
    """The review comment: where the change is, what it touches, that its checks passed."""
    return clip(
        f"{MARK}: ready for review (attempt {attempt}, {outcome.generated_by}).\n"
        f"Branch: {outcome.branch}\nCommit: {outcome.commit}\n"
        f"Tokens: {outcome.tokens} (reserved {outcome.reserved_tokens}), "
        f"cost ${outcome.cost_usd:.4f}\n\n{outcome.summary}\n\n"
        f"Diff stat:\n{outcome.diff_stat}\n\nSuccess checks (sandbox, on the commit):\n"
        f"{outcome.check_report}\n\n"
        f"Move the card to Done to merge the branch; back to {CURRENT_SPRINT} with a comment "
        "to have it redone with your feedback.",
        15000,
    )


@workflow.defn
class MonkeyWorkflow:
    def __init__(self) -> None:
        self._paused = False
        self._stopping = False
        self._wakes = 0
        self._state = "starting"
        self._detail = ""
        self._retry_at: datetime | None = None
        self._counters = MonkeyCounters()

    @workflow.signal
    def pause(self) -> None:
        self._paused = True

    @workflow.signal
    def resume(self) -> None:
        self._paused = False
        self._wakes += 1

    @workflow.signal
    def stop(self) -> None:
        """Finish the card in hand (if any), then end the workflow."""
        self._stopping = True

    @workflow.signal
    def wake(self, reason: str) -> None:
        self._wakes += 1
        self._detail = f"woken: {reason}"

    @workflow.signal
    def card_accepted(self, card_id: str) -> None:
        """A person moved a reviewed card to Done: merge its branch at the next cycle."""
        if card_id not in self._counters.to_merge:
            pending = [*self._counters.to_merge, card_id][-_MAX_ALERTED:]
            self._counters = self._counters.model_copy(update={"to_merge": pending})
        self._wakes += 1

    @workflow.query
    def status(self) -> MonkeyStatus:
        state = "stopping" if self._stopping else "paused" if self._paused else self._state
        return MonkeyStatus(
            state=state,
            detail=self._detail,
            counters=self._counters,
            budget_retry_at=self._retry_at if self._state == "waiting_for_budget" else None,
        )

    def _set(self, state: str, detail: str) -> None:
        self._state, self._detail = state, detail
        workflow.set_current_details(f"{state}: {detail}")

    def _count(self, **changes: int) -> None:
        values = {k: getattr(self._counters, k) + v for k, v in changes.items()}
        self._counters = self._counters.model_copy(update=values)

    def _summary(self, status: str) -> MonkeySummary:
        c = self._counters
        return MonkeySummary(
            status=status,
            cards_done=c.cards_done,
            cards_blocked=c.cards_blocked,
            human_alerts=c.human_alerts,
            tokens_used=c.tokens_used,
            budget_refusals=c.budget_refusals,
            cycles=c.cycles,
            runs=c.runs,
            branches=c.branches,
            merged=c.merged,
        )

    @workflow.run
    async def run(self, params: MonkeyInput) -> MonkeySummary:
        self._counters = params.counters
        cycles_this_run = 0
        while True:
            if self._stopping:
                self._set("stopped", "stopped by signal")
                return self._summary("stopped")
            if self._paused:
                self._set("paused", "paused by signal; send resume to continue")
                await workflow.wait_condition(lambda: not self._paused or self._stopping)
                continue
            if (
                cycles_this_run >= params.continue_after_cycles
                or workflow.info().is_continue_as_new_suggested()
            ):
                await workflow.wait_condition(workflow.all_handlers_finished)
                counters = self._counters.model_copy(update={"runs": self._counters.runs + 1})
                workflow.continue_as_new(params.model_copy(update={"counters": counters}))
            cycles_this_run += 1
            self._count(cycles=1)
            try:
                # A wake (or an accepted card) during the cycle counts: the cycle may have read
                # the board before the change it announces.
                wakes_before = self._wakes
                worked = await self._cycle(params)
            except _BudgetWait as wait:
                refusal = wait.refusal
                self._retry_at = refusal.retry_at
                self._set(
                    "waiting_for_budget",
                    f"{refusal.window} budget used ({refusal.used_tokens} of "
                    f"{refusal.limit_tokens}); next window {refusal.retry_at.isoformat()}",
                )
                if params.stop_when_idle:
                    return self._summary("budget_exhausted")
                delay = (refusal.retry_at - workflow.now()).total_seconds()
                await self._sleep(max(1.0, delay), wakes_before)
                continue
            if not worked:
                if params.stop_when_idle:
                    self._set("idle", "no Autonomous card left in Current Sprint")
                    return self._summary("idle")
                self._set("idle", "no Autonomous card in Current Sprint; waiting for a card")
                await self._sleep(params.idle_poll_s, wakes_before)

    async def _sleep(self, seconds: float, seen: int) -> None:
        """Until the time passes, or a wake, resume or stop signal arrives (or has arrived
        since the wake count `seen`)."""
        try:
            await workflow.wait_condition(
                lambda: self._stopping or self._wakes != seen, timeout=timedelta(seconds=seconds)
            )
        except TimeoutError:
            pass

    async def _cycle(self, params: MonkeyInput) -> bool:
        """One pass over Current Sprint; False when there was nothing to work on."""
        merged_any = await self._merge_accepted(params)
        self._set("working", "reading Current Sprint")
        snapshot: SprintSnapshot = await workflow.execute_activity_method(
            MonkeyActivities.read_sprint,
            ReadSprintInput(board_id=params.board_id),
            start_to_close_timeout=_TRELLO_TIMEOUT,
            retry_policy=_RETRY,
        )
        for card in snapshot.cards:
            if card.needs_human and card.id not in self._counters.alerted_cards:
                await self._alert_human(params, card)
        chosen = next_card(snapshot.cards)
        if chosen is None:
            return merged_any
        card = chosen
        if not card.success_checks:
            await self._update(
                params,
                card,
                BLOCKED,
                f"{MARK}: this card has no success checks, so nothing could show that the work "
                "is done. Add them at the end of the description (`Success checks:` and one "
                f"`- command` per line, run in the repository root), then move it back to "
                f"{CURRENT_SPRINT}.",
            )
            self._count(cards_blocked=1)
            return True
        self._set("working", f"budget check for {card.name} (~{card.estimated_tokens} tokens)")
        try:
            await workflow.execute_activity_method(
                BudgetActivities.check_budget,
                CheckBudgetInput(
                    agent=MONKEY_AGENT,
                    requested_tokens=card.estimated_tokens,
                    work_ref=card.id,
                    workflow_id=workflow.info().workflow_id,
                    reserve_observed=True,
                ),
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=_RETRY,
            )
        except ActivityError as exc:
            refusal = budget_refusal(exc)
            if refusal is None:
                raise
            self._count(budget_refusals=1)
            if refusal.never_fits:
                await self._update(
                    params,
                    card,
                    BLOCKED,
                    f"{MARK} will not start this card: its reservation "
                    f"({refusal.requested_tokens} tokens: the card's estimate or what past cards "
                    f"really cost, whichever is larger) is larger than the whole "
                    f"{refusal.window} budget ({refusal.limit_tokens}). Split the card or raise "
                    f"the budget, then move it back to {CURRENT_SPRINT}.",
                )
                self._count(cards_blocked=1)
                return True
            raise _BudgetWait(refusal) from exc
        await self._update(params, card, IN_PROGRESS, None)
        await self._work(params, card)
        return True

    async def _merge_accepted(self, params: MonkeyInput) -> bool:
        merged_any = False
        while self._counters.to_merge:
            card_id = self._counters.to_merge[0]
            self._set("working", f"merging the accepted card {card_id}")
            result: MergeResult = await workflow.execute_activity_method(
                MonkeyActivities.merge_card,
                MergeCardInput(board_id=params.board_id, card_id=card_id),
                start_to_close_timeout=_EXECUTE_TIMEOUT,
                retry_policy=_RETRY,
            )
            rest = self._counters.to_merge[1:]
            self._counters = self._counters.model_copy(update={"to_merge": rest})
            if result.merged:
                self._count(merged=1)
                merged_any = True
        return merged_any

    async def _work(self, params: MonkeyInput, card: SprintCard) -> None:
        # The cycle number too: a card sent back from review is worked again in the same run.
        info = workflow.info()
        run_key = f"{info.workflow_id}/{info.run_id}/{card.id}/{self._counters.cycles}"
        self._set("working", f"{card.name}: preparing its branch")
        try:
            workspace: Workspace = await workflow.execute_activity_method(
                MonkeyActivities.prepare_workspace,
                PrepareWorkspaceInput(card=card),
                start_to_close_timeout=_EXECUTE_TIMEOUT,
                retry_policy=_RETRY,
            )
        except ActivityError as exc:
            # The repository stayed unreachable through the retries: this card waits for a
            # person; the loop itself carries on.
            await self._blocked(params, card, clip(f"{MARK} could not fetch: {exc.cause}", 4000))
            return
        if workspace.problem:
            await self._blocked(params, card, f"{MARK} has no workspace: {workspace.problem}")
            return
        self._set("working", f"{card.name}: mapping the repository")
        context: RepoContext = await workflow.execute_activity_method(
            CartographerActivities.map_repository,
            MapRepositoryInput(card=card, commit=workspace.base_commit),
            start_to_close_timeout=_EXECUTE_TIMEOUT,
            retry_policy=_RETRY,
        )
        failure: str | None = None
        diff: str | None = None
        for attempt in range(1, _ATTEMPTS + 1):
            self._set("working", f"{card.name}: attempt {attempt}")
            try:
                outcome: CardOutcome = await workflow.execute_activity_method(
                    MonkeyActivities.execute_card,
                    ExecuteCardInput(
                        card=card,
                        attempt=attempt,
                        previous_failure=failure,
                        previous_diff=diff,
                        run_key=f"{run_key}/{attempt}",
                        workspace=workspace,
                        context=context,
                        board_id=params.board_id,
                    ),
                    start_to_close_timeout=_EXECUTE_TIMEOUT,
                    retry_policy=_RETRY,
                )
            except ActivityError as exc:
                problem = not_configured(exc)
                if problem is not None:
                    await self._blocked(params, card, f"{MARK} cannot work this card: {problem}")
                    return
                refusal = budget_refusal(exc)
                if refusal is None:
                    raise
                self._count(budget_refusals=1)
                await self._update(
                    params,
                    card,
                    CURRENT_SPRINT,
                    f"{MARK}: paused for the token budget before attempt {attempt}: {exc.cause}",
                )
                raise _BudgetWait(refusal) from exc
            self._count(tokens_used=outcome.tokens)
            if outcome.status == NO_PROVIDER:
                await self._blocked(
                    params,
                    card,
                    f"{MARK} did not work this card: it {outcome.summary}. Configure "
                    "FACTORYLM_ANTHROPIC_API_KEY (or Gemini), then move it back to "
                    f"{CURRENT_SPRINT}.",
                )
                return
            if outcome.passed:
                await workflow.execute_activity_method(
                    MonkeyActivities.publish_branch,
                    PublishBranchInput(branch=outcome.branch, commit=outcome.commit),
                    start_to_close_timeout=_EXECUTE_TIMEOUT,
                    retry_policy=_RETRY,
                )
                await self._update(params, card, REVIEW_NEEDED, hand_off(outcome, attempt))
                self._count(cards_done=1)
                self._record_branch(outcome, passed=True)
                return
            failure = clip(outcome.failing_output or outcome.check_report, 4000)
            diff = outcome.diff
            last = attempt == _ATTEMPTS
            header = (
                f"{MARK}: attempt {attempt} failed ({outcome.generated_by}, {outcome.tokens} "
                f"tokens)."
            )
            if last:
                await self._blocked(
                    params,
                    card,
                    clip(
                        f"{header} Moved to Blocked: a person needs to look at it.\n\n"
                        f"Checks:\n{outcome.check_report}\n\nLast diff:\n"
                        f"{outcome.diff or '(none applied)'}",
                        15000,
                    ),
                )
            else:
                await self._update(
                    params,
                    card,
                    None,
                    clip(
                        f"{header} Retrying with a different approach, with this failure "
                        f"as context.\n\nChecks:\n{outcome.check_report}",
                        8000,
                    ),
                )

    def _record_branch(self, outcome: CardOutcome, passed: bool) -> None:
        record = BranchRecord(name=outcome.branch, commit=outcome.commit, checks_passed=passed)
        kept = [b for b in self._counters.branches if b.name != record.name]
        branches = [*kept, record][-_MAX_BRANCHES:]
        self._counters = self._counters.model_copy(update={"branches": branches})

    async def _blocked(self, params: MonkeyInput, card: SprintCard, comment: str) -> None:
        await self._update(params, card, BLOCKED, comment)
        self._count(cards_blocked=1)

    async def _update(
        self, params: MonkeyInput, card: SprintCard, to_list: str | None, comment: str | None
    ) -> None:
        await workflow.execute_activity_method(
            MonkeyActivities.update_card,
            UpdateCardInput(
                board_id=params.board_id, card_id=card.id, to_list=to_list, comment=comment
            ),
            start_to_close_timeout=_TRELLO_TIMEOUT,
            retry_policy=_RETRY,
        )

    async def _alert_human(self, params: MonkeyInput, card: SprintCard) -> None:
        body = (
            f"FactoryLM Monkey: the card '{card.name}' needs a person (Human Action Required). "
            f"The Monkey skips it until it is done. {card.url}".strip()
        )
        sent: int = await workflow.execute_activity_method(
            NotifyActivities.send_message,
            SendMessageInput(
                dedup_key=f"monkey/human/{card.id}",
                recipients=params.recipients,
                body=body,
                workflow_id=workflow.info().workflow_id,
            ),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=_RETRY,
        )
        alerted = [*self._counters.alerted_cards, card.id][-_MAX_ALERTED:]
        self._counters = self._counters.model_copy(update={"alerted_cards": alerted})
        if sent:
            self._count(human_alerts=1)


@workflow.defn
class MonkeyReportWorkflow:
    @workflow.run
    async def run(self, params: MonkeyReportInput) -> bool:
        info = workflow.info()
        sent: bool = await workflow.execute_activity_method(
            MonkeyActivities.progress_report,
            params.model_copy(
                update={"report_key": f"monkey-report/{info.workflow_id}/{info.run_id}"}
            ),
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=_RETRY,
        )
        return sent
