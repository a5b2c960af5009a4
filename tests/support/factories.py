"""Notifications, messages and archive rows as the tests need them: one exceedance of an adult head
exam, changed where a test says so (``notification(value=Decimal("80"))``, ``message(recipients=())``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

from ctpoller.core.model import ArchiveRow, Message, Notification

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
RECIPIENTS = ("physicist@hospital.example", "qa@hospital.example")


def notification(**changes: Any) -> Notification:
    base = Notification(
        study_uid=STUDY_UID,
        rule="adult head",
        metric="ctdivol",
        event_key="1.2.3.4.5",
        value=Decimal("76.00000000"),
        limit=Decimal("50.00000000"),
        unit="mGy",
        protocol="Head routine 5mm",
        station_name="CTAWP00001",
        display_name="Main CT",
        study_date=date(2026, 3, 2),
        study_time=time(8, 15, 30),
        description="CT HEAD WITHOUT CONTRAST",
        accession_number="ACC0042",
    )
    return replace(base, **changes)


def message(*notifications: Notification, **changes: Any) -> Message:
    """A message telling ``notifications`` (one ``notification()`` when none is given)."""
    base = Message(
        id=7,
        message_id="<ctpoller.7.abc123@hospital.example>",
        study_uid=STUDY_UID,
        created_at=datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
        recipients=RECIPIENTS,
        notifications=notifications or (notification(),),
    )
    return replace(base, **changes)


def archive_row(**changes: Any) -> ArchiveRow:
    """A sent notification, as the archive lists it; ``notification={...}`` changes the notification."""
    told = notification(
        **{
            "value": Decimal("76.12000000"),
            "previous_value": Decimal("60.5"),
            "protocol": "Head routine",
            "description": "CT HEAD",
            **changes.pop("notification", {}),
        }
    )
    row = ArchiveRow(
        notification=told,
        created_at=datetime(2026, 3, 2, 10, 0, tzinfo=timezone(timedelta(hours=1))),
        status="sent",
        message_id="<ctpoller.7@hospital.example>",
        sent_at=datetime(2026, 3, 2, 9, 0, 5, tzinfo=UTC),
        error=None,
    )
    return replace(row, **changes)
