"""``[[cumulative]]``: one patient's total DLP, or number of CT exams, within a rolling window of days.

A patient is known only by a keyed hash of OpenREM's patient ID (``openrem.patients``); the raw ID
is never stored, logged, mailed or archived. Each exam counts once per patient, by Study Instance
UID (a re-sent report replaces its own). The window is the patient's exams whose study date lies
within ``days`` of the patient's newest study date (``days = 365``: that date and the 364 before).
``fold_cumulative`` puts one exam in and tells whether it takes the window over a limit (strictly
greater, as every limit): an episode per metric, notified once, that ends after an exam leaves the
window at or below the limit; a later start is a new episode, notified again.

Pure: the state store keeps the windows, the jobs fold every evaluated exam in (``jobs.watch``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from ctpoller.core.exam import UNIT_MGYCM, Exam, Metric, Severity
from ctpoller.core.model import Exceedance
from ctpoller.core.rules.ruleset import Rule
from ctpoller.core.rules.window import Counted, Window, matched, number, shown_value

#: The unit of ``cumulative_exams``.
UNIT_EXAMS = "exams"


@dataclass(frozen=True)
class Cumulative:
    """One ``[[cumulative]]``. ``criteria`` is a rule with its name and criteria and no limit: an exam
    counts when that rule would check ``dlp_total`` on it. At least one of the two limits is set."""

    name: str
    criteria: Rule
    days: int
    dlp_total: Decimal | None = None
    exams: int | None = None
    severity: Severity = "notification"
    recipients: tuple[str, ...] = ()


@dataclass(frozen=True)
class CumulativeExam:
    """What one exam counts in a patient's window: whether it counts at all, its date and total DLP."""

    counts: bool
    study_date: date | None
    dlp: Decimal | None


def cumulative_exam(cumulative: Cumulative, exam: Exam) -> CumulativeExam:
    """Whether the exam counts (its criteria pass, as a rule's ``dlp_total`` check, and it has a study
    date), with its date and total DLP (None when not recorded: it still counts as an exam)."""
    study_date = next((row.study_date for row in exam.rows if row.study_date is not None), None)
    seen = matched(cumulative.criteria, exam)
    return CumulativeExam(counts=seen.checks_total and study_date is not None, study_date=study_date, dlp=seen.total)


def fold_cumulative(
    cumulative: Cumulative, window: Window, uid: str, counted: CumulativeExam
) -> tuple[Window, list[Exceedance]]:
    """The patient's window after the exam ``uid``, and an exceedance for each limit it takes the
    window over (an episode starts).

    An episode still runs only if the window without this exam, at the new exam's date, is still over
    the limit: a patient back after the days have passed starts afresh, even when one exam alone
    exceeds both times.
    """
    order = counted.study_date.isoformat() if counted.study_date is not None else ""
    exams = window.placed(uid, order, counted.dlp, counted.counts and counted.study_date is not None)
    first = _first_day(cumulative, exams)
    exams = tuple(exam for exam in exams if exam.order >= first)
    before = tuple(exam for exam in window.exams if exam.uid != uid and exam.order >= first)
    episodes = dict(window.episodes)
    found: list[Exceedance] = []
    for metric, limit, value, unit in _checks(cumulative, exams):
        if metric in episodes and not _over(cumulative, before, metric):
            episodes.pop(metric)  # it ended while the patient was away (or with this exam)
        if limit is None or value <= limit:
            episodes.pop(metric, None)
            continue
        if metric in episodes:
            continue
        episodes[metric] = uid
        found.append(
            Exceedance(
                rule=cumulative.name,
                metric=metric,
                event_key="",
                value=shown_value(value, limit),
                limit=limit,
                unit=unit,
                recipients=cumulative.recipients,
                severity=cumulative.severity,
                detail=_detail(cumulative, exams, _total(exams)),
            )
        )
    return Window(exams, episodes), found


def first_day(cumulative: Cumulative, newest: date) -> date:
    """The first study date in a window whose newest exam is of ``newest``."""
    return newest - timedelta(days=cumulative.days - 1)


def _first_day(cumulative: Cumulative, exams: tuple[Counted, ...]) -> str:
    return first_day(cumulative, date.fromisoformat(exams[-1].order)).isoformat() if exams else ""


def _total(exams: tuple[Counted, ...]) -> Decimal:
    return sum((exam.value for exam in exams if exam.value is not None), Decimal(0))


def _checks(
    cumulative: Cumulative, exams: tuple[Counted, ...]
) -> tuple[tuple[Metric, Decimal | None, Decimal, str], ...]:
    """(metric, limit or None, the window's value, unit) of both limits."""
    exams_limit = Decimal(cumulative.exams) if cumulative.exams else None
    return (
        ("cumulative_dlp_total", cumulative.dlp_total, _total(exams), UNIT_MGYCM),
        ("cumulative_exams", exams_limit, Decimal(len(exams)), UNIT_EXAMS),
    )


def _over(cumulative: Cumulative, exams: tuple[Counted, ...], metric: str) -> bool:
    return any(m == metric and limit is not None and value > limit for m, limit, value, _ in _checks(cumulative, exams))


def _detail(cumulative: Cumulative, exams: tuple[Counted, ...], total: Decimal) -> str:
    """One line without an identifier: "this patient's 6th CT exam within 365 days (total DLP 3,240 mGy·cm
    over 6 exams)"."""
    place = len(exams)
    unknown = sum(1 for exam in exams if exam.value is None)
    missing = f", {unknown} without a recorded DLP" if unknown else ""
    return (
        f"this patient's {_ordinal(place)} CT exam within {cumulative.days} days "
        f"(total DLP {number(total)} {UNIT_MGYCM} over {len(exams)} exams{missing})"
    )


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
