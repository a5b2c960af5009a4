"""What a run did: the summary line, what a dry run prints, the exit code's problem."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ctpoller.errors import CtpollerError, NotifyError
from ctpoller.jobs.stats import FiredStats
from ctpoller.mail.render import format_decimal
from ctpoller.store.notifications import NewMessage

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


KEPT_MESSAGES = 1000


@dataclass
class Report:
    """What a run did, for the summary line, ``--dry-run`` output and the exit code."""

    watermark_before: int | None = None
    watermark_after: int | None = None
    initialised: bool = False
    studies_seen: int = 0
    exams_evaluated: int = 0
    exams_read: int = 0  # backfill: exams read in full (the others were cleared by the screen)
    events_evaluated: int = 0
    exceedances: int = 0
    waiting: list[tuple[int, str]] = field(default_factory=list)
    abandoned: list[tuple[int, str]] = field(default_factory=list)
    messages: list[NewMessage] = field(default_factory=list)
    created: int = 0  # messages recorded (backfill keeps only the first KEPT_MESSAGES in ``messages``)
    sent: int = 0
    deferred: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    archive_rows: int | None = None
    archive_error: str | None = None
    archive_needs_a_person: bool = False  # the archive directory is missing or not writable
    report_html_rows: int | None = None
    report_html_error: str | None = None
    report_html_needs_a_person: bool = False  # the HTML report's directory is missing or not writable
    source_lag_seconds: float | None = None
    settings_problem: bool = False  # delivery stopped on the mail settings: a person must act
    failed_waiting: int = 0  # failed messages in the outbox, this run's and older, not retried nor dismissed
    arrivals: list[tuple[int, str]] | None = None  # run: (pk, station) of each exam evaluated
    silence_seconds: float | None = None  # run: how long OpenREM has sent no new CT study (the heartbeat)
    silence_alarm: bool | None = None  # run: whether that silence is announced
    fired: FiredStats = field(default_factory=FiredStats)  # backfill: per rule, the exams notified (--stats)

    def problem(self) -> CtpollerError | None:
        """What went wrong in a run that otherwise completed, as an error (for the record and the
        exit code): what needs a person (exit 1) before what the next run retries (exit 75).

        Messages that failed in an earlier run are no problem of this run (it exits 0); every run
        warns about them until a person retries or dismisses them.
        """
        if self.failed:
            return NotifyError(
                f"{len(self.failed)} notification(s) refused permanently: see 'ctpoller status', then "
                "'ctpoller retry' or 'ctpoller dismiss'",
                permanent=True,
            )
        if self.settings_problem:
            return NotifyError("delivery stopped: the mail settings need attention", permanent=False, scope="settings")
        if self.archive_error and self.archive_needs_a_person:
            return NotifyError(self.archive_error, permanent=False, scope="settings")
        if self.report_html_error and self.report_html_needs_a_person:
            return NotifyError(self.report_html_error, permanent=False, scope="settings")
        if self.deferred:
            return NotifyError(f"{len(self.deferred)} notification(s) deferred to the next run", permanent=False)
        if self.archive_error:
            return NotifyError(self.archive_error, permanent=False)
        if self.report_html_error:
            return NotifyError(self.report_html_error, permanent=False)
        return None

    def summary(self, what: str = "run") -> str:
        moved = (
            f"watermark {self.watermark_before}→{self.watermark_after}"
            if self.watermark_before != self.watermark_after
            else f"watermark {self.watermark_after}"
        )
        parts = [
            f"{self.studies_seen} new study rows",
            f"{self.exams_evaluated} exams evaluated"
            + (f" ({self.exams_read} read in full)" if what.startswith("backfill") else ""),
            f"{self.events_evaluated} events",
            f"{self.exceedances} exceedances",
            f"{max(self.created, len(self.messages))} new notifications",
            f"{self.sent} emails sent",
        ]
        if self.waiting:
            parts.append(f"{len(self.waiting)} waiting to settle")
        if self.deferred:
            parts.append(f"{len(self.deferred)} deferred")
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        if self.failed_waiting:
            parts.append(f"{self.failed_waiting} failed waiting for retry or dismiss")
        if self.archive_error:
            parts.append("archive not written")
        if self.report_html_error:
            parts.append("HTML report not written")
        state = "ok" if self.problem() is None else "with problems"
        return f"{what} {state}: " + ", ".join(parts) + f", {moved}"


def report_lines(report: Report, *, would: bool) -> list[str]:
    """What a run found, for a person: ``--dry-run`` (``would``) and the demo print these lines."""
    if report.initialised:
        verb = "would start" if would else "started"
        return [
            f"first run: {verb} after OpenREM study pk {report.watermark_after}; "
            "earlier studies are not notified (use 'ctpoller backfill' for history)"
        ]
    lines = []
    for message in report.messages:
        first = message.notifications[0]
        where = first.display_name or first.station_name or "unknown station"
        kind = "update" if any(n.previous_value is not None for n in message.notifications) else "notify"
        lines.append(
            f"{'would ' if would else ''}{kind} {', '.join(message.recipients) or '(no recipients)'}: "
            f"{first.description or 'no description'} at {where}, {first.study_date or 'no date'}, "
            f"study {message.study_uid}"
        )
        for n in message.notifications:
            rose = f" (rose from {format_decimal(n.previous_value)})" if n.previous_value is not None else ""
            lines.append(
                f"  {n.rule}: {n.metric_label} {format_decimal(n.value)} {n.unit} > limit {format_decimal(n.limit)}"
                f"{rose}; protocol {n.protocol or '-'}"
            )
    if report.created > len(report.messages):
        lines.append(f"... and {report.created - len(report.messages)} more exams")
    lines.extend(f"waiting: OpenREM study pk {pk}: {why}" for pk, why in report.waiting)
    if not report.messages and not report.waiting:
        lines.append("nothing to notify")
    return lines
