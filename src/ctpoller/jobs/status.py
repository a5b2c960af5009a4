"""``ctpoller status``: the watermark, what waits and why, the outbox, the last runs. Reads only."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from ctpoller.core.model import Tracked
from ctpoller.errors import CtpollerError
from ctpoller.jobs.check import Parts
from ctpoller.jobs.deliver import failed_line
from ctpoller.jobs.heartbeat import status_lines as heartbeat_lines
from ctpoller.store.store import StateStore
from ctpoller.store.tables import LATE_WINDOW, OPENREM_BEHIND, OPENREM_RESTORED


def status_lines(parts: Parts, *, now: datetime) -> Iterator[str]:
    """What ``ctpoller status`` prints. Reads only; OpenREM is asked only if it is configured."""
    state = parts.state()
    try:
        yield f"state store: {state.where}"
        if not state.exists():
            yield "watermark: not started (the first 'ctpoller run' starts at OpenREM's current end)"
            return
        watermark = state.watermark()
        if watermark is None:
            yield "watermark: not started (the first 'ctpoller run' starts at OpenREM's current end)"
            return
        yield f"watermark: OpenREM study pk {watermark}"
        yield from _restore_lines(state, watermark)
        for key in ("last_run_at", "last_success_at", "last_error"):
            value = state.get_meta(key)
            if value:
                yield f"{key.replace('_', ' ')}: {value}"
        problem = state.get_meta("archive_problem")
        if problem:
            yield f"archive: PROBLEM {problem}"
        counts = state.outbox_counts()
        outbox = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        yield f"outbox: {outbox or 'empty'} (pending = waiting to be sent; failed = refused, see below)"
        failed = state.messages_with_status("failed")
        if failed:
            yield (
                f"failed: {len(failed)} notifications refused permanently wait for a person: "
                "'ctpoller retry ID' sends one again, 'ctpoller dismiss ID --reason TEXT' stops the warnings"
            )
            for message in failed:
                yield f"  {failed_line(message)}"
        yield from heartbeat_lines(state, parts.heartbeat().policy, now)
        tracked = state.tracked_above(watermark)
        if parts.settings.source_url is None:
            waiting = [t for t in tracked.values() if t.status == "pending"]
            yield f"studies above the watermark: {len(tracked)} ({len(waiting)} not yet decided)"
            return
        yield from _source_status(parts, watermark, tracked, now)
    finally:
        state.dispose()


def _restore_lines(state: StateStore, watermark: int) -> Iterator[str]:
    restored, behind = state.get_meta(OPENREM_RESTORED), state.get_meta(OPENREM_BEHIND)
    if restored is not None:
        yield (
            f"STOPPED: OpenREM was restored from a backup or replaced (its newest study pk went back to {restored}, "
            f"below the watermark {watermark}); every run stops until 'ctpoller reset --yes' (see README)"
        )
    elif behind is not None:
        yield (
            f"warning: OpenREM's newest study pk went back to {behind}, below the watermark {watermark}: studies "
            "were deleted or OpenREM was restored; runs go on and stop if a new study gets a pk at or below it"
        )
    window = state.get_meta(LATE_WINDOW)
    if window:
        floor = window.split()[0]
        yield f"first run: study pks {floor}-{watermark} are watched for rows committed late (until the next run)"


def _source_status(parts: Parts, watermark: int, tracked: dict[int, Tracked], now: datetime) -> Iterator[str]:
    from ctpoller.core import settle

    source = parts.source()
    try:
        source.connect()
        with source.reading("reading the status") as reads:
            lag = reads.replica_lag_seconds()
            snapshot = reads.snapshot()
            heads = reads.heads_after(watermark, 10_000)
        plan = settle.plan(
            heads,
            tracked,
            now=now,
            settle=timedelta(seconds=parts.settings.settle_seconds),
            give_up=timedelta(seconds=parts.settings.give_up_seconds),
            snapshot=snapshot,
        )
        yield f"OpenREM database {source.where}: {len(heads)} study rows above the watermark"
        if lag is not None:
            yield f"replica lag: {lag:.1f} s"
        for pk, why in plan.waiting[:50]:
            yield f"  waiting: pk {pk}: {why}"
        if plan.ready:
            yield f"  ready for the next run: {len(plan.ready)} studies"
    except CtpollerError as e:
        yield f"OpenREM database: {e}"
    finally:
        source.dispose()
