"""The card description format: free text, then the machine-readable tail the Monkey reads.

    Goal: ...

    Estimated tokens: 4500
    Success checks:
    - test -f MONKEY_RESULT.md
    - python3 -m pytest -q

People edit cards in Trello, so the tail is plain text a person can read and change.
"""

from __future__ import annotations

import re

_ESTIMATE = re.compile(r"^\s*estimated tokens\s*:\s*~?\s*([\d,_ ]+)", re.I | re.M)
_CHECKS_HEADER = re.compile(r"^\s*success checks\s*:\s*$", re.I)


def render_description(description: str, estimated_tokens: int, checks: list[str]) -> str:
    lines = [description.strip(), "", f"Estimated tokens: {estimated_tokens}"]
    if checks:
        lines.append("Success checks:")
        lines += [f"- {check}" for check in checks]
    return "\n".join(lines).strip() + "\n"


def estimated_tokens(description: str) -> int:
    found = _ESTIMATE.search(description)
    if not found:
        return 0
    digits = re.sub(r"[^\d]", "", found[1])
    return int(digits) if digits else 0


def success_checks(description: str) -> list[str]:
    checks: list[str] = []
    inside = False
    for line in description.splitlines():
        if _CHECKS_HEADER.match(line):
            inside = True
            continue
        if not inside:
            continue
        stripped = line.strip()
        if not stripped.startswith(("- ", "* ")):
            break
        command = stripped[2:].strip()
        if command.startswith("`") and command.endswith("`"):
            command = command.strip("`").strip()
        if command:
            checks.append(command)
    return checks
