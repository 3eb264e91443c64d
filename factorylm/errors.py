"""Typed errors that must not be retried. Their names travel as ApplicationError types."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError


def non_retryable(kind: str, message: str) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)


# A PLC write refused by the safety rules, or a read-back that disagrees: never retried blindly.
ACTION_NOT_IN_CATALOG = "ActionNotInCatalog"
VALUE_OUT_OF_BOUNDS = "ValueOutOfBounds"
APPROVAL_MISSING = "ApprovalMissing"
READ_BACK_MISMATCH = "ReadBackMismatch"
MALFORMED_REQUEST = "MalformedRequest"
PLC_SAFETY_ERRORS = (
    MALFORMED_REQUEST,
    ACTION_NOT_IN_CATALOG,
    VALUE_OUT_OF_BOUNDS,
    APPROVAL_MISSING,
    READ_BACK_MISMATCH,
)
