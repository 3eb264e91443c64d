"""Inputs and outputs of the Monkey's workflow and activities, one pydantic model each."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from factorylm.models.base import Model

# The board's lists, in board order, and its labels with their Trello colours.
BACKLOG = "Backlog"
CURRENT_SPRINT = "Current Sprint"
IN_PROGRESS = "In Progress"
REVIEW_NEEDED = "Review Needed"
DONE = "Done"
BLOCKED = "Blocked"
LISTS = (BACKLOG, CURRENT_SPRINT, IN_PROGRESS, REVIEW_NEEDED, DONE, BLOCKED)

CRITICAL_PATH = "Critical Path"
HUMAN_ACTION = "Human Action Required"
AUTONOMOUS = "Autonomous"
LABELS = {
    CRITICAL_PATH: "red",
    HUMAN_ACTION: "yellow",
    AUTONOMOUS: "green",
    "Infrastructure": "blue",
    "Agent Development": "purple",
    "Integration": "black",
}

MONKEY_AGENT = "monkey"
BUDGET_EXCEEDED = "BudgetExceeded"


class SprintCard(Model):
    """A card as the Monkey sees it: what to do, how to check it, what it may cost."""

    id: str
    name: str
    description: str = ""
    labels: list[str] = Field(default_factory=list)
    pos: float = 0.0
    checklist: list[str] = Field(default_factory=list)
    estimated_tokens: int = 0
    success_checks: list[str] = Field(default_factory=list)
    url: str = ""
    short_id: str = ""  # Trello's short link (the end of the card's short URL)

    @property
    def autonomous(self) -> bool:
        return AUTONOMOUS in self.labels and HUMAN_ACTION not in self.labels

    @property
    def needs_human(self) -> bool:
        return HUMAN_ACTION in self.labels

    @property
    def critical(self) -> bool:
        return CRITICAL_PATH in self.labels


class ReadSprintInput(Model):
    board_id: str


class SprintSnapshot(Model):
    cards: list[SprintCard]


class UpdateCardInput(Model):
    board_id: str
    card_id: str
    to_list: str | None = None
    comment: str | None = None


class CheckBudgetInput(Model):
    agent: str = MONKEY_AGENT
    requested_tokens: int = Field(ge=0)
    work_ref: str | None = None
    workflow_id: str | None = None
    # Reserve at least what past cards really cost (their p90), not only the card's estimate:
    # an estimate is written by whoever edits the card.
    reserve_observed: bool = False


class BudgetCheck(Model):
    """Allowed: what is left in the tightest window after this work's reservation."""

    remaining_tokens: int | None
    alerts_sent: int = 0
    reserved_tokens: int = 0


class BudgetRefusal(Model):
    """The details of a BudgetExceeded error: which window, and when it reopens."""

    window: str
    used_tokens: int
    limit_tokens: int
    requested_tokens: int
    retry_at: datetime
    # The work is bigger than the whole window: waiting for the next one will not help.
    never_fits: bool


# Outcomes of one attempt at a card.
PASSED, FAILED, NO_PROVIDER = "passed", "failed", "no_provider"


class Workspace(Model):
    """The card's branch in the Monkey's clone, made from the base branch's current commit."""

    repo: str
    branch: str
    base_branch: str
    base_commit: str
    # The branch's earlier change (a card sent back from review), for the next prompt.
    previous_diff: str = ""
    # Set when there is no workspace (no repository configured, clone failed): the reason.
    problem: str = ""


class PrepareWorkspaceInput(Model):
    card: SprintCard


class RelevantFile(Model):
    path: str
    score: float
    reason: str  # "named on the card" | "similar to the card"


class RepoContext(Model):
    """The Cartographer's answer: the repository's map and the files that matter to a card."""

    commit: str
    files: int
    map_text: str
    relevant: list[RelevantFile] = Field(default_factory=list)
    cached: bool = False


class MapRepositoryInput(Model):
    card: SprintCard
    commit: str


class ExecuteCardInput(Model):
    card: SprintCard
    attempt: int = Field(ge=1)
    previous_failure: str | None = None
    run_key: str
    workspace: Workspace | None = None
    context: RepoContext | None = None
    previous_diff: str | None = None
    board_id: str = ""  # where a reviewer's feedback is read from


class CardOutcome(Model):
    passed: bool
    summary: str
    check_report: str
    generated_by: str
    input_tokens: int = 0
    output_tokens: int = 0
    status: str = FAILED  # passed | failed | no_provider
    branch: str = ""
    commit: str = ""
    diff_stat: str = ""
    diff: str = ""
    failing_output: str = ""
    reserved_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class PublishBranchInput(Model):
    branch: str
    commit: str


class MergeCardInput(Model):
    board_id: str
    card_id: str


class MergeResult(Model):
    merged: bool
    branch: str = ""
    commit: str = ""
    detail: str = ""


class BranchRecord(Model):
    name: str
    commit: str
    checks_passed: bool


class MonkeyCounters(Model):
    cycles: int = 0
    cards_done: int = 0
    cards_blocked: int = 0
    human_alerts: int = 0
    tokens_used: int = 0
    budget_refusals: int = 0
    alerted_cards: list[str] = Field(default_factory=list)
    runs: int = 1  # how many runs (continue-as-new) this Monkey has had
    branches: list[BranchRecord] = Field(default_factory=list)  # the latest, for the summary
    merged: int = 0
    # Cards a person moved to Done, whose branches wait to be merged.
    to_merge: list[str] = Field(default_factory=list)


class MonkeyInput(Model):
    board_id: str
    recipients: list[str] = Field(default_factory=list)
    idle_poll_s: float = Field(default=300.0, gt=0)
    # Continue-as-new after this many cycles, as well as whenever Temporal suggests it.
    continue_after_cycles: int = Field(default=200, ge=1)
    # For `demo --once` and tests: return when no card is left to work on.
    stop_when_idle: bool = False
    counters: MonkeyCounters = Field(default_factory=MonkeyCounters)


class MonkeySummary(Model):
    status: str  # stopped | idle | budget_exhausted
    cards_done: int
    cards_blocked: int
    human_alerts: int
    tokens_used: int
    budget_refusals: int
    cycles: int
    runs: int
    branches: list[BranchRecord] = Field(default_factory=list)
    merged: int = 0


class MonkeyStatus(Model):
    state: str  # working | idle | paused | waiting_for_budget | stopping
    detail: str
    counters: MonkeyCounters
    budget_retry_at: datetime | None = None


class MonkeyReportInput(Model):
    board_id: str
    recipients: list[str]
    report_key: str


class FileChange(BaseModel):
    path: str = Field(description="path relative to the repository root")
    content: str = Field(description="the file's whole new content")


class CardWork(BaseModel):
    """What the model answers for a card: a change to the repository, as a unified diff or as
    whole-file replacements (one of the two), and a summary for the reviewer."""

    summary: str = Field(description="what was changed and why, for the card's comment")
    diff: str = Field(
        default="",
        description="a unified diff against the repository (git diff format, paths a/ and b/); "
        "leave empty when giving whole files",
    )
    files: list[FileChange] = Field(
        default_factory=list,
        description="whole-file replacements (new or changed files); leave empty with a diff",
    )
    notes: str = Field(default="", description="anything a reviewer should know")
