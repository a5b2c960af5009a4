"""``ctpoller digest``: a summary for the physicists, once per period (an ISO week): the notifications
recorded since the last digest, and those still open (unreviewed) after CTPOLLER_REVIEW_DUE_DAYS, each
counted per station and rule, with the HTML report linked when there is one.

The period is claimed compare-and-set in the same transaction that queues the digest in the outbox,
so two hosts sharing a PostgreSQL store never both send it, and a crash after the record delivers it
once (here, or with the next run). Delivery holds the run lock; when a run holds it, the run delivers.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from pathlib import Path

from ctpoller.archive.items import notification_key
from ctpoller.core.model import ArchiveRow, Notice
from ctpoller.errors import ConfigError, LockedError
from ctpoller.jobs.check import Parts
from ctpoller.jobs.deliver import deliver
from ctpoller.jobs.report import Report
from ctpoller.mail.base import Notifier
from ctpoller.mail.render import format_decimal
from ctpoller.store.notices import NewNotice
from ctpoller.store.store import StateStore

log = logging.getLogger(__name__)

DIGEST = "digest"  # ctp_message.kind of a digest
LISTED = 25  # open notifications listed one by one; the rest are counted


@dataclass(frozen=True)
class Digest:
    """The digest's settings."""

    recipients: tuple[str, ...]
    due: timedelta  # CTPOLLER_REVIEW_DUE_DAYS
    zone: tzinfo
    report_html: str | None = None  # CTPOLLER_REPORT_HTML: a path or a URL
    domain: str = "ctpoller.invalid"


def period_of(now: datetime, zone: tzinfo) -> str:
    """The ISO week of ``now`` at the site, e.g. ``2026-W10``: one digest each."""
    year, week, _ = now.astimezone(zone).isocalendar()
    return f"{year}-W{week:02d}"


def send_digest(parts: Parts, *, now: datetime) -> tuple[str, Report]:
    """Record this period's digest once, then deliver it: a line saying what happened, and the report."""
    digest, notifier = parts.digest(), parts.notifier()
    if notifier is None:
        raise ConfigError("no delivery configured: set CTPOLLER_SMTP_HOST (or CTPOLLER_OUTBOX_DIR to write .eml files)")
    state = parts.state()
    try:
        state.ensure_schema()
        return record_and_deliver(state, notifier, digest, now=now)
    finally:
        state.dispose()


def record_and_deliver(state: StateStore, notifier: Notifier, digest: Digest, *, now: datetime) -> tuple[str, Report]:
    """Claim this period compare-and-set with the digest in the outbox, then deliver under the run lock."""
    report = Report()
    period = period_of(now, digest.zone)
    before, told = state.digest_told()
    if before is not None and before >= period:
        done = f"the digest for {period} was recorded before"
    else:
        newest, new = state.notifications_after(told)
        reviews = state.reviews()  # an outcome in the archive's review columns closes a notification
        open_rows = [
            row
            for row in state.open_notifications(now - digest.due)
            if not reviews.get(notification_key(row), {}).get("outcome")
        ]
        notice = _notice(period, new, open_rows, now, digest)
        if state.commit_digest(period, before, newest, notice, now):
            done = f"digest for {period}: {len(new)} new notifications, {len(open_rows)} open"
            if not digest.recipients:
                return (
                    f"{done}; no recipients (CTPOLLER_DIGEST_TO, CTPOLLER_MAIL_TO, the rules file): not emailed",
                    report,
                )
        else:
            done = f"the digest for {period} was recorded by another ctpoller first"
    try:  # what is queued (this digest, or one a crash left) is delivered now
        with state.lock():
            deliver(state, notifier, report, now=now)
    except LockedError:
        return f"{done}; queued: the ctpoller run holding the lock delivers it", report
    return f"{done}; {report.sent} emails sent", report


def _notice(
    period: str, new: Sequence[ArchiveRow], open_rows: Sequence[ArchiveRow], now: datetime, d: Digest
) -> NewNotice:
    days = d.due.days
    lines = [
        f"ctpoller digest for {period} ({now.astimezone(d.zone):%Y-%m-%d %H:%M %Z})",
        "",
        f"New notifications since the last digest: {len(new)}",
        *_counts(new),
        "",
        f"Open notifications (not marked reviewed) older than {days} days: {len(open_rows)}",
        *_counts(open_rows),
    ]
    if open_rows:
        lines += ["", f"Oldest open notifications{f' (the first {LISTED})' if len(open_rows) > LISTED else ''}:"]
        lines += [f"  {_line(row, d.zone)}" for row in open_rows[:LISTED]]
    report = _report_link(d.report_html)
    if report:
        lines += ["", report]
    lines += ["", "-- ", "ctpoller (one digest per week; the archive holds every notification)", ""]
    body = "\n".join(lines)
    subject = f"ctpoller digest {period}: {len(new)} new, {len(open_rows)} open older than {days} days"
    digest = hashlib.sha256(f"{period}\n{body}".encode()).hexdigest()[:16]
    message_id = f"<ctpoller.{DIGEST}.{period}.{digest}@{d.domain}>"
    return NewNotice(message_id, d.recipients, Notice(DIGEST, subject, body))


def _counts(rows: Iterable[ArchiveRow]) -> list[str]:
    counts = Counter((_station(row), row.notification.rule) for row in rows)
    return [f"  {station} / {rule}: {n}" for (station, rule), n in sorted(counts.items())]


def _station(row: ArchiveRow) -> str:
    n = row.notification
    return n.display_name or n.station_name or "(no station name)"


def _line(row: ArchiveRow, zone: tzinfo) -> str:
    n = row.notification
    alert = "[ALERT] " if n.severity == "alert" else ""
    return (
        f"recorded {row.created_at.astimezone(zone):%Y-%m-%d}, study date {n.study_date or 'unknown'}, "
        f"{_station(row)}, {alert}{n.rule}: {n.metric_label} {format_decimal(n.value)} > {format_decimal(n.limit)} "
        f"{n.unit}, accession {n.accession_number or '-'}"
    )


def _report_link(where: str | None) -> str | None:
    """The HTML report: a URL as it is, a path when the file exists."""
    if not where:
        return None
    if "://" in where:
        return f"The HTML report: {where}"
    path = Path(where)
    if path.is_file():
        return f"The HTML report: {path.resolve().as_uri()}"
    log.warning("CTPOLLER_REPORT_HTML: %s does not exist (yet); the digest does not link it", where)
    return None
