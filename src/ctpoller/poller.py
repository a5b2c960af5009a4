"""One poll cycle, and backfill: read -> settle -> evaluate -> record -> deliver -> archive.

Collaborators are passed in; nothing here knows SQL, SMTP or a clock. The order is the promise:
decisions, the outbox and the watermark are committed together before anything is sent, a message
is marked sent only after it was accepted, and the archive is rebuilt from the state store.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ctpoller import settle
from ctpoller.errors import ConfigError, CtpollerError, NotifyError, SourceError
from ctpoller.model import (
    ArchiveRow,
    Exam,
    Exceedance,
    Ledger,
    Message,
    Notification,
    Screened,
    Snapshot,
    StudyHead,
    StudyRow,
    Tracked,
    events_key,
    rule_identity,
)
from ctpoller.notify.base import Notifier
from ctpoller.rules import RuleSet, Screen, evaluate, screen
from ctpoller.source import OpenremSource
from ctpoller.state import LATE_WINDOW, OPENREM_BEHIND, OPENREM_RESTORED, CycleWrite, NewMessage, StateStore

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)


KEPT_MESSAGES = 1000


class Archive(Protocol):
    def write(self, rows: Iterator[ArchiveRow]) -> int: ...

    def exists(self) -> bool: ...


class _Store(Protocol):
    """What backfill asks of the state store: an exam's rows decided before, the ledger, and writes."""

    def decided_pks(self, uids: Iterable[str]) -> dict[str, list[int]]: ...

    def ledger(self, exam_keys: Iterable[str], event_keys: Iterable[str] = ()) -> Ledger: ...

    def initialise(self, watermark: int, now: datetime, history: Sequence[tuple[int, str]] = ()) -> bool: ...

    def commit_cycle(self, write: CycleWrite, now: datetime) -> None: ...


class _Unwritten:
    """The state store as a dry-run backfill would have left it so far, though it writes nothing.

    Later chunks then see an exam's rows decided in earlier ones (a continued report) and what was
    found there, exactly as a real backfill, which commits after each chunk, does. Its writes go to
    a scratch SQLite file (no journal, no fsync) in a temporary directory beside a SQLite state
    file, or else in the system's, removed at the end: disk, not memory, follows the history.
    """

    def __init__(self, state: StateStore) -> None:
        self.state = state
        beside = Path(state.url.database).parent if state.is_sqlite and state.url.database else None
        try:
            self._directory = tempfile.TemporaryDirectory(prefix="ctpoller-dry-run-", dir=beside)
        except OSError:  # a state directory this user may only read: the system's
            self._directory = tempfile.TemporaryDirectory(prefix="ctpoller-dry-run-")
        path = Path(self._directory.name) / "dry-run.sqlite3"
        self.scratch = StateStore(f"sqlite:///{path}", durable=False)
        self.scratch.ensure_schema()

    def close(self) -> None:
        self.scratch.dispose()
        self._directory.cleanup()

    def initialise(self, watermark: int, now: datetime, history: Sequence[tuple[int, str]] = ()) -> bool:
        return self.scratch.initialise(watermark, now, history)

    def commit_cycle(self, write: CycleWrite, now: datetime) -> None:
        self.scratch.commit_cycle(write, now)

    def decided_pks(self, uids: Iterable[str]) -> dict[str, list[int]]:
        wanted = set(uids)
        result = self.state.decided_pks(wanted)
        for uid, pks in self.scratch.decided_pks(wanted).items():
            result[uid] = sorted({*result.get(uid, ()), *pks})
        return result

    def ledger(self, exam_keys: Iterable[str], event_keys: Iterable[str] = ()) -> Ledger:
        exams, events = set(exam_keys), set(event_keys)
        found = self.state.ledger(exams, events)
        found.update(self.scratch.ledger(exams, events))
        return found


@dataclass(frozen=True)
class Timing:
    settle: timedelta = timedelta(seconds=120)
    give_up: timedelta = timedelta(hours=6)
    batch_size: int = 500


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
    source_lag_seconds: float | None = None
    settings_problem: bool = False  # delivery stopped on the mail settings: a person must act
    failed_waiting: int = 0  # failed messages in the outbox, this run's and older, not retried nor dismissed

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
        if self.deferred:
            return NotifyError(f"{len(self.deferred)} notification(s) deferred to the next run", permanent=False)
        if self.archive_error:
            return NotifyError(self.archive_error, permanent=False)
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
        state = "ok" if self.problem() is None else "with problems"
        return f"{what} {state}: " + ", ".join(parts) + f", {moved}"


def run_once(
    source: OpenremSource,
    state: StateStore,
    rules: RuleSet,
    notifier: Notifier | None,
    archive: Archive | None,
    *,
    now: datetime,
    timing: Timing = Timing(),
    dry_run: bool = False,
    mail_domain: str = "ctpoller.invalid",
) -> Report:
    """One poll cycle. With ``dry_run`` nothing is written and nothing is sent.

    What is already in the outbox is delivered even when OpenREM cannot be read this time.
    """
    report = Report()
    try:
        _cycle(report, source, state, rules, now=now, timing=timing, dry_run=dry_run, mail_domain=mail_domain)
    except SourceError:
        if not dry_run:
            deliver(state, notifier, report, now=now)
            write_archive(state, archive, report)
        raise
    if not dry_run and not report.initialised:
        deliver(state, notifier, report, now=now)
        write_archive(state, archive, report)
    return report


def _cycle(
    report: Report,
    source: OpenremSource,
    state: StateStore,
    rules: RuleSet,
    *,
    now: datetime,
    timing: Timing,
    dry_run: bool,
    mail_domain: str,
) -> None:
    """Everything of one cycle that reads OpenREM; decisions are committed, nothing is sent."""
    source.connect()
    source.read_standard_names = rules.uses_standard_names
    if rules.uses_standard_names and not source.has_standard_names:
        raise ConfigError(
            f"the rules file uses standard_name, but the OpenREM database {source.where} "
            "has no standard-name tables (OpenREM 1.0 or later has them)"
        )
    watermark = state.watermark()
    report.watermark_before = report.watermark_after = watermark
    if watermark is None:
        _first_run(report, source, state, now=now, timing=timing, dry_run=dry_run)
        return

    window = _late_window(state)
    known = state.tracked_above(watermark if window is None else window.floor)
    with source.session("reading new studies") as conn:
        check_not_behind(source, conn, state, watermark, dry_run=dry_run)
        snapshot = source.snapshot(conn)
        report.source_lag_seconds = source.replica_lag_seconds(conn)
        if window is None:
            heads = _all_heads(source, conn, watermark, timing.batch_size)
        else:  # and rows the first run could not see yet: committed since, below its watermark
            heads, known = window.late(_all_heads(source, conn, window.floor, timing.batch_size), known, watermark)
        report.studies_seen = sum(1 for h in heads if h.pk not in known)
        plan = settle.plan(heads, known, now=now, settle=timing.settle, give_up=timing.give_up, snapshot=snapshot)
        for pk, why in plan.abandoned:
            log.warning("OpenREM study pk %d: %s", pk, why)
        for head, why in plan.forced:
            log.warning("OpenREM study pk %d: %s", head.pk, why)
        to_evaluate = plan.ready + [head for head, _ in plan.forced]
        messages, gone = _evaluate(
            source, conn, state, rules, to_evaluate, report, now=now, domain=mail_domain, chunk=timing.batch_size
        )
    settle.decide(plan, [h.pk for h in to_evaluate], now)
    new_watermark = settle.advance(
        watermark, plan, now=now, settle=timing.settle, give_up=timing.give_up, snapshot=snapshot
    )
    # Rows the watermark passes need no tracking unless they belong to an exam (decided).
    passed = [
        pk
        for pk, t in plan.tracked.items()
        if pk <= new_watermark and t.status in settle.FINAL and t.status not in settle.BELONGS_TO_AN_EXAM
    ]
    write = CycleWrite(
        upsert=[plan.tracked[pk] for pk in sorted(plan.changed) if pk not in passed],
        forget=sorted(set(plan.forget) | set(passed) | set(gone)),
        messages=messages,
        watermark_from=watermark,
        watermark_to=new_watermark,
    )
    report.waiting, report.abandoned, report.messages = plan.waiting, plan.abandoned, messages
    report.created = len(messages)
    report.watermark_after = new_watermark
    if not dry_run:
        state.commit_cycle(write, now)
        below = any(pk <= watermark and t.status not in settle.FINAL for pk, t in plan.tracked.items())
        if window is not None and not below and window.closed(snapshot, now, timing.give_up):
            state.set_meta({LATE_WINDOW: None})


@dataclass(frozen=True)
class _LateWindow:
    """The study pks just below a first run's watermark, watched until every transaction that was
    running at the first run has ended: a study row such a transaction inserted was invisible then,
    and is evaluated like any new row once it is committed."""

    floor: int
    xmax: int
    started: datetime

    def late(
        self, heads: list[StudyHead], known: dict[int, Tracked], watermark: int
    ) -> tuple[list[StudyHead], dict[int, Tracked]]:
        """The heads and tracking to plan with: above the watermark, and below it what the first run
        did not know or what is still pending (its remembered history stays as it is)."""

        def wanted(pk: int) -> bool:
            return pk > watermark or pk not in known or known[pk].status not in settle.FINAL

        return [h for h in heads if wanted(h.pk)], {pk: t for pk, t in known.items() if wanted(pk)}

    def closed(self, snapshot: Snapshot, now: datetime, give_up: timedelta) -> bool:
        return snapshot.xmin is None or snapshot.xmin >= self.xmax or now - self.started >= give_up


def _open_late_window(state: StateStore, start: int, snapshot: Snapshot, *, now: datetime, timing: Timing) -> None:
    """After a first run or a reset that saw transactions running on OpenREM (see ``_LateWindow``)."""
    if snapshot.xmin is not None and snapshot.xmax is not None and snapshot.xmin < snapshot.xmax:
        floor = max(start - timing.batch_size, 0)
        state.set_meta({LATE_WINDOW: f"{floor} {snapshot.xmax} {now.isoformat()}"})


def _late_window(state: StateStore) -> _LateWindow | None:
    value = state.get_meta(LATE_WINDOW)
    if not value:
        return None
    floor, xmax, started = value.split()
    return _LateWindow(int(floor), int(xmax), datetime.fromisoformat(started))


def _first_run(
    report: Report, source: OpenremSource, state: StateStore, *, now: datetime, timing: Timing, dry_run: bool
) -> None:
    """Record where OpenREM ends: below any study still being written, whose rows are tracked."""
    with source.session("finding the current end") as conn:
        snapshot = source.snapshot(conn)
        start, above = source.first_watermark(conn, timing.batch_size)
        history = source.history(conn, start) if not dry_run else []
    tracked = settle.first_seen(above, now=now, snapshot=snapshot)
    report.initialised = True
    report.watermark_after = start
    report.waiting = [(t.pk, "still being written when ctpoller started") for t in tracked if t.status == "pending"]
    if not dry_run and state.initialise(start, now, history, tracked):
        _open_late_window(state, start, snapshot, now=now, timing=timing)
        log.info(
            "first run: starting after OpenREM study pk %d; history is not notified (see backfill); "
            "%d earlier study rows remembered for reports that continue their exams; "
            "%d studies still being written are tracked",
            start,
            len(history),
            len(report.waiting),
        )


def start_over(
    source: OpenremSource, state: StateStore, *, now: datetime, timing: Timing, dry_run: bool
) -> tuple[int | None, int, str]:
    """``ctpoller reset``: (watermark before, watermark after, what happens to the rows in between).

    After a restore that a run has seen, it starts where OpenREM stood then, so that the studies
    imported since are evaluated by the next run; otherwise at OpenREM's current end, as a first run.
    """
    state.ensure_schema()
    before = state.watermark()
    seen = state.get_meta(OPENREM_RESTORED) or state.get_meta(OPENREM_BEHIND)
    with source.session("finding the current end") as conn:
        snapshot = source.snapshot(conn)
        start, above = source.first_watermark(conn, timing.batch_size)
        if seen is not None and int(seen) < start:
            start, above = int(seen), []
            newer = "the study rows OpenREM imported since it was restored are evaluated by the next run"
        else:
            newer = "earlier studies are not notified"
        history = source.history(conn, start) if not dry_run else []
    if not dry_run:
        with state.lock():
            state.reset(start, now, history, settle.first_seen(above, now=now, snapshot=snapshot))
            _open_late_window(state, start, snapshot, now=now, timing=timing)
    return before, start, newer


def check_not_behind(
    source: OpenremSource, conn: Connection, state: StateStore, watermark: int, *, dry_run: bool
) -> None:
    """Refuse to go on once OpenREM has been restored from a backup or replaced; never miss a study.

    New studies there would get pks ctpoller has passed already and would never be read. When
    OpenREM's newest pk is below the watermark, the newest studies were deleted or OpenREM was
    restored. A primary's study sequence tells which; elsewhere (a hot standby) ctpoller goes on
    and watches the pks in between: the first new study among them proves a restore. A proven
    restore stops every run until ``ctpoller reset``.
    """
    restored = state.get_meta(OPENREM_RESTORED)
    if restored is not None:
        raise _restored(source, int(restored), watermark)
    behind = state.get_meta(OPENREM_BEHIND)
    end = source.max_study_pk(conn)
    if behind is not None:
        if source.any_study_between(conn, int(behind), watermark):
            if not dry_run:
                state.set_meta({OPENREM_RESTORED: behind})
            raise _restored(source, int(behind), watermark)
        if end > watermark:
            log.info(
                "OpenREM's new studies get pks above the watermark %d: its newest studies had been deleted", watermark
            )
            if not dry_run:
                state.set_meta({OPENREM_BEHIND: None})
        return
    if end >= watermark:
        return
    proof = source.sequence_past(conn, watermark)
    if proof:
        return  # the newest studies were deleted; new ones still get higher pks
    if proof is False:
        if not dry_run:
            state.set_meta({OPENREM_RESTORED: str(end)})
        raise _restored(source, end, watermark)
    log.warning(
        "OpenREM database %s: its newest study pk %d is below ctpoller's watermark %d: the newest studies were "
        "deleted, or OpenREM was restored from a backup, which cannot be told here (a hot standby, or a study "
        "sequence this role may not read); ctpoller goes on and stops for good if a new study gets a pk at or "
        "below %d",
        source.where,
        end,
        watermark,
        watermark,
    )
    if not dry_run:
        state.set_meta({OPENREM_BEHIND: str(end)})


def _restored(source: OpenremSource, end: int, watermark: int) -> SourceError:
    return SourceError(
        f"OpenREM database {source.where}: it was restored from a backup or replaced (its newest study pk went "
        f"back to {end}, below ctpoller's watermark {watermark}); nothing was read or sent, and every run stops "
        "here until a person runs 'ctpoller reset --yes' (see README)",
        temporary=False,
    )


def backfill(
    source: OpenremSource,
    state: StateStore,
    rules: RuleSet,
    notifier: Notifier | None,
    archive: Archive | None,
    *,
    now: datetime,
    since: date | None,
    email: bool = True,
    dry_run: bool = False,
    timing: Timing = Timing(),
    mail_domain: str = "ctpoller.invalid",
    screened: bool = True,
) -> Report:
    """Evaluate complete CT studies at or below the watermark on purpose, de-duplicated by the ledger.

    Rows above the watermark are left to ``run``. With ``email=False`` what is found is recorded
    and archived as "recorded, not emailed", and never sent later.

    History is read in one pass, one line per study (``source.screened``): an exam of one row that
    the rules' screen shows cannot exceed anything is decided from that line; every other exam
    (several rows, a Dose Check or a limit within reach) is read in full and evaluated exactly as
    ``run`` does. ``screened=False`` reads every exam in full (the same result, slower).

    Each chunk is committed before the next is read, so the rows of an exam in a later chunk meet
    its rows decided before; a dry run, which writes nothing, keeps the same in a scratch store.
    """
    report = Report()
    source.connect()
    source.read_standard_names = rules.uses_standard_names
    unwritten = _Unwritten(state) if dry_run else None
    store: _Store = state if unwritten is None else unwritten
    try:
        watermark = state.watermark()
        if watermark is None:  # as a first run, but what is complete above the start is left to run
            with source.session("finding the current end") as conn:
                watermark, _ = source.first_watermark(conn, timing.batch_size)
                history = source.history(conn, watermark)
            store.initialise(watermark, now, history)
        report.watermark_before = report.watermark_after = watermark
        with source.session("reading history") as conn:  # for the exams read in full
            uses_protocols = any(rule.protocol or rule.not_protocol for rule in rules.rules)
            questions = screen(rules, source.distinct_protocols(conn) if uses_protocols else ())
            for chunk in source.screened(watermark, since, questions, chunk=BACKFILL_CHUNK):
                rows = [s for s in chunk if s.complete]
                report.studies_seen += len(rows)
                to_read = _to_read(store, questions, rows, screened)
                for s in rows:
                    if s.pk not in to_read:
                        report.exams_evaluated += 1
                        report.events_evaluated += s.n_events
                heads = [s.head() for s in rows if s.pk in to_read]
                report.exams_read += len({h.uid for h in heads})
                messages, gone = _evaluate(
                    source,
                    conn,
                    store,
                    rules,
                    heads,
                    report,
                    now=now,
                    domain=mail_domain,
                    status="pending" if email else "not_sent",
                    chunk=timing.batch_size,
                )
                report.created += len(messages)
                if len(report.messages) < KEPT_MESSAGES:  # enough to show; the rest are in the state store
                    report.messages.extend(messages)
                if rows or messages:
                    write = CycleWrite(decide=[(s.pk, s.uid) for s in rows], forget=gone, messages=messages)
                    store.commit_cycle(write, now)
    finally:
        if unwritten is not None:
            unwritten.close()
    if not dry_run:
        if email:
            deliver(state, notifier, report, now=now)
        write_archive(state, archive, report)
    return report


BACKFILL_CHUNK = 5000


def _to_read(state: _Store, questions: Screen, rows: Sequence[Screened], screened: bool) -> set[int]:
    """The pks whose exams must be read in full: all but the one-row exams the screen clears."""
    if not screened:
        return {s.pk for s in rows}
    by_uid: dict[str | None, list[Screened]] = {}
    for s in rows:
        by_uid.setdefault(s.uid, []).append(s)
    others = state.decided_pks(uid for uid in by_uid if uid)
    wanted: set[int] = set()
    for uid, group in by_uid.items():
        only = group[0]
        alone = len(group) == 1 and only.single and set(others.get(uid or "", ())) <= {only.pk}
        if alone and not questions.may_exceed(only):
            continue
        wanted.update(s.pk for s in group)
    return wanted


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
    """A failed message in a few words: its id, study date and why (no patient data)."""
    dates = sorted({n.study_date.isoformat() for n in message.notifications if n.study_date})
    when = dates[0] if dates else "unknown"
    error = (message.last_error or "no error recorded").splitlines()[0][:200]
    return f"id {message.id} (study date {when}, {message.attempts} attempts): {error}"


def write_archive(state: StateStore, archive: Archive | None, report: Report) -> None:
    """Rebuild the QA archive from the state store when anything in it changed."""
    if archive is None or (archive.exists() and not state.archive_due()):
        return
    generation = state.get_meta("archive_generation")
    try:
        report.archive_rows = archive.write(state.archive_rows())
    except NotifyError as e:
        report.archive_error = str(e)
        report.archive_needs_a_person = not e.temporary
        log.error("%s (nothing is lost: the next run that can write the archive rebuilds it)", e)
        return
    state.archive_written(generation)


def _all_heads(source: OpenremSource, conn: Connection, watermark: int, batch: int) -> list[StudyHead]:
    heads: list[StudyHead] = []
    after = watermark
    while True:
        page = source.heads_after(conn, after, batch)
        heads.extend(page)
        if len(page) < batch:
            return heads
        after = page[-1].pk


def _evaluate(
    source: OpenremSource,
    conn: Connection,
    state: _Store,
    rules: RuleSet,
    heads: Sequence[StudyHead],
    report: Report,
    *,
    now: datetime,
    domain: str,
    status: str = "pending",
    chunk: int = 500,
) -> tuple[list[NewMessage], list[int]]:
    """Evaluate the exams these rows belong to; return the messages to record and vanished pks.

    In chunks of about ``chunk`` rows (rows of one exam stay together), so that memory follows the
    chunk, not the backlog: only the messages, a small share of the exams, are kept.
    """
    messages: list[NewMessage] = []
    gone: list[int] = []
    told = Ledger()  # what this call decided to notify: a later chunk must not tell it again
    for batch in _exam_chunks(heads, chunk):
        found, vanished = _evaluate_chunk(
            source, conn, state, rules, batch, report, now=now, domain=domain, status=status, told=told
        )
        messages.extend(found)
        gone.extend(vanished)
    return messages, gone


def _exam_chunks(heads: Sequence[StudyHead], size: int) -> Iterator[list[StudyHead]]:
    """``heads`` in chunks of about ``size``, never splitting the rows of one exam."""
    groups: dict[str | None, list[StudyHead]] = {}
    for head in heads:
        groups.setdefault(head.uid, []).append(head)
    batch: list[StudyHead] = []
    for group in groups.values():
        batch.extend(group)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _evaluate_chunk(
    source: OpenremSource,
    conn: Connection,
    state: _Store,
    rules: RuleSet,
    heads: Sequence[StudyHead],
    report: Report,
    *,
    now: datetime,
    domain: str,
    status: str = "pending",
    told: Ledger | None = None,
) -> tuple[list[NewMessage], list[int]]:
    """Evaluate the exams of these rows; ``told`` holds (and gets) what this run already notified."""
    if not heads:
        return [], []
    told = Ledger() if told is None else told
    uids = {h.uid for h in heads if h.uid}
    others = state.decided_pks(uids)
    wanted = {h.pk for h in heads} | {pk for pks in others.values() for pk in pks}
    rows = source.study_rows(conn, sorted(wanted))
    gone = sorted(pk for pk in wanted if pk not in rows)
    by_uid: dict[str, list[StudyRow]] = {}
    for head in heads:
        if head.uid and head.pk in rows:
            by_uid.setdefault(head.uid, [])
    for pk in sorted(rows):
        uid = next((h.uid for h in heads if h.pk == pk), None) if rows[pk].uid is None else rows[pk].uid
        if uid in by_uid:
            by_uid[uid].append(rows[pk])
    evaluated: list[tuple[Exam, str | None, list[Exceedance]]] = []
    for uid, exam_rows in by_uid.items():
        exam = Exam(uid=uid, rows=tuple(exam_rows))
        report.exams_evaluated += 1
        report.events_evaluated += len(exam.events)
        found = evaluate(exam, rules)
        report.exceedances += len(found)
        evaluated.append((exam, events_key(e.key for e in exam.events) if found else None, found))
    # Only what exceeded is looked up: the exams, each also by its events, and the irradiation
    # event UIDs under any exam (the same report stored again under another Study Instance UID).
    ledger = state.ledger(
        [key for exam, by_events, _ in evaluated for key in (exam.uid, by_events) if key is not None],
        {x.event_key for _, _, found in evaluated for x in found if x.event_key},
    )
    ledger.update(told)
    messages: list[NewMessage] = []
    for exam, by_events, found in evaluated:
        notifications, recipients = _news(exam, by_events, found, ledger)
        for n in notifications:  # an exam later in this run finds them
            for ledger_of in (ledger, told):
                ledger_of.add(exam.uid, n.rule, n.metric, n.event_key, n.value)
                if by_events is not None and not n.event_key:
                    ledger_of.add(by_events, n.rule, n.metric, "", n.value)
        if notifications:
            messages.append(
                NewMessage(
                    message_id=message_id(exam.uid, notifications, domain),
                    study_uid=exam.uid,
                    recipients=recipients,
                    notifications=tuple(notifications),
                    status="pending" if status == "pending" else "not_sent",
                    events_key=by_events,
                )
            )
    return messages, gone


def _news(
    exam: Exam, by_events: str | None, found: Sequence[Exceedance], ledger: Ledger
) -> tuple[list[Notification], tuple[str, ...]]:
    """Exceedances never notified, or whose value rose since: the ones to tell people about.

    Never notified means: not in this exam for the same rule (by ``model.rule_identity``) and
    metric; for an event with an irradiation event UID, not for that event under any Study
    Instance UID; for an exam-level metric, not in an exam with exactly the same irradiation
    events (``by_events``, the exam's ``model.events_key``) either.
    """
    news: list[Notification] = []
    recipients: list[str] = []
    for x in found:
        previous = ledger.previous(exam.uid, by_events, x)
        if previous is not None and x.value <= previous:
            continue
        row = _row_of(exam, x.event_key)
        news.append(
            Notification(
                study_uid=exam.uid,
                rule=x.rule,
                metric=x.metric,
                event_key=x.event_key,
                value=x.value,
                limit=x.limit,
                unit=x.unit,
                previous_value=previous,
                protocol=x.protocol,
                station_name=row.station_name,
                display_name=row.display_name,
                study_date=row.study_date,
                study_time=row.study_time,
                description=row.description,
                accession_number=row.accession_number,
            )
        )
        for address in x.recipients:
            if address.casefold() not in (r.casefold() for r in recipients):
                recipients.append(address)
    return news, tuple(recipients)


def _row_of(exam: Exam, event_key: str) -> StudyRow:
    event = exam.event(event_key) if event_key else None
    if event is not None:
        for row in exam.rows:
            if row.pk == event.study_pk:
                return row
    return exam.first


def message_id(uid: str, notifications: Sequence[Notification], domain: str) -> str:
    """A Message-ID fixed by what the message says, so the same news always has the same id."""
    content = "\n".join(
        [
            uid,
            *sorted(f"{rule_identity(n.rule)}|{n.metric}|{n.event_key}|{n.value.normalize()}" for n in notifications),
        ]
    )
    digest = hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"<{digest}@{domain}>"
