"""The QA record as the report and the Summary sheet see it: one patient-free item per notification.

``report_items`` is the ONE place that joins the archive rows with the reviewers' verdicts: the HTML
report and the workbook's Summary sheet both read the record through it. Without reviews (``None``)
every notification is open. An item holds nothing that identifies a patient or an exam (no name, no
patient ID, no birth date, no accession number, no Study Instance UID): the report may be opened by
anyone who can read the QA share. For that reason an item has no ``Notification.detail`` either: a
trend's detail names the Study Instance UID of the exam that armed it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Protocol

from ctpoller.core.model import ArchiveRow, Notification
from ctpoller.core.review import notification_key as review_key

#: A notification's identity, as the state store keys its exceedances: (study UID, rule, metric, event).
NotificationKey = str  # core.review.notification_key: the workbook's hidden key column


class Review(Protocol):
    """What the report and the summary read of a reviewer's verdict (the review record has more)."""

    @property
    def outcome(self) -> str | None: ...

    @property
    def reason(self) -> str | None: ...


def notification_key(row: ArchiveRow) -> NotificationKey:
    """The key the review record keeps a notification's review under."""
    n = row.notification
    return review_key(n.study_uid, n.rule, n.metric, n.event_key, row.message_id)


@dataclass(frozen=True)
class Item:
    """One notification, patient-free, with its review's outcome (``None``: not reviewed, open)."""

    notified_at: datetime  # aware, UTC
    month: str  # YYYY-MM of the study date (of the notification when the study has no date)
    study_date: date | None
    station: str
    description: str
    protocol: str
    rule: str
    metric: str
    unit: str
    value: Decimal
    limit: Decimal
    ratio: Decimal | None  # None when the limit is zero
    update: bool  # the value rose after an earlier notification
    status: str
    outcome: str | None
    reason: str | None
    severity: str = "notification"  # or "alert"
    reference: str = ""  # the source the rule names for its limit, e.g. "UK NDRL 2022"
    reference_value: Decimal | None = None  # the reference level: limit = reference_value × multiple
    multiple: Decimal | None = None

    @property
    def alert(self) -> bool:
        return self.severity == "alert"

    @property
    def open(self) -> bool:
        return not self.outcome

    def age_days(self, now: datetime) -> int:
        return max(0, (now - self.notified_at).days)


def station_of(notification: Notification) -> str:
    return notification.display_name or notification.station_name or "unknown station"


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def item(row: ArchiveRow, review: Review | None = None) -> Item:
    n = row.notification
    notified_at = _utc(row.created_at)
    when = n.study_date or notified_at.date()
    ratio = n.value / n.limit if n.limit and n.value.is_finite() and n.limit.is_finite() else None
    outcome = (review.outcome or None) if review is not None else None
    return Item(
        notified_at=notified_at,
        month=f"{when.year:04d}-{when.month:02d}",
        study_date=n.study_date,
        station=station_of(n),
        description=n.description or "",
        protocol=n.protocol or "",
        rule=n.rule,
        metric=n.metric_label,
        unit=n.unit,
        value=n.value,
        limit=n.limit,
        ratio=ratio,
        update=n.previous_value is not None,
        status=row.status,
        outcome=outcome,
        reason=(review.reason or None) if review is not None and outcome else None,
        severity=n.severity,
        reference=n.reference or "",
        reference_value=n.reference_value,
        multiple=n.multiple,
    )


def report_items(rows: Iterable[ArchiveRow], reviews: Mapping[NotificationKey, Review] | None = None) -> Iterator[Item]:
    """Each archive row as an item, in the rows' order, with its review when ``reviews`` has one.

    Streams: a caller that folds the items keeps memory flat however long the record is.
    """
    for row in rows:
        review = reviews.get(notification_key(row)) if reviews else None
        yield item(row, review)
