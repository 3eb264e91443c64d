"""Alarm management's messages: the grouped message of an alarm flood."""

from __future__ import annotations

from factorylm.models.base import Model


class AlarmNoticeInput(Model):
    """One message about alarms (a flood's grouped list), sent once per `dedup_key`."""

    dedup_key: str
    recipients: list[str]
    body: str
