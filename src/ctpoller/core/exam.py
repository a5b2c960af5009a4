"""What OpenREM holds about an exam, as plain values: study rows, events, Dose Check rows, ages.

Standard library only. Doses are ``Decimal`` (never float) with the unit in the field name:
``ctdivol_mgy`` (mGy), ``dlp_mgycm`` (mGy·cm). ``None`` means "not recorded"; nothing here invents
a value that OpenREM did not store.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, time
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from functools import cached_property
from typing import Literal

Phantom = Literal["head", "body"]

#: DICOM codes (CID 4052) of the CTDIw phantom, matched on ``code_value``, never on OpenREM's ids.
PHANTOM_CODES: dict[str, Phantom] = {"113690": "head", "113691": "body"}

#: How the key of an event without an irradiation event UID begins (see ``openrem.values.event_key``).
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
_SHOWN_PLACES = Decimal("0.001")


def finite(value: Decimal | None) -> Decimal | None:
    """``value`` if it is a finite number, else ``None`` (NaN and infinities are not doses)."""
    if value is None or not value.is_finite():
        return None
    return value


#: A weight (kg) outside (0, this] is not a weight (OpenREM stores 0 for "not known").
WEIGHT_MAX_KG = Decimal(500)


def plausible_weight(kg: Decimal | None) -> Decimal | None:
    """``kg`` if it can be a patient's weight (finite, above 0, at most ``WEIGHT_MAX_KG``), else None:
    an unknown weight never matches a weight band."""
    kg = finite(kg)
    return kg if kg is not None and 0 < kg <= WEIGHT_MAX_KG else None


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

    def shown(self) -> str:
        """The range as people read it: whole years (``"17 y"``), or whole months under 2 years
        (``"11 mo"``); a range (``"17–18 y"``) when the patient may have been either."""
        if self.high < 2 or (self.high == 2 and self.high_open):
            low, high, unit = self.low * 12, self.high * 12, "mo"
        else:
            low, high, unit = self.low, self.high, "y"
        # the bounds are quantized to 1e-6 year: round away that noise before taking whole units
        low, high = low.quantize(_SHOWN_PLACES), high.quantize(_SHOWN_PLACES)
        first = int(low.to_integral_value(rounding=ROUND_FLOOR))
        last = int(high.to_integral_value(rounding=ROUND_FLOOR))
        if self.high_open and high == last and last > first:
            last -= 1  # "under 18 years" is still 17
        return f"{first} {unit}" if first == last else f"{first}–{last} {unit}"


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
    alert_reason: str | None = None  # the operator's reason for proceeding past the alert
    notification_reason: str | None = None  # ... past the notification
    alert_authorised_by: str | None = None  # who authorised proceeding past the alert (staff, by name or role)
    notification_authorised_by: str | None = None  # ... past the notification


@dataclass(frozen=True)
class Event:
    """One CT irradiation event (``remapp_ctirradiationeventdata``).

    ``key`` is the event's identity across re-imports: its irradiation event UID, or, when OpenREM
    stored none, a key derived from the event's content (see ``openrem.values.event_key``). Never a pk.
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
    target_region: str | None = None  # the code meaning OpenREM stored (e.g. "Chest"), where it did


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
    patient_sex: str | None = None
    standard_names: tuple[str, ...] = ()
    events: tuple[Event, ...] = ()
    manufacturer: str | None = None
    model: str | None = None  # the manufacturer's model name
    patient_weight_kg: Decimal | None = None  # None when OpenREM has none, or an implausible one
    #: A keyed hash of OpenREM's patient ID (never the ID): it groups one patient's exams, nothing else.
    patient_key: str | None = None


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
    "trend_ctdivol",
    "trend_dlp_total",
    "cumulative_dlp_total",
    "cumulative_exams",
]

METRIC_LABELS: dict[str, str] = {
    "ctdivol": "CTDIvol (event)",
    "dlp": "DLP (event)",
    "dlp_total": "DLP (exam total)",
    "dose_check_ctdivol_notification": "CTDIvol over the scanner's Dose Check notification value",
    "dose_check_dlp_notification": "DLP over the scanner's Dose Check notification value",
    "dose_check_ctdivol_alert": "accumulated CTDIvol over the scanner's Dose Check alert value",
    "dose_check_dlp_alert": "accumulated DLP over the scanner's Dose Check alert value",
    "trend_ctdivol": "mean CTDIvol of a scanner's last exams of one type",
    "trend_dlp_total": "mean exam total DLP of a scanner's last exams of one type",
    "cumulative_dlp_total": "one patient's total DLP within a period",
    "cumulative_exams": "one patient's number of CT exams within a period",
}

#: A notification, or an alert (NEMA XR-25's two tiers): an alert's email says so in its subject.
Severity = Literal["notification", "alert"]
