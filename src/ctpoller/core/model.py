"""What ctpoller decides and records, as plain values: exceedances, notifications, messages, the
ledger, and what a poll cycle sees and tracks of a study row. Standard library only."""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Literal

from ctpoller.core.exam import METRIC_LABELS, NO_UID_PREFIX, Metric, Severity, StudyRow


def rule_identity(name: str) -> str:
    """What makes two rule names the same rule: case, Unicode form and spacing do not count.

    The rules file refuses two rules with one identity; the ledger, the Message-ID and everything
    else keyed by rule use it, so "Paed head" written "PAED  Head" is the same rule.
    """
    folded = unicodedata.normalize("NFC", " ".join(name.split())).casefold()
    return unicodedata.normalize("NFC", folded)


@dataclass(frozen=True)
class Exceedance:
    """A dose strictly greater than a limit, found by the rules in one exam.

    Its identity, stable across OpenREM re-imports, is ``(exam uid, rule, metric, event_key)``, the
    rule by ``rule_identity``; ``event_key`` is ``""`` for exam-level metrics such as ``dlp_total``.
    An ``event_key`` that is an irradiation event UID is the same event in any exam (see ``Ledger``).
    """

    rule: str
    metric: Metric
    event_key: str
    value: Decimal
    limit: Decimal
    unit: str
    recipients: tuple[str, ...] = ()
    protocol: str | None = None
    severity: Severity = "notification"
    reference: str | None = None  # the source of the limit, e.g. "UK NDRL 2022"
    reference_value: Decimal | None = None  # the reference level; limit = reference_value × multiple
    multiple: Decimal | None = None
    detail: str | None = None  # one line on what a trend or cumulative value is made of (no identifiers)

    @property
    def ratio(self) -> Decimal:
        return self.value / self.limit if self.limit else Decimal("Infinity")


#: How the ledger key of an exam known by its irradiation events begins (see ``events_key``).
EVENTS_KEY_PREFIX = "events:"


def events_key(event_keys: Iterable[str]) -> str | None:
    """The key of an exam by the set of its irradiation event UIDs, the same under whichever Study
    Instance UID OpenREM stored the report; ``None`` when some event has no UID, or none has any."""
    keys = sorted(set(event_keys))
    if not keys or any(key.startswith(NO_UID_PREFIX) for key in keys):
        return None
    digest = hashlib.sha256("\n".join(keys).encode("utf-8", "surrogatepass")).hexdigest()
    return EVENTS_KEY_PREFIX + digest


@dataclass
class Ledger:
    """The highest value notified so far, as the de-duplication looks it up.

    ``exams``: per (exam key, rule identity, metric, event key); the exam key is the Study Instance
    UID, or for an exam-level metric also the exam's ``events_key``. ``events``: per (rule identity,
    metric, irradiation event UID) under any Study Instance UID, since such a UID names one
    irradiation wherever OpenREM stored its report.
    """

    exams: dict[tuple[str, str, str, str], Decimal] = field(default_factory=dict)
    events: dict[tuple[str, str, str], Decimal] = field(default_factory=dict)

    def add(self, exam_key: str, rule: str, metric: str, event_key: str, value: Decimal) -> None:
        rule = rule_identity(rule)
        _keep_highest(self.exams, (exam_key, rule, metric, event_key), value)
        if event_key and not event_key.startswith(NO_UID_PREFIX):
            _keep_highest(self.events, (rule, metric, event_key), value)

    def update(self, other: Ledger) -> None:
        for key, value in other.exams.items():
            _keep_highest(self.exams, key, value)
        for event, value in other.events.items():
            _keep_highest(self.events, event, value)

    def previous(self, study_uid: str, exam_events: str | None, found: Exceedance) -> Decimal | None:
        """The highest value notified before for what ``found`` exceeds in exam ``study_uid`` (whose
        ``events_key`` is ``exam_events``), or ``None`` if it never was."""
        rule = rule_identity(found.rule)
        if found.event_key and not found.event_key.startswith(NO_UID_PREFIX):
            return self.events.get((rule, found.metric, found.event_key))
        values = [self.exams.get((study_uid, rule, found.metric, found.event_key))]
        if not found.event_key and exam_events is not None:
            values.append(self.exams.get((exam_events, rule, found.metric, "")))
        return max((v for v in values if v is not None), default=None)


def _keep_highest(values: dict[Any, Decimal], key: Any, value: Decimal) -> None:
    if key not in values or value > values[key]:
        values[key] = value


@dataclass(frozen=True)
class Notification:
    """One exceedance as told to people: everything the email and the archive show about it."""

    study_uid: str
    rule: str
    metric: str
    event_key: str
    value: Decimal
    limit: Decimal
    unit: str
    previous_value: Decimal | None = None
    protocol: str | None = None
    station_name: str | None = None
    display_name: str | None = None
    study_date: date | None = None
    study_time: time | None = None
    description: str | None = None
    accession_number: str | None = None
    # What the email shows besides (``None`` in rows recorded before ctpoller kept them):
    requested_procedure: str | None = None
    age: str | None = None  # as ``core.exam.AgeRange.shown`` has it: "17 y", "11 mo", "17–18 y"
    sex: str | None = None  # as OpenREM stores it: M, F, O
    study_pk: int | None = None  # OpenREM's study row holding the exceedance then (a re-sent report changes it)
    acquisition_type: str | None = None
    phantom: str | None = None  # "head" (16 cm) or "body" (32 cm)
    series: str | None = None  # the event's series description
    event_number: int | None = None  # the event's place in the exam, from 1
    reason: str | None = None  # a Dose Check exceedance: the operator's reason for proceeding
    authorised_by: str | None = None  # ... and who authorised proceeding (staff, as the scanner recorded them)
    severity: Severity = "notification"
    reference: str | None = None  # as in ``Exceedance``
    reference_value: Decimal | None = None
    multiple: Decimal | None = None
    detail: str | None = None

    @property
    def ratio(self) -> Decimal:
        return self.value / self.limit if self.limit else Decimal("Infinity")

    @property
    def is_update(self) -> bool:
        return self.previous_value is not None

    @property
    def metric_label(self) -> str:
        return METRIC_LABELS.get(self.metric, self.metric)


MessageStatus = Literal["pending", "sending", "sent", "failed", "dismissed", "not_sent"]


@dataclass(frozen=True)
class Notice:
    """What a message that is not about an exam says (``kind``: ``silence``, ``digest``), rendered when
    it is recorded, so that a re-sent notice says the same."""

    kind: str
    subject: str
    body: str


@dataclass(frozen=True)
class Message:
    """One email: every new or risen exceedance of one exam found in one run.

    ``message_id`` is fixed when the message is recorded, so a re-sent message carries the same
    Message-ID. ``status`` is ``not_sent`` for notifications recorded by ``backfill --no-email``.
    """

    id: int
    message_id: str
    study_uid: str
    created_at: datetime
    recipients: tuple[str, ...]
    notifications: tuple[Notification, ...]
    status: MessageStatus = "pending"
    attempts: int = 0
    sent_at: datetime | None = None
    last_error: str | None = None
    thread_root: str | None = None  # the Message-ID of the first email sent about this exam, if another
    notice: Notice | None = None  # a notice to people instead of an exam's notifications

    @property
    def is_update(self) -> bool:
        """Whether people were told about this exam before (a rise, or a new exceedance after one)."""
        return self.thread_root is not None or any(n.is_update for n in self.notifications)

    def __iter__(self) -> Iterator[Notification]:
        return iter(self.notifications)


@dataclass(frozen=True)
class ArchiveRow:
    """One row of the QA archive: a notification with its message's delivery status."""

    notification: Notification
    created_at: datetime
    status: MessageStatus
    message_id: str
    sent_at: datetime | None = None
    error: str | None = None
    recipients: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class StudyHead:
    """What a poll cycle sees of a study row before deciding to evaluate it."""

    pk: int
    uid: str | None
    modality: str | None
    has_patient: bool
    n_events: int
    fingerprint: str

    @property
    def complete(self) -> bool:
        """OpenREM writes the modality after the events and the patient row last."""
        return self.modality is not None and self.modality.upper() == "CT" and self.has_patient and bool(self.uid)

    @property
    def other_modality(self) -> bool:
        return self.modality is not None and self.modality.strip() != "" and self.modality.upper() != "CT"


@dataclass(frozen=True)
class Screened:
    """A CT study row as ``backfill`` first reads it: one line per row instead of all its events.

    ``complete`` as ``StudyHead.complete``; ``answers`` holds the database's answers to a
    ``core.rules.Screen``'s bounds, in order, as "1" (yes) and "0"; ``dose_check`` its answer to the
    Dose Check question (``None``: not asked). ``row`` holds only what exam-level criteria look at
    (no events, no accession number or date), and only when some answer is yes (``None``
    otherwise). ``single`` is False when OpenREM holds more than one patient-study or equipment
    row for the study (it writes one).
    """

    pk: int
    uid: str | None
    complete: bool
    n_events: int
    answers: str
    dose_check: bool | None
    row: StudyRow | None = None
    single: bool = True

    def head(self) -> StudyHead:
        return StudyHead(
            pk=self.pk,
            uid=self.uid,
            modality="CT",
            has_patient=self.complete,
            n_events=self.n_events,
            fingerprint="",
        )


@dataclass(frozen=True)
class Snapshot:
    """PostgreSQL's view of running transactions when a scan started (None on SQLite)."""

    xmin: int | None = None
    xmax: int | None = None


@dataclass
class Tracked:
    """What ctpoller remembers about one OpenREM study row."""

    pk: int
    uid: str | None
    status: str
    fingerprint: str
    first_seen_at: datetime
    changed_at: datetime
    first_seen_xmax: int | None = None
    decided_at: datetime | None = None
