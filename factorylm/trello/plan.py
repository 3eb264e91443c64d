"""A work plan (YAML or Markdown) as cards to import into the board's Backlog.

YAML: `cards:` (or a top-level list) of {name, description, labels, estimated_tokens,
checklist, success_checks}. Markdown: one `## Card name` section per card with optional
`Labels:` and `Estimated tokens:` lines, free description text, and `### Checklist` /
`### Success checks` bullet lists.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from factorylm.models.monkey import LABELS
from factorylm.trello.cards import estimated_tokens


class PlanError(ValueError):
    """The plan file cannot be imported; the message says where and why."""


class PlanCard(BaseModel):
    name: str = Field(min_length=1)
    description: str = ""
    labels: list[str] = Field(default_factory=list)
    estimated_tokens: int = Field(default=0, ge=0)
    checklist: list[str] = Field(default_factory=list)
    success_checks: list[str] = Field(default_factory=list)

    @field_validator("labels")
    @classmethod
    def _known_labels(cls, labels: list[str]) -> list[str]:
        unknown = [label for label in labels if label not in LABELS]
        if unknown:
            raise ValueError(f"unknown label(s) {unknown}; the board has {sorted(LABELS)}")
        return labels

    @field_validator("success_checks", mode="before")
    @classmethod
    def _argv_as_text(cls, checks: object) -> object:
        # A check may be written as an argv list; the card stores it as one shell-quoted line.
        if isinstance(checks, list):
            return [shlex.join(c) if isinstance(c, list) else c for c in checks]
        return checks


def load_plan(path: Path) -> list[PlanCard]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"cannot read the plan {path}: {exc.strerror}") from exc
    if path.suffix.lower() in (".yaml", ".yml"):
        raw = yaml.safe_load(text)
        items: Any = raw.get("cards") if isinstance(raw, dict) else raw
        if not isinstance(items, list):
            raise PlanError(f"{path}: expected a list of cards (or `cards:` with a list)")
    else:
        items = _markdown_cards(text)
    cards: list[PlanCard] = []
    for index, item in enumerate(items, start=1):
        try:
            cards.append(PlanCard.model_validate(item))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise PlanError(f"{path}: card {index}: {problems}") from exc
    if not cards:
        raise PlanError(f"{path}: no cards found (Markdown cards start with '## Name')")
    return cards


def _bullet(line: str) -> str | None:
    match = re.match(r"^\s*[-*]\s+(?:\[[ xX]\]\s*)?(.*)$", line)
    if not match:
        return None
    return match[1].strip().strip("`").strip()


def _markdown_cards(text: str) -> list[dict[str, Any]]:
    cards: list[dict[str, Any]] = []
    card: dict[str, Any] | None = None
    section = "description"
    for line in text.splitlines():
        if line.startswith("## "):
            card = {"name": line[3:].strip(), "description": "", "checklist": [], "labels": []}
            card["success_checks"] = []
            cards.append(card)
            section = "description"
            continue
        if card is None:
            continue
        if line.startswith("### "):
            title = line[4:].strip().lower()
            section = {"checklist": "checklist", "success checks": "success_checks"}.get(
                title, "description"
            )
            continue
        labels = re.match(r"^\s*labels\s*:\s*(.*)$", line, re.I)
        if labels and section == "description":
            card["labels"] = [x.strip() for x in labels[1].split(",") if x.strip()]
            continue
        if re.match(r"^\s*estimated tokens\s*:", line, re.I) and section == "description":
            card["estimated_tokens"] = estimated_tokens(line)
            continue
        if section in ("checklist", "success_checks"):
            item = _bullet(line)
            if item:
                card[section].append(item)
            continue
        card["description"] += line + "\n"
    for card in cards:
        card["description"] = card["description"].strip()
    return cards
