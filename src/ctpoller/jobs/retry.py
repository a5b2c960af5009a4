"""``ctpoller retry`` and ``dismiss``: failed notifications wait for a person, never fade."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from ctpoller.core.model import Message
from ctpoller.errors import ConfigError, exit_code
from ctpoller.jobs.check import Parts
from ctpoller.jobs.deliver import deliver, failed_line, warn_failed, write_archive
from ctpoller.jobs.report import Report
from ctpoller.store.store import StateStore

log = logging.getLogger(__name__)


def chosen_messages(
    state: StateStore, keys: Sequence[str], *, everything: bool, allowed: tuple[str, ...]
) -> list[Message]:
    """The messages named by id or Message-ID (each in an ``allowed`` status), or every failed one.

    Every key is checked before anything changes: one wrong key changes nothing (ConfigError).
    """
    if everything:
        return state.messages_with_status("failed")
    chosen: dict[int, Message] = {}
    for key in keys:
        message = state.find_message(key)
        if message is None:
            raise ConfigError(f"no notification with id or Message-ID {key!r}: see 'ctpoller status'")
        if message.status not in allowed:
            raise ConfigError(f"notification {message.id} is {message.status}, not {' or '.join(allowed)}")
        chosen[message.id] = message
    return list(chosen.values())


def retry_failed(
    parts: Parts, keys: Sequence[str], *, everything: bool, now: datetime, out: Callable[[str], None]
) -> Report | None:
    """``ctpoller retry``: queue the chosen failed messages again and deliver at once, holding the lock.

    Without keys and without ``everything`` only lists the failed messages (None: nothing done).
    """
    state = parts.state()
    try:
        if not state.exists():
            out("no failed notifications (the state store has not been created yet)")
            return None
        with state.lock():
            if not keys and not everything:
                _list_failed(state, out, "'ctpoller retry ID ...' or 'ctpoller retry --all' sends them again")
                return None
            chosen = chosen_messages(state, keys, everything=everything, allowed=("failed", "dismissed"))
            if not chosen:
                out("no failed notifications: nothing to retry")
                return None
            notifier = parts.notifier()
            if notifier is None:
                raise ConfigError("no delivery configured: set CTPOLLER_SMTP_HOST (or CTPOLLER_OUTBOX_DIR)")
            for message in chosen:
                if message.last_error and "delivered the message to the other recipients" in message.last_error:
                    out(
                        f"note: notification {message.id} reached some of its recipients before; it is sent "
                        "again to all of them, with the same Message-ID"
                    )
            queued = state.requeue([m.id for m in chosen], now)
            out(f"queued again: {queued} notifications (ids {', '.join(str(m.id) for m in chosen)})")
            report = Report()
            deliver(state, notifier, report, now=now)
            write_archive(state, parts.archive(), report, now=now)
            return report
    finally:
        state.dispose()


def dismiss_failed(
    parts: Parts,
    keys: Sequence[str],
    *,
    everything: bool,
    reason: str | None,
    now: datetime,
    out: Callable[[str], None],
) -> Report | None:
    """``ctpoller dismiss``: mark the chosen failed messages dismissed, with the reason; they stay
    in the archive and stop the warnings. Without keys and ``everything``: only lists them."""
    state = parts.state()
    try:
        if not state.exists():
            out("no failed notifications (the state store has not been created yet)")
            return None
        with state.lock():
            if not keys and not everything:
                _list_failed(state, out, "'ctpoller dismiss ID ... --reason TEXT' stops their warnings")
                return None
            if not reason or not reason.strip():
                raise ConfigError("dismiss needs --reason TEXT: it is kept in the archive with the notification")
            chosen = chosen_messages(state, keys, everything=everything, allowed=("failed",))
            if not chosen:
                out("no failed notifications: nothing to dismiss")
                return None
            done = state.dismiss([m.id for m in chosen], " ".join(reason.split()), now)
            out(f"dismissed: {done} notifications (ids {', '.join(str(m.id) for m in chosen)})")
            report = Report()
            write_archive(state, parts.archive(), report, now=now)
            warn_failed(state, report)
            return report
    finally:
        state.dispose()


def _list_failed(state: StateStore, out: Callable[[str], None], hint: str) -> None:
    failed = state.messages_with_status("failed")
    if not failed:
        out("no failed notifications")
        return
    out(f"{len(failed)} notifications failed permanently; nothing was changed: {hint}")
    for message in failed:
        out(f"  {failed_line(message)}")


def outbox_finish(report: Report, what: str) -> int:
    """Log what ``retry``/``dismiss`` did and return the exit code of its problem."""
    detail = f"{report.sent} emails sent, {len(report.failed)} refused again, {len(report.deferred)} deferred, "
    log.info("%s: %s%d failed waiting", what, detail if what == "retry" else "", report.failed_waiting)
    problem = report.problem()
    return 0 if problem is None else exit_code(problem)
