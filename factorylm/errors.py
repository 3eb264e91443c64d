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
# The approval on record is older than its validity: a late write is a different decision.
APPROVAL_EXPIRED = "ApprovalExpired"
# A retry found the PLC value changed by someone else since the first attempt read it.
PLC_VALUE_CHANGED = "PlcValueChanged"
# An action id already audited for another action, target or value: one id, one write.
ACTION_ID_REUSED = "ActionIdReused"
# A write for another site's PLCs reached this site's edge worker: it holds only its own
# site's catalog, and says so rather than "not in the catalog".
WRONG_SITE = "WrongSite"
PLC_SAFETY_ERRORS = (
    MALFORMED_REQUEST,
    WRONG_SITE,
    ACTION_NOT_IN_CATALOG,
    VALUE_OUT_OF_BOUNDS,
    APPROVAL_MISSING,
    APPROVAL_EXPIRED,
    READ_BACK_MISMATCH,
    PLC_VALUE_CHANGED,
    ACTION_ID_REUSED,
)
