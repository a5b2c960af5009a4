"""Where ctpoller starts and when it must stop: the first run, reset, a first run's late window,
and an OpenREM restored from a backup.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from ctpoller.core import settle
from ctpoller.core.model import (
    Snapshot,
    StudyHead,
    Tracked,
)
from ctpoller.core.settle import Timing
from ctpoller.errors import SourceError
from ctpoller.jobs.report import Report
from ctpoller.openrem.reads import Reads
from ctpoller.openrem.source import OpenremSource
from ctpoller.store.store import StateStore
from ctpoller.store.tables import LATE_WINDOW, OPENREM_BEHIND, OPENREM_RESTORED

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LateWindow:
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


def open_late_window(state: StateStore, start: int, snapshot: Snapshot, *, now: datetime, timing: Timing) -> None:
    """After a first run or a reset that saw transactions running on OpenREM (see ``LateWindow``)."""
    if snapshot.xmin is not None and snapshot.xmax is not None and snapshot.xmin < snapshot.xmax:
        floor = max(start - timing.batch_size, 0)
        state.set_meta({LATE_WINDOW: f"{floor} {snapshot.xmax} {now.isoformat()}"})


def late_window(state: StateStore) -> LateWindow | None:
    value = state.get_meta(LATE_WINDOW)
    if not value:
        return None
    floor, xmax, started = value.split()
    return LateWindow(int(floor), int(xmax), datetime.fromisoformat(started))


def first_run(
    report: Report, source: OpenremSource, state: StateStore, *, now: datetime, timing: Timing, dry_run: bool
) -> None:
    """Record where OpenREM ends: below any study still being written, whose rows are tracked."""
    with source.reading("finding the current end") as reads:
        snapshot = reads.snapshot()
        start, above = reads.first_watermark(timing.batch_size)
        history = reads.history(start) if not dry_run else []
    tracked = settle.first_seen(above, now=now, snapshot=snapshot)
    report.initialised = True
    report.watermark_after = start
    report.waiting = [(t.pk, "still being written when ctpoller started") for t in tracked if t.status == "pending"]
    if not dry_run and state.initialise(start, now, history, tracked):
        open_late_window(state, start, snapshot, now=now, timing=timing)
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
    with source.reading("finding the current end") as reads:
        snapshot = reads.snapshot()
        start, above = reads.first_watermark(timing.batch_size)
        if seen is not None and int(seen) < start:
            start, above = int(seen), []
            newer = "the study rows OpenREM imported since it was restored are evaluated by the next run"
        else:
            newer = "earlier studies are not notified"
        history = reads.history(start) if not dry_run else []
    if not dry_run:
        with state.lock():
            state.reset(start, now, history, settle.first_seen(above, now=now, snapshot=snapshot))
            open_late_window(state, start, snapshot, now=now, timing=timing)
    return before, start, newer


def check_not_behind(reads: Reads, state: StateStore, watermark: int, *, dry_run: bool) -> None:
    """Refuse to go on once OpenREM has been restored from a backup or replaced; never miss a study.

    New studies there would get pks ctpoller has passed already and would never be read. When
    OpenREM's newest pk is below the watermark, the newest studies were deleted or OpenREM was
    restored. A primary's study sequence tells which; elsewhere (a hot standby) ctpoller goes on
    and watches the pks in between: the first new study among them proves a restore. A proven
    restore stops every run until ``ctpoller reset``.
    """
    restored = state.get_meta(OPENREM_RESTORED)
    if restored is not None:
        raise _restored(reads.source, int(restored), watermark)
    behind = state.get_meta(OPENREM_BEHIND)
    end = reads.max_study_pk()
    if behind is not None:
        if reads.any_study_between(int(behind), watermark):
            if not dry_run:
                state.set_meta({OPENREM_RESTORED: behind})
            raise _restored(reads.source, int(behind), watermark)
        if end > watermark:
            log.info(
                "OpenREM's new studies get pks above the watermark %d: its newest studies had been deleted", watermark
            )
            if not dry_run:
                state.set_meta({OPENREM_BEHIND: None})
        return
    if end >= watermark:
        return
    proof = reads.sequence_past(watermark)
    if proof:
        return  # the newest studies were deleted; new ones still get higher pks
    if proof is False:
        if not dry_run:
            state.set_meta({OPENREM_RESTORED: str(end)})
        raise _restored(reads.source, end, watermark)
    log.warning(
        "OpenREM database %s: its newest study pk %d is below ctpoller's watermark %d: the newest studies were "
        "deleted, or OpenREM was restored from a backup, which cannot be told here (a hot standby, or a study "
        "sequence this role may not read); ctpoller goes on and stops for good if a new study gets a pk at or "
        "below %d",
        reads.source.where,
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
