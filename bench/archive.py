"""The QA archive at scale: an idle run's archive step against a run that adds one notification.

    .venv/bin/python bench/run.py --archive                  # 50,000 notifications over ten years
    .venv/bin/python bench/archive.py --notifications 5000   # the same, smaller

The notifications are recorded straight into a fresh SQLite state store with the store's own writer
(``commit_cycle`` with ``NewMessage``/``Notification`` objects, one cycle per recording day, spread
evenly over the years before ``END``), then the archive is written once (one workbook per year).
Then, in-process (``jobs.archive.write_archive`` as a run calls it), ``repeats`` times each, medians:

- idle: nothing changed since the last run (each year's workbook is only stat()ed);
- one more: one notification recorded in the current year, then the archive step (it reads back
  and rewrites that year's workbook only).

Target (issue 12): a run that adds one notification costs under 1 s more than an idle run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctpoller.archive.base import XlsxArchive
from ctpoller.core.model import Notification
from ctpoller.jobs.archive import write_archive
from ctpoller.jobs.report import Report
from ctpoller.store.notifications import NewMessage
from ctpoller.store.store import CycleWrite, StateStore

END = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
TARGET_SECONDS = 1.0
STATIONS = ("CT1 Main", "CT2 A&E", "CT3 Oncology", "CT4 Cardiac")
RULES = (("adult head", "ctdivol", "mGy", Decimal("60")), ("adult chest", "dlp_total", "mGy·cm", Decimal("600")))


@dataclass(frozen=True)
class ArchiveFigures:
    notifications: int
    years: int
    record_seconds: float  # recording them into the store (not a target)
    first_write_seconds: float  # writing every year's workbook once (not a target)
    idle: list[float]
    one_more: list[float]

    @property
    def difference(self) -> float:
        return statistics.median(self.one_more) - statistics.median(self.idle)

    def lines(self) -> list[str]:
        met = "met" if self.difference < TARGET_SECONDS else "NOT met"
        return [
            f"archive: {self.notifications:,} notifications over {self.years} years, one workbook per year",
            f"  recorded into the store in {self.record_seconds:.1f} s; every workbook written once in "
            f"{self.first_write_seconds:.1f} s",
            f"  idle run's archive step:        median {statistics.median(self.idle):.3f} s "
            f"(runs: {', '.join(f'{s:.3f}' for s in self.idle)})",
            f"  run adding one notification:    median {statistics.median(self.one_more):.3f} s "
            f"(runs: {', '.join(f'{s:.3f}' for s in self.one_more)})",
            f"  difference {self.difference:+.3f} s against the target < {TARGET_SECONDS:.0f} s more than idle: {met}",
        ]


def notification(number: int, when: datetime) -> Notification:
    rule, metric, unit, limit = RULES[number % len(RULES)]
    return Notification(
        study_uid=f"1.2.826.0.1.3680043.10.900.{number}",
        rule=rule,
        metric=metric,
        event_key=f"1.2.826.0.1.3680043.10.901.{number}" if metric == "ctdivol" else "",
        value=limit * Decimal("1.25") + Decimal(number % 97),
        limit=limit,
        unit=unit,
        protocol="Head routine 5mm" if metric == "ctdivol" else "Chest routine",
        station_name=f"CTAWP{number % len(STATIONS):05d}",
        display_name=STATIONS[number % len(STATIONS)],
        study_date=date(when.year, when.month, when.day),
        study_time=None,
        description="CT HEAD" if metric == "ctdivol" else "CT CHEST",
        accession_number=f"ACC{number:08d}",
    )


def message(number: int, when: datetime) -> NewMessage:
    told = notification(number, when)
    return NewMessage(
        message_id=f"<ctpoller.bench.{number}@hospital.example>",
        study_uid=told.study_uid,
        recipients=("physics@hospital.example",),
        notifications=(told,),
        status="sent",
    )


def record(state: StateStore, total: int, years: int) -> None:
    """``total`` notifications, one cycle per recording day, evenly over the ``years`` years before ``END``."""
    days = years * 365
    start = END - timedelta(days=days)
    by_day: dict[int, list[int]] = {}
    for number in range(total):
        by_day.setdefault(number * days // total, []).append(number)
    for day, numbers in sorted(by_day.items()):
        when = start + timedelta(days=day)
        state.commit_cycle(CycleWrite(messages=[message(number, when) for number in numbers]), when)


def timed(state: StateStore, archive: XlsxArchive, now: datetime) -> float:
    report = Report()
    started = time.perf_counter()
    write_archive(state, archive, report, now=now)
    seconds = time.perf_counter() - started
    if report.archive_error:
        raise RuntimeError(report.archive_error)
    return seconds


def measure(notifications: int = 50_000, years: int = 10, repeats: int = 5, tmp: Path | None = None) -> ArchiveFigures:
    with tempfile.TemporaryDirectory(prefix="ctpoller-bench-archive-") as scratch:
        directory = tmp or Path(scratch)
        state = StateStore(f"sqlite:///{directory / 'state.sqlite3'}")
        try:
            state.ensure_schema()
            archive = XlsxArchive(directory / "ctpoller-notifications.xlsx")
            started = time.perf_counter()
            record(state, notifications, years)
            recorded = time.perf_counter() - started
            now = END
            first = timed(state, archive, now)
            idle, one_more = [], []
            for repeat in range(repeats):
                now += timedelta(minutes=1)
                idle.append(timed(state, archive, now))
                now += timedelta(minutes=1)
                number = notifications + repeat
                state.commit_cycle(CycleWrite(messages=[message(number, now)]), now)  # the cycle's own work
                one_more.append(timed(state, archive, now))
        finally:
            state.dispose()
    return ArchiveFigures(notifications, years, recorded, first, idle, one_more)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--notifications", type=int, default=50_000, help="how many (default 50,000)")
    parser.add_argument("--years", type=int, default=10, help="over how many years (default 10)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure (default 5)")
    args = parser.parse_args(argv)
    figures = measure(args.notifications, args.years, args.repeats)
    print("\n".join(figures.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
