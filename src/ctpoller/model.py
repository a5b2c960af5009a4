"""Plain values that flow between the adapters, the rules and the notifiers.

Standard library only. Doses are ``Decimal`` (never float) with the unit in the field name:
``ctdivol_mgy`` (mGy), ``dlp_mgycm`` (mGy·cm). ``None`` means "not recorded"; nothing here invents
a value that OpenREM did not store.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from functools import cached_property
from typing import Any, Literal

Phantom = Literal["head", "body"]

#: DICOM codes (CID 4052) of the CTDIw phantom, matched on ``code_value``, never on OpenREM's ids.
PHANTOM_CODES: dict[str, Phantom] = {"113690": "head", "113691": "body"}

#: How the key of an event without an irradiation event UID begins (see ``source.event_key``).
NO_UID_PREFIX = "no-uid:"

#: Units of the metrics, as shown to people.
UNIT_MGY = "mGy"
UNIT_MGYCM = "mGy·cm"

#: Ages outside this range (in years) are treated as not recorded.
PLAUSIBLE_AGE_YEARS = (Decimal(0), Decimal(130))

_DICOM_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY])\s*$", re.IGNORECASE)
#: Years per unit of a DICOM age string; the first is exact enough for ranges, the others are other
#: ways OpenREM may have turned weeks into years.
_AGE_UNIT_YEARS = {
    "Y": (Decimal(1),),
    "M": (Decimal(1) / Decimal(12),),
    "W": (Decimal(7) / Decimal("365.25"), Decimal(1) / Decimal(52)),
    "D": (Decimal(1) / Decimal("365.25"),),
}
_AGE_PLACES = Decimal("0.000001")


def finite(value: Decimal | None) -> Decimal | None:
    """``value`` if it is a finite number, else ``None`` (NaN and infinities are not doses)."""
    if value is None or not value.is_finite():
        return None
    return value


def rule_identity(name: str) -> str:
    """What makes two rule names the same rule: case, Unicode form and spacing do not count.

    The rules file refuses two rules with one identity; the ledger, the Message-ID and everything
    else keyed by rule use it, so "Paed head" written "PAED  Head" is the same rule.
    """
    folded = unicodedata.normalize("NFC", " ".join(name.split())).casefold()
    return unicodedata.normalize("NFC", folded)


#: How far OpenREM's ``patient_age_decimal`` (rounded to 0.1 year) may lie from the age it stands for.
AGE_DECIMAL_HALF_WIDTH = Decimal("0.05")


@dataclass(frozen=True)
class AgeRange:
    """The ages (years) a patient may have had at the study: ``low <= age <= high`` (``< high``
    when ``high_open``). OpenREM stores no exact age, so an age is a range, never a number."""

    low: Decimal
    high: Decimal
    high_open: bool = False

    def overlaps(self, age_min: Decimal | None, age_max: Decimal | None) -> bool:
        """Whether some age in the range is in the band ``age_min <= age < age_max``."""
        if age_min is not None and (self.high < age_min or (self.high_open and self.high == age_min)):
            return False
        return age_max is None or self.low < age_max

    def intersection(self, other: AgeRange) -> AgeRange | None:
        low = max(self.low, other.low)
        if self.high != other.high:
            high, high_open = min((self.high, self.high_open), (other.high, other.high_open))
        else:
            high, high_open = self.high, self.high_open or other.high_open
        if low > high or (low == high and high_open):
            return None
        return AgeRange(low, high, high_open)


def age_range(age_decimal: Decimal | None, age_string: str | None) -> AgeRange | None:
    """The ages the patient may have had, from what OpenREM holds (never the birth date); ``None``
    when unknown.

    ``patient_age_decimal`` d (rounded to 0.1 year by OpenREM) stands for d-0.05 to d+0.05 when it
    is plausible (0-130 years). The DICOM age string stands for its whole unit: ``"017Y"`` for 17 to
    under 18 years, ``"011M"`` for 11/12 to under 12/12, ``"003W"`` and ``"010D"`` likewise. With
    both, the ages both allow; if they allow none (they disagree), the decimal's. A decimal that is
    just the age string's age rounded (what OpenREM stores without a birth date) adds nothing: then
    the age string alone.
    """
    low, high = PLAUSIBLE_AGE_YEARS
    from_decimal: AgeRange | None = None
    age_decimal = finite(age_decimal)
    if age_decimal is not None and low <= age_decimal <= high:
        from_decimal = AgeRange(max(age_decimal - AGE_DECIMAL_HALF_WIDTH, low), age_decimal + AGE_DECIMAL_HALF_WIDTH)
    from_string, rounded = _string_range(age_string)
    if from_string is None or from_string.low > high:
        return from_decimal
    if from_decimal is None or age_decimal in rounded:
        return from_string
    return from_decimal.intersection(from_string) or from_decimal


def _string_range(age_string: str | None) -> tuple[AgeRange | None, frozenset[Decimal]]:
    """The range a DICOM AS string stands for, and the decimals OpenREM may have made of it."""
    match = _DICOM_AGE.match(age_string or "")
    if not match:
        return None, frozenset()
    n = Decimal(int(match.group(1)))
    unit = match.group(2).upper()
    steps = _AGE_UNIT_YEARS[unit]
    low = (n * steps[0]).quantize(_AGE_PLACES, rounding=ROUND_FLOOR)
    high = ((n + 1) * steps[0]).quantize(_AGE_PLACES, rounding=ROUND_CEILING)
    rounded = frozenset(
        (n * step).quantize(Decimal("0.1"), rounding=rounding)
        for step in steps
        for rounding in (ROUND_HALF_EVEN, ROUND_HALF_UP)
    )
    return AgeRange(low, high, high_open=True), rounded


@dataclass(frozen=True)
class DoseCheck:
    """One ``remapp_ctdosecheckdetails`` row: the scanner's own NEMA XR-25 Dose Check for an event."""

    ctdivol_alert_configured: bool | None = None
    ctdivol_alert_mgy: Decimal | None = None
    dlp_alert_configured: bool | None = None
    dlp_alert_mgycm: Decimal | None = None
    accumulated_ctdivol_forward_estimate_mgy: Decimal | None = None
    accumulated_dlp_forward_estimate_mgycm: Decimal | None = None
    ctdivol_notification_configured: bool | None = None
    ctdivol_notification_mgy: Decimal | None = None
    dlp_notification_configured: bool | None = None
    dlp_notification_mgycm: Decimal | None = None
    ctdivol_forward_estimate_mgy: Decimal | None = None
    dlp_forward_estimate_mgycm: Decimal | None = None


@dataclass(frozen=True)
class Event:
    """One CT irradiation event (``remapp_ctirradiationeventdata``).

    ``key`` is the event's identity across re-imports: its irradiation event UID, or, when OpenREM
    stored none, a key derived from the event's content (see ``source.event_key``). Never a pk.
    """

    key: str
    event_pk: int
    study_pk: int
    protocol: str | None = None
    acquisition_type: str | None = None
    acquisition_type_code: str | None = None
    phantom: Phantom | None = None
    ctdivol_mgy: Decimal | None = None
    dlp_mgycm: Decimal | None = None
    series_description: str | None = None
    standard_names: tuple[str, ...] = ()
    dose_checks: tuple[DoseCheck, ...] = ()


@dataclass(frozen=True)
class StudyRow:
    """One ``remapp_generalstudymoduleattr`` row with what ctpoller needs from its 1-per-study tables."""

    pk: int
    uid: str | None
    accession_number: str | None = None
    study_date: date | None = None
    study_time: time | None = None
    description: str | None = None
    requested_procedure: str | None = None
    procedure: str | None = None
    station_name: str | None = None
    display_name: str | None = None
    total_dlp_mgycm: Decimal | None = None
    patient_age_decimal: Decimal | None = None
    patient_age: str | None = None
    standard_names: tuple[str, ...] = ()
    events: tuple[Event, ...] = ()


@dataclass(frozen=True)
class Exam:
    """Every study row that shares one Study Instance UID, in pk order: the unit of evaluation.

    OpenREM stores a "continued" dose report as a second row with the same UID; each row carries its
    own ``total_dlp``. The exam counts each irradiation event once (by ``Event.key``).
    """

    uid: str
    rows: tuple[StudyRow, ...]

    def __post_init__(self) -> None:
        if not self.rows:
            raise ValueError("an exam has at least one study row")

    @property
    def first(self) -> StudyRow:
        return self.rows[0]

    @property
    def study_pks(self) -> tuple[int, ...]:
        return tuple(row.pk for row in self.rows)

    def _walk(self) -> Iterator[tuple[StudyRow, Event, bool]]:
        """Every event of every row with its exam-wide key, and whether it counts.

        An event whose irradiation event UID an EARLIER row already reported is the same irradiation
        told again (a partly overlapping report OpenREM stored twice): it does not count. Within one
        row nothing is merged, and events without a UID are never merged, because identical content
        may well be two irradiations. Keys that occur more than once get ``#2``, ``#3`` ... in exam
        order, so every counted event has its own key, stable across OpenREM re-imports.
        """
        first_row: dict[str, int] = {}
        occurrences: dict[str, int] = {}
        for row in self.rows:
            for event in row.events:
                has_uid = not event.key.startswith(NO_UID_PREFIX)
                if has_uid and first_row.setdefault(event.key, row.pk) != row.pk:
                    yield row, event, False
                    continue
                n = occurrences[event.key] = occurrences.get(event.key, 0) + 1
                yield row, (event if n == 1 else replace(event, key=f"{event.key}#{n}")), True

    @cached_property  # an Exam never changes; rules ask for these once per rule
    def events(self) -> tuple[Event, ...]:
        """The exam's irradiation events, each counted once, each with its own key (see ``_walk``)."""
        return tuple(event for _, event, counts in self._walk() if counts)

    @cached_property  # an Exam never changes; rules ask for these once per rule
    def total_dlp_mgycm(self) -> Decimal | None:
        """The exam's total DLP: the sum of each row's own RDSR total, each event counted once.

        A row's ``total_dlp`` is the scanner's total for that report. Where a later row repeats an event
        already counted in an earlier row, that event's DLP is taken off the later row's total. A row
        with no total contributes the DLP of its counted events. ``None`` when no row has any DLP.
        """
        repeated: dict[int, Decimal] = {}
        fresh: dict[int, Decimal] = {}
        for row, event, counts in self._walk():
            dlp = finite(event.dlp_mgycm)
            if dlp is None:
                continue
            bucket = fresh if counts else repeated
            bucket[row.pk] = bucket.get(row.pk, Decimal(0)) + dlp
        total = Decimal(0)
        known = False
        for row in self.rows:
            row_total = finite(row.total_dlp_mgycm)
            if row_total is not None:
                total += row_total - repeated.get(row.pk, Decimal(0))
                known = True
            elif row.pk in fresh:
                total += fresh[row.pk]
                known = True
        return total if known else None

    @cached_property  # an Exam never changes; rules ask for these once per rule
    def age(self) -> AgeRange | None:
        """The patient's possible ages (see ``age_range``) by the first row that tells any."""
        for row in self.rows:
            age = age_range(row.patient_age_decimal, row.patient_age)
            if age is not None:
                return age
        return None

    def texts(self, attribute: str) -> tuple[str, ...]:
        """The distinct non-empty values of one StudyRow text attribute over all rows."""
        if len(self.rows) == 1:
            value = getattr(self.rows[0], attribute)
            return (value,) if value else ()
        values: list[str] = []
        for row in self.rows:
            value = getattr(row, attribute)
            if value and value not in values:
                values.append(value)
        return tuple(values)

    def event(self, key: str) -> Event | None:
        for event in self.events:
            if event.key == key:
                return event
        return None


Metric = Literal[
    "ctdivol",
    "dlp",
    "dlp_total",
    "dose_check_ctdivol_notification",
    "dose_check_dlp_notification",
    "dose_check_ctdivol_alert",
    "dose_check_dlp_alert",
]

METRIC_LABELS: dict[str, str] = {
    "ctdivol": "CTDIvol (event)",
    "dlp": "DLP (event)",
    "dlp_total": "DLP (exam total)",
    "dose_check_ctdivol_notification": "CTDIvol over the scanner's Dose Check notification value",
    "dose_check_dlp_notification": "DLP over the scanner's Dose Check notification value",
    "dose_check_ctdivol_alert": "accumulated CTDIvol over the scanner's Dose Check alert value",
    "dose_check_dlp_alert": "accumulated DLP over the scanner's Dose Check alert value",
}


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

    @property
    def is_update(self) -> bool:
        return any(n.is_update for n in self.notifications)

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
    ``rules.Screen``'s bounds, in order, as "1" (yes) and "0"; ``dose_check`` its answer to the
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
