"""``[[trend]]``: the mean of a metric over a station's last N exams of one type, above k × a reference.

A trend's window is one per (trend, station): the last ``exams`` matching exams by study date and
time, then Study Instance UID. ``fold_trend`` puts one exam in (an exam re-sent under new pks, same
UID, replaces its own value; an exam that no longer counts leaves) and tells whether an episode
starts: the window is full, its mean is above ``above`` × ``drl`` and, with ``armed_above``, some
exam in it is above ``armed_above`` × ``drl``. An episode is notified once; it ends after an exam
that leaves the condition false, and a later start is a new episode, notified again.

Pure: the state store keeps the windows, the jobs fold every evaluated exam in (``jobs.watch``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time
from decimal import Decimal
from typing import Literal

from ctpoller.core.exam import UNIT_MGY, UNIT_MGYCM, Exam, Metric, Severity
from ctpoller.core.model import Exceedance
from ctpoller.core.rules.ruleset import Rule
from ctpoller.core.rules.window import Counted, Window, matched, number, shown_value

TrendMetric = Literal["ctdivol", "dlp_total"]

#: The notification metric of each trend metric.
TREND_METRICS: dict[str, Metric] = {"ctdivol": "trend_ctdivol", "dlp_total": "trend_dlp_total"}


@dataclass(frozen=True)
class Trend:
    """One ``[[trend]]``. ``criteria`` is a rule with the trend's name and criteria and no limit:
    an exam is of the trend's type exactly when that rule would check the metric on it."""

    name: str
    criteria: Rule
    metric: TrendMetric
    drl: Decimal
    exams: int  # N, the window's size
    above: Decimal = Decimal(1)  # k: fires when the mean of a full window is above k × drl
    armed_above: Decimal | None = None  # m: only while some exam in the window is above m × drl
    reference: str | None = None
    severity: Severity = "notification"
    recipients: tuple[str, ...] = ()

    @property
    def limit(self) -> Decimal:
        return self.drl * self.above

    @property
    def unit(self) -> str:
        return UNIT_MGY if self.metric == "ctdivol" else UNIT_MGYCM


def trend_value(trend: Trend, exam: Exam) -> Decimal | None:
    """What the exam counts in the trend: the highest CTDIvol of its matching events, or its total DLP
    (when a rule with these criteria would check ``dlp_total``); None when it is not of the type or
    has no value."""
    seen = matched(trend.criteria, exam)
    if trend.metric == "ctdivol":
        return max(seen.ctdivols, default=None)
    return seen.total if seen.checks_total else None


def trend_order(study_date: date | None, study_time: time | None) -> str:
    """An exam's place in a window as sortable text; an exam without a date sorts first."""
    if study_date is None:
        return ""
    return f"{study_date.isoformat()} {(study_time or time(0)).isoformat(timespec='microseconds')}"


def fold_trend(
    trend: Trend, window: Window, uid: str, order: str, value: Decimal | None, station: str
) -> tuple[Window, Exceedance | None]:
    """The window after the exam ``uid`` (``value`` None: it does not count, or no longer does), and
    the exceedance to notify when this exam starts an episode."""
    exams = window.placed(uid, order, value, value is not None)[-trend.exams :]
    metric = TREND_METRICS[trend.metric]
    episodes = dict(window.episodes)
    on = _condition(trend, exams)
    if not on:
        episodes.pop(metric, None)
        return Window(exams, episodes), None
    if metric in episodes:
        return Window(exams, episodes), None
    episodes[metric] = uid
    total = sum((exam.value for exam in exams if exam.value is not None), Decimal(0))
    mean = total / len(exams)
    found = Exceedance(
        rule=trend.name,
        metric=metric,
        event_key="",
        value=shown_value(mean, trend.limit),
        limit=trend.limit,
        unit=trend.unit,
        recipients=trend.recipients,
        severity=trend.severity,
        reference=trend.reference,
        reference_value=trend.drl,
        multiple=trend.above,
        detail=_detail(trend, exams, mean, station),
    )
    return Window(exams, episodes), found


def _condition(trend: Trend, exams: tuple[Counted, ...]) -> bool:
    values = [exam.value for exam in exams if exam.value is not None]
    if len(values) < trend.exams:
        return False
    if sum(values, Decimal(0)) <= trend.limit * len(values):  # mean > limit, exactly
        return False
    return trend.armed_above is None or any(value > trend.drl * trend.armed_above for value in values)


def _detail(trend: Trend, exams: tuple[Counted, ...], mean: Decimal, station: str) -> str:
    """One line, e.g. "mean of the last 20 exams on CT North: 142 mGy (2.18 × 65 mGy BfS DRW 2022);
    armed by the exam of 2026-03-02 14:05 at 210 mGy (3.23 ×)": the arming exam by its study date and
    time, never by an identifier, so that the line may be shown wherever the notification is."""
    source = f" {trend.reference}" if trend.reference else ""
    line = (
        f"mean of the last {len(exams)} exams on {station}: {number(mean)} {trend.unit} "
        f"({number(mean / trend.drl)} × {number(trend.drl)} {trend.unit}{source})"
    )
    if trend.armed_above is not None:
        armed = max(
            (exam for exam in exams if exam.value is not None and exam.value > trend.drl * trend.armed_above),
            key=lambda exam: (exam.value, exam.order),
        )
        assert armed.value is not None
        when = f"the exam of {armed.order[:16]}" if armed.order else "an exam of unknown date"
        line += f"; armed by {when} at {number(armed.value)} {trend.unit} ({number(armed.value / trend.drl)} ×)"
    return line
