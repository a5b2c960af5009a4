"""``ctpoller backfill``: history evaluated on purpose, in one screened pass, de-duplicated like run."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Protocol

from ctpoller.archive.base import Archive
from ctpoller.archive.html import HtmlReport
from ctpoller.core.model import (
    Ledger,
    Screened,
)
from ctpoller.core.rules import RuleSet, Screen, screen
from ctpoller.core.rules.window import Window
from ctpoller.core.settle import DEFAULT_TIMING, Timing
from ctpoller.jobs.cycle import connect_for
from ctpoller.jobs.deliver import deliver, write_archive
from ctpoller.jobs.news import ExamStore, evaluate_exams
from ctpoller.jobs.publish import write_report_html
from ctpoller.jobs.report import KEPT_MESSAGES, Report
from ctpoller.jobs.watch import Watcher, WindowStore
from ctpoller.mail.base import Notifier
from ctpoller.openrem.history import History
from ctpoller.openrem.source import OpenremSource
from ctpoller.store.store import CycleWrite, StateStore
from ctpoller.store.windows import WindowKey

log = logging.getLogger(__name__)


class BackfillStore(ExamStore, WindowStore, Protocol):
    """What backfill asks of the state store: an exam's rows decided before, the ledger, and writes."""

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

    # The trend and cumulative windows: a dry run's ``Watcher`` keeps every window it changed in memory
    # (it never forgets them), so only the state store's own are read; its writes go to the scratch.

    def windows(self, keys: Iterable[WindowKey]) -> dict[WindowKey, Window]:
        return self.state.windows(keys)

    def windows_holding(self, uids: Iterable[str]) -> set[WindowKey]:
        return self.state.windows_holding(uids)

    def patient_secret(self, *, create: bool) -> bytes | None:
        return self.state.patient_secret(create=False)


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
    timing: Timing = DEFAULT_TIMING,
    mail_domain: str = "ctpoller.invalid",
    screened: bool = True,
    report_html: HtmlReport | None = None,
) -> Report:
    """Evaluate complete CT studies at or below the watermark on purpose, de-duplicated by the ledger.

    Rows above the watermark are left to ``run``. With ``email=False`` what is found is recorded
    and archived as "recorded, not emailed", and never sent later.

    History is read in one pass, one line per study (``openrem.history.History.screened``): an exam of one row that
    the rules' screen shows cannot exceed anything is decided from that line; every other exam
    (several rows, a Dose Check or a limit within reach) is read in full and evaluated exactly as
    ``run`` does. ``screened=False`` reads every exam in full (the same result, slower).

    With a ``[[trend]]`` or ``[[cumulative]]`` every exam is read in full (the screen answers "may it
    exceed a limit?", but every exam of a trend's type moves its window): such a backfill costs what
    ``screened=False`` does, several times the screened one over a long history. The exams are
    folded into the windows in history (pk) order, chunk by chunk, each chunk's windows committed
    with its decisions; a dry run keeps the windows it changed in memory and writes them to its scratch.

    Each chunk is committed before the next is read, so the rows of an exam in a later chunk meet
    its rows decided before; a dry run, which writes nothing, keeps the same in a scratch store.
    """
    report = Report()
    connect_for(source, rules)
    unwritten = _Unwritten(state) if dry_run else None
    store: BackfillStore = state if unwritten is None else unwritten
    watcher = Watcher(store, rules, today=now.date(), dry_run=dry_run)
    screened = screened and not watcher  # every exam of a trend's type moves its window: read all
    try:
        watermark = state.watermark()
        if watermark is None:  # as a first run, but what is complete above the start is left to run
            with source.reading("finding the current end") as reads:
                watermark, _ = reads.first_watermark(timing.batch_size)
                history = reads.history(watermark)
            store.initialise(watermark, now, history)
        report.watermark_before = report.watermark_after = watermark
        with source.reading("reading history") as reads:  # for the exams read in full
            uses_protocols = any(rule.protocol or rule.not_protocol for rule in rules.rules)
            questions = screen(rules, reads.distinct_protocols() if uses_protocols else ())
            for chunk in History(source).screened(watermark, since, questions, chunk=BACKFILL_CHUNK):
                rows = [s for s in chunk if s.complete]
                report.studies_seen += len(rows)
                to_read = _to_read(store, questions, rows, screened)
                for s in rows:
                    if s.pk not in to_read:
                        report.exams_evaluated += 1
                        report.events_evaluated += s.n_events
                heads = [s.head() for s in rows if s.pk in to_read]
                report.exams_read += len({h.uid for h in heads})
                messages, gone = evaluate_exams(
                    reads,
                    store,
                    rules,
                    heads,
                    report,
                    now=now,
                    domain=mail_domain,
                    status="pending" if email else "not_sent",
                    chunk=timing.batch_size,
                    watcher=watcher,
                )
                report.created += len(messages)
                report.fired.add(messages)  # every message recorded, for --stats
                if len(report.messages) < KEPT_MESSAGES:  # enough to show; the rest are in the state store
                    report.messages.extend(messages)
                if rows or messages:
                    decide = [(s.pk, s.uid) for s in rows]
                    write = CycleWrite(decide=decide, forget=gone, messages=messages, windows=watcher.flush())
                    store.commit_cycle(write, now)
                    if not dry_run:
                        watcher.forget()  # the store has them: memory follows the chunk
    finally:
        if unwritten is not None:
            unwritten.close()
    if not dry_run:
        if email:
            deliver(state, notifier, report, now=now)
        write_archive(state, archive, report, now=now)
        write_report_html(state, report_html, report, now=now)
    return report


BACKFILL_CHUNK = 5000


def _to_read(state: ExamStore, questions: Screen, rows: Sequence[Screened], screened: bool) -> set[int]:
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
