"""Delivering the outbox exactly once, the warning about failed messages, and the QA archive."""

from __future__ import annotations

import logging
from datetime import datetime

from ctpoller.archive.base import Archive
from ctpoller.core.model import (
    Message,
)
from ctpoller.errors import CtpollerError, NotifyError
from ctpoller.jobs.report import Report
from ctpoller.mail.base import Notifier
from ctpoller.store.store import StateStore

log = logging.getLogger(__name__)


def deliver(state: StateStore, notifier: Notifier | None, report: Report, *, now: datetime) -> None:
    """Send every pending message, oldest first; each is marked sent right after it was accepted.

    A failure that concerns one message (a refused recipient, a 4xx to DATA) is recorded and the
    next message is tried; a failure of the server or of the mail settings stops delivery for this
    run, leaving the rest queued. Then, while failed messages wait for a person, a warning.
    """
    try:
        _deliver(state, notifier, report, now=now)
    finally:
        warn_failed(state, report)


def _deliver(state: StateStore, notifier: Notifier | None, report: Report, *, now: datetime) -> None:
    released = state.release_stale_claims(now)
    if released:
        log.warning(
            "%d notifications claimed by a run that died are queued again (they may arrive twice, "
            "with the same Message-ID)",
            released,
        )
    pending = state.pending_messages()
    if not pending:
        return
    if notifier is None:
        report.deferred.extend(m.message_id for m in pending)
        log.warning("%d notifications wait in the outbox: no delivery is configured", len(pending))
        return
    try:
        for index, message in enumerate(pending):
            state.assert_locked()
            if not state.claim(message, now):
                continue  # another run is sending it
            try:
                notifier.send(message)
            except NotifyError as e:
                state.mark_failed(message, now, str(e), permanent=e.permanent)
                if e.permanent:
                    report.failed.append(message.message_id)
                    log.error(
                        "notification %d %s (%d exceedances) failed and is not retried until a person runs "
                        "'ctpoller retry' (or 'ctpoller dismiss'): %s",
                        message.id,
                        message.message_id,
                        len(message.notifications),
                        e,
                    )
                    continue
                if e.scope == "message":
                    report.deferred.append(message.message_id)
                    log.error("notification %s deferred to the next run: %s", message.message_id, e)
                    continue
                report.deferred.extend(m.message_id for m in pending[index:])
                report.settings_problem = report.settings_problem or e.scope == "settings"
                log.error("delivery stopped, %d notifications wait for the next run: %s", len(pending) - index, e)
                break
            state.mark_sent(message, now)
            report.sent += 1
    finally:
        notifier.close()


def warn_failed(state: StateStore, report: Report) -> None:
    """One WARNING line while failed messages wait for a person: every run says so until they are
    retried or dismissed. Never fails the run over it (the state store may be what failed)."""
    try:
        failed = state.messages_with_status("failed")
    except CtpollerError:
        return
    report.failed_waiting = len(failed)
    if not failed:
        return
    shown = "; ".join(f"{failed_line(m)}" for m in failed[:5])
    more = f"; and {len(failed) - 5} more (see 'ctpoller status')" if len(failed) > 5 else ""
    log.warning(
        "%d notifications failed permanently and wait for 'ctpoller retry' or 'ctpoller dismiss': %s%s",
        len(failed),
        shown,
        more,
    )


def failed_line(message: Message) -> str:
    """A failed message in a few words: its id, whether it is an alert, study date and why (no patient data)."""
    dates = sorted({n.study_date.isoformat() for n in message.notifications if n.study_date})
    when = dates[0] if dates else "unknown"
    error = (message.last_error or "no error recorded").splitlines()[0][:200]
    alert = "an ALERT, " if any(n.severity == "alert" for n in message.notifications) else ""
    return f"id {message.id} ({alert}study date {when}, {message.attempts} attempts): {error}"


def write_archive(state: StateStore, archive: Archive | None, report: Report, *, now: datetime | None = None) -> None:
    """Read the reviews back from the QA archive and rewrite it when anything in it changed (``jobs.archive``)."""
    from ctpoller.jobs.archive import write_archive as update

    update(state, archive, report, now=now)
