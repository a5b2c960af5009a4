"""What the exceedance email shows, as plain strings for its templates. Pure: no clock, no I/O.

The exam once (from the message's first notification: every notification of a message is of one
exam), then one line per exceedance. Every text that came from OpenREM is untrusted: it is made one
line here, and the HTML template escapes it (Jinja2 autoescaping).

Times: OpenREM's ``study_date`` and ``study_time`` are the scanner's naive local time and are shown as
they are (never converted). ctpoller's own timestamps (when it found the exceedance) are shown in the
site's time zone (``CTPOLLER_TIMEZONE``, default the host's).
"""

from __future__ import annotations

import contextlib
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, time, tzinfo
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal, InvalidOperation

from ctpoller.core.model import Message, Notification

#: Shown for a value OpenREM did not record.
MISSING = "—"
#: How the phantom of an event is shown.
PHANTOMS = {"head": "16 cm (head)", "body": "32 cm (body)"}
#: How OpenREM's patient sex codes are shown.
SEXES = {"M": "male", "F": "female", "O": "other"}
#: Metrics of many exams (a scanner's trend, a patient's cumulative dose): no event of their own, and a
#: line (``Notification.detail``) on what the value is made of.
AGGREGATE_METRICS = frozenset({"trend_ctdivol", "trend_dlp_total", "cumulative_dlp_total", "cumulative_exams"})
#: How an alert (``severity = "alert"``) is marked: the subject and summary begin with it, its line carries it.
ALERT = "ALERT"
#: The most decimals a ratio gets when two would make a value over its limit look equal to it.
RATIO_PLACES_MAX = 4

# Unicode categories dropped from one-line text (controls and lone surrogates would break the message
# or the layout), and those turned into a space (line and paragraph separators would break the line).
_DROPPED = {"Cc", "Cs"}
_SPACES = {"Zl", "Zp"}


def format_decimal(value: Decimal | None, places: int | None = 3) -> str:
    """``value`` in plain fixed-point notation with at most ``places`` decimals, no trailing zeros.

    ``Decimal("176.12000000")`` → ``"176.12"``, ``Decimal("0E-8")`` → ``"0"``, ``Decimal("1E+2")`` →
    ``"100"``. ``places=None`` keeps every significant digit. Never converts to float.
    """
    if value is None:
        return MISSING
    if value.is_nan():
        return "not a number"
    if value.is_infinite():
        return "-∞" if value.is_signed() else "∞"
    if places is not None:
        with contextlib.suppress(InvalidOperation):  # too many digits to quantize: show it whole
            value = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def format_ratio(value: Decimal, limit: Decimal) -> str:
    """``value`` over ``limit`` as people read it, with two decimals: ``"1.52×"``.

    Never a ratio that looks like the limit for a value over it: 2002.39 over 2000 is ``"1.001×"``
    (more decimals, up to four, the last rounded up: 2000.001 over 2000 is ``"1.0001×"``).
    """
    if not limit:
        return "∞×"
    ratio = value / limit
    if not ratio.is_finite():
        return f"{format_decimal(ratio)}×"
    for places in range(2, RATIO_PLACES_MAX + 1):
        rounding = ROUND_CEILING if places == RATIO_PLACES_MAX else ROUND_HALF_EVEN
        try:
            shown = ratio.quantize(Decimal(1).scaleb(-places), rounding=rounding)
        except InvalidOperation:  # too many digits to quantize: show it whole
            return f"{format_decimal(ratio, None)}×"
        if value <= limit or shown > 1:
            return f"{shown:f}×"
    return f"{shown:f}×"  # pragma: no cover - the last rounding is up


def one_line(text: str | None) -> str:
    """``text`` as one clean line: control characters dropped, every run of whitespace one space."""
    if text is None:
        return ""
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if category in _SPACES or char in "\t\n\r\x0b\x0c\x85":
            kept.append(" ")
        elif category not in _DROPPED:
            kept.append(char)
    return " ".join("".join(kept).split())


def shown(text: str | None) -> str:
    return one_line(text) or MISSING


def _when(day: date | None, moment: time | None) -> str:
    if day is None and moment is None:
        return MISSING
    parts = [day.isoformat() if day else "date not recorded"]
    if moment is not None:
        parts.append(moment.isoformat(timespec="seconds"))
    return " ".join(parts) + " (scanner's local time)"


def local_time(moment: datetime, zone: tzinfo | None) -> str:
    """One of ctpoller's own timestamps in the site's time zone (``None``: the host's), with its offset."""
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z").strip()


def station(n: Notification) -> str:
    """``"Main CT (CTAWP00001)"``: the display name with the station name, either alone if that is all."""
    display, name = one_line(n.display_name), one_line(n.station_name)
    if display and name and display != name:
        return f"{display} ({name})"
    return display or name or "unknown station"


@dataclass(frozen=True)
class Line:
    """One exceedance, as the table shows it."""

    rule: str
    metric: str
    value: str
    limit: str
    times: str  # the limit as a multiple of a reference level, "2 × 47 mGy", or ""
    source: str  # where the limit comes from, "UK NDRL 2022", or ""
    ratio: str
    change: str  # "new", or "rose from 76 mGy"
    protocol: str
    acquisition: str
    phantom: str
    event: str  # series description and event number, or "whole exam"
    proceeding: str | None  # a Dose Check exceedance: who authorised proceeding, and the operator's reason
    alert: bool = False
    aggregate: bool = False  # a trend or cumulative value: of many exams, no event of its own
    detail: str = ""  # what a trend or cumulative value is made of


@dataclass(frozen=True)
class View:
    """Everything the templates show."""

    title: str
    summary: list[str]
    exam: list[tuple[str, str]]
    link: str | None
    lines: list[Line] = field(default_factory=list)
    found_at: str = ""


def _value(n: Notification) -> tuple[str, str]:
    """The value and limit as shown; with more digits when rounding would make them look equal."""
    value, limit = format_decimal(n.value), format_decimal(n.limit)
    if value == limit:
        value, limit = format_decimal(n.value, None), format_decimal(n.limit, None)
    return value, limit


def event_name(n: Notification) -> str:
    """The event as a physicist finds it in OpenREM: its place in the exam and its series."""
    if not n.event_key:
        return "whole exam"
    number = f"event {n.event_number}" if n.event_number is not None else "an event"
    series = one_line(n.series)
    return f"{number} (series {series})" if series else number


def is_aggregate(n: Notification) -> bool:
    return n.metric in AGGREGATE_METRICS


def is_alert(n: Notification) -> bool:
    return n.severity == "alert"


def limit_basis(n: Notification) -> tuple[str, str]:
    """Where the limit comes from: ``("2 × 47 mGy", "UK NDRL 2022")`` for a multiple of a reference
    level, ``("", "UK NDRL 2022")`` for the level itself, ``("", "AAPM Dose Check 2011")`` for a plain
    limit whose rule names its source, ``("", "")`` for a plain limit. A reference level without a
    name is called one."""
    source = one_line(n.reference)
    if n.reference_value is None:
        return "", source
    multiple = n.multiple if n.multiple is not None else Decimal(1)
    times = ""
    if multiple != 1:
        level = f"{format_decimal(n.reference_value, None)} {one_line(n.unit)}".strip()
        times = f"{format_decimal(multiple, None)} × {level}"
    return times, source or "reference level"


def line(n: Notification) -> Line:
    unit = one_line(n.unit)
    value, limit = _value(n)
    times, source = limit_basis(n)
    change = "new" if n.previous_value is None else f"rose from {format_decimal(n.previous_value)} {unit}".strip()
    return Line(
        rule=shown(n.rule),
        metric=shown(n.metric_label),
        value=f"{value} {unit}".strip(),
        limit=f"{limit} {unit}".strip(),
        times=times,
        source=source,
        ratio=format_ratio(n.value, n.limit),
        change=change,
        protocol=shown(n.protocol),
        acquisition=shown(n.acquisition_type),
        phantom=PHANTOMS.get(n.phantom or "", MISSING),
        event=event_name(n),
        proceeding=proceeding(n),
        alert=is_alert(n),
        aggregate=is_aggregate(n),
        detail=one_line(n.detail),
    )


def proceeding(n: Notification) -> str | None:
    """What the scanner recorded of proceeding past its Dose Check: who authorised it, and why."""
    reason, who = one_line(n.reason), one_line(n.authorised_by)
    if who:
        return f"Proceeding authorised by {who}: {reason or 'no reason recorded'}"
    return f"Operator's reason for proceeding: {reason}" if reason else None


def _summary(message: Message) -> list[str]:
    """What the email is about: for an update, precisely what is new and what rose. "ALERT: " first
    when any of it is an alert."""
    said = _update(message) if message.is_update else _first(message)
    alerts = sum(is_alert(n) for n in message.notifications)
    if alerts:
        said[0] = f"{ALERT}: {said[0]}"
    if 0 < alerts < len(message.notifications):  # say which: not every line is an alert
        said.append(f"{alerts} of them {'is an alert' if alerts == 1 else 'are alerts'}, marked {ALERT} below.")
    return said


def _first(message: Message) -> list[str]:
    """A first email: how many doses are over their limits; which trend or cumulative value this exam took over."""
    notes = message.notifications
    doses = [n for n in notes if not is_aggregate(n)]
    said = []
    if len(doses) == 1:
        said.append("A CT exam has a dose over its limit.")
    elif doses or not notes:
        said.append(f"A CT exam has {len(doses)} doses over their limits.")
    for label in dict.fromkeys(shown(n.metric_label) for n in notes if is_aggregate(n)):
        said.append(f"This exam took the {label} over its limit.")
    return said


def _update(message: Message) -> list[str]:
    said = ["Update on a CT exam emailed about before:"]
    for n in message.notifications:
        unit = one_line(n.unit)
        rule = f"(rule {shown(n.rule)}, limit {format_decimal(n.limit)} {unit})".replace(" )", ")")
        value = f"{format_decimal(n.value)} {unit}".rstrip()
        if is_aggregate(n):  # a value of many exams: no event, no "whole exam"
            if n.previous_value is None:
                said.append(f"New: {shown(n.metric_label)} over its limit: {value} {rule}")
            else:
                said.append(f"Rose: {shown(n.metric_label)} from {format_decimal(n.previous_value)} to {value} {rule}")
            continue
        where = "the whole exam" if not n.event_key else event_name(n)
        if n.previous_value is None:
            said.append(f"New: {where} over its limit: {shown(n.metric_label)} {value} {rule}")
        else:
            said.append(
                f"Rose: {shown(n.metric_label)} of {where} from {format_decimal(n.previous_value)} to {value} {rule}"
            )
    return said


def exam_rows(n: Notification) -> list[tuple[str, str]]:
    """The exam, once. Never a patient's name, ID or birth date (the model does not hold them)."""
    return [
        ("Scanner", station(n)),
        ("Study date", _when(n.study_date, n.study_time)),
        ("Description", shown(n.description)),
        ("Requested procedure", shown(n.requested_procedure)),
        ("Accession number", shown(n.accession_number)),
        ("Age", shown(n.age)),
        ("Sex", SEXES.get(one_line(n.sex).upper(), shown(n.sex))),
        ("Study Instance UID", shown(n.study_uid)),
    ]


def exam_link(n: Notification, openrem_url: str | None) -> str | None:
    """``<url>/openrem/ct/<pk>/``: the exam in OpenREM, by the study row that held it when found."""
    if openrem_url is None or n.study_pk is None:
        return None
    return f"{openrem_url.rstrip('/')}/openrem/ct/{n.study_pk}/"


def alert_prefix(message: Message) -> str:
    """``"ALERT: "`` when any notification of ``message`` is an alert, else ``""``."""
    return f"{ALERT}: " if any(is_alert(n) for n in message.notifications) else ""


_NOTHING = Notification(study_uid="", rule="", metric="", event_key="", value=Decimal(0), limit=Decimal(1), unit="")


def view(message: Message, *, openrem_url: str | None = None, zone: tzinfo | None = None) -> View:
    first = message.notifications[0] if message.notifications else _NOTHING
    return View(
        title=f"{alert_prefix(message)}CT dose over limit: {shown(first.description)} at {station(first)}",
        summary=_summary(message),
        exam=exam_rows(first),
        link=exam_link(first, openrem_url),
        lines=[line(n) for n in message.notifications],
        found_at=local_time(message.created_at, zone),
    )
