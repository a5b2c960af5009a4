"""A window of exams as ``[[trend]]`` and ``[[cumulative]]`` keep it, and which exams a watch counts.

Pure values: the state store keeps the windows (``store.windows``), the jobs fold each evaluated exam
into them (``jobs.watch``), and ``core.rules.trend`` / ``core.rules.cumulative`` say what a fold does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, ROUND_UP, Decimal

from ctpoller.core.exam import Exam, finite
from ctpoller.core.rules.explain import matched_events, total_matches
from ctpoller.core.rules.ruleset import Rule

#: Where an exam without a station name or display name is counted.
NO_STATION = "(no station name)"


@dataclass(frozen=True)
class Counted:
    """One exam in a window: its Study Instance UID, its place (sortable text) and its value."""

    uid: str
    order: str  # trend: "YYYY-MM-DD HH:MM:SS.ffffff" ("" when unknown, first); cumulative: "YYYY-MM-DD"
    value: Decimal | None  # a cumulative exam without a DLP still counts as an exam


@dataclass(frozen=True)
class Window:
    """The exams one watch counts for one group (a station, a patient), oldest first, and the
    episodes running: metric -> the Study Instance UID of the exam that started it."""

    exams: tuple[Counted, ...] = ()
    episodes: dict[str, str] = field(default_factory=dict)

    def holds(self, uid: str) -> bool:
        return any(exam.uid == uid for exam in self.exams)

    def placed(self, uid: str, order: str, value: Decimal | None, counts: bool) -> tuple[Counted, ...]:
        """The exams with ``uid`` replaced by (or, when it no longer ``counts``, without) this one."""
        kept = [exam for exam in self.exams if exam.uid != uid]
        if counts:
            kept.append(Counted(uid, order, value))
        return tuple(sorted(kept, key=lambda exam: (exam.order, exam.uid)))


def station_of(exam: Exam) -> str:
    """The station whose window an exam counts in: display name, else station name, of its first row
    that has one; else ``NO_STATION``."""
    for attribute in ("display_name", "station_name"):
        for value in exam.texts(attribute):
            if value.strip():
                return value.strip()
    return NO_STATION


@dataclass(frozen=True)
class Matched:
    """What a watch with some criteria sees of an exam, matched exactly as a rule with them matches:
    the finite CTDIvol of every event such a rule checks ``ctdivol`` on, whether it checks
    ``dlp_total`` on the exam, and the exam's total DLP (None when not recorded)."""

    ctdivols: tuple[Decimal, ...]
    checks_total: bool
    total: Decimal | None


def matched(criteria: Rule, exam: Exam) -> Matched:
    """The exam as a rule with these criteria sees it (see ``Matched``), by the rules' own trace
    (``core.rules.explain``): the verdicts ``evaluate`` and ``explain`` use."""
    events = matched_events(criteria, exam)
    if events is None:
        return Matched((), False, None)
    ctdivols = tuple(value for event in events if (value := finite(event.ctdivol_mgy)) is not None)
    return Matched(ctdivols, total_matches(criteria, exam), finite(exam.total_dlp_mgycm))


def shown_value(value: Decimal, limit: Decimal | None = None) -> Decimal:
    """A mean or a sum as people read it: to 0.01 (an integer stays one), rounded up where rounding to
    the nearest would show a value above ``limit`` as not above it."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    nearest = value.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
    if limit is not None and value > limit >= nearest:
        return value.quantize(Decimal("0.01"), rounding=ROUND_UP)
    return nearest


def number(value: Decimal) -> str:
    """A number with thousands separators and no trailing zeros: 3,240 / 142.5 / 2.18."""
    shown = shown_value(value).normalize()
    text = f"{shown:,f}"
    return text
