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


class BudgetCheck(Model):
    """Allowed: what is left in the tightest window after this work's estimate."""

    remaining_tokens: int | None
    alerts_sent: int = 0


class BudgetRefusal(Model):
    """The details of a BudgetExceeded error: which window, and when it reopens."""

    window: str
    used_tokens: int
    limit_tokens: int
    requested_tokens: int
    retry_at: datetime
    # The work is bigger than the whole window: waiting for the next one will not help.
    never_fits: bool


class ExecuteCardInput(Model):
    card: SprintCard
    attempt: int = Field(ge=1)
    previous_failure: str | None = None
    run_key: str


class CardOutcome(Model):
    passed: bool
    summary: str
    check_report: str
    generated_by: str
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class MonkeyCounters(Model):
    cycles: int = 0
    cards_done: int = 0
    cards_blocked: int = 0
    human_alerts: int = 0
    tokens_used: int = 0
    budget_refusals: int = 0
    alerted_cards: list[str] = Field(default_factory=list)
    runs: int = 1  # how many runs (continue-as-new) this Monkey has had


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
    path: str = Field(description="relative path inside the card's scratch directory")
    content: str


class CardWork(BaseModel):
    """What Claude answers for a card: a summary and the files that make it true."""

    summary: str = Field(description="what was done, for the card's comment")
    files: list[FileChange] = Field(default_factory=list)
    notes: str = Field(default="", description="anything a reviewer should know")
