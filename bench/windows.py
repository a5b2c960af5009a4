"""A cycle's cost with ``[[trend]]`` and ``[[cumulative]]`` rules follows the new exams, not the windows kept.

The in-process cycle of ``bench.cycles`` (a real OpenremSource on the bench database, a fresh SQLite
state store, the .eml notifier and the archive, a virtual clock) with the example rules plus three
trends and a cumulative, and a state store that already holds ``stored`` window rows (the windows of
the bench stations, full, and as many more of other stations and patients as it takes): the
evaluating cycle of the same ``n_new`` new exams is timed with 10,000 and with 100,000 rows kept.

    python -m bench.windows --url postgresql://postgres@127.0.0.1:5432/ctpoller_bench_s

or, from ``bench/run.py``: ``window_figures(url, column, results, source, repeats=..., say=say)``
(figures ``windows.eval.10000`` and ``windows.eval.100000``: the cycle; ``windows.part.*``: the part
of it spent reading, folding and writing the windows; ``windows.eval.base``: the same cycle with the
example rules alone; in seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import database, generate, parts
from bench.figures import Figure, Results
from ctpoller.core.model import rule_identity
from ctpoller.core.rules import RuleSet, parse_rules
from ctpoller.jobs.cycle import run_once
from ctpoller.jobs.watch import Watcher
from ctpoller.openrem.source import OpenremSource
from ctpoller.store.store import StateStore
from ctpoller.store.tables import window_exam_table
from ctpoller.store.windows import Windows

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
STORED = (10_000, 100_000)

WATCH_RULES = """
[[trend]]
name = "Bench trend: every exam's CTDIvol"
metric = "ctdivol"
drl = 15
exams = 20
above = 2

[[trend]]
name = "Bench trend: head exams"
study = "head"
metric = "dlp_total"
drl = 970
exams = 20
above = 2
armed_above = 3

[[trend]]
name = "Bench trend: chest, abdomen or pelvis"
study = ["re:chest|abdo|pelvis"]
metric = "dlp_total"
drl = 600
exams = 50
above = 1.5

[[cumulative]]
name = "Bench cumulative"
days = 365
dlp_total = 3000
exams = 5
"""


def watch_rules() -> RuleSet:
    """The example rules with the bench's trends and cumulative."""
    watch = parse_rules(WATCH_RULES, source="bench/windows.py")
    return replace(parts.load_rules(), trends=watch.trends, cumulatives=watch.cumulatives)


def prefill(state: StateStore, rules: RuleSet, stations: Sequence[str], newest: date, stored: int) -> int:
    """Fill the state store's windows with about ``stored`` rows: every bench station's window of every
    trend, full, then windows of made-up stations and two-exam windows of made-up patients."""
    rows: list[dict[str, Any]] = []
    day = newest - timedelta(days=300)  # within the cumulative's 365 days: nothing expires

    def window(watch: str, group: str, n: int) -> None:
        for k in range(n):
            order = (day + timedelta(days=k % 300)).isoformat()
            uid = f"2.25.{secrets.randbelow(10**30)}"
            rows.append({"watch": watch, "grp": group, "study_uid": uid, "order_key": order, "value": "10"})

    for trend in rules.trends:
        for station in stations:
            window(rule_identity(trend.name), station, trend.exams)
    n = 0
    while len(rows) < stored:
        n += 1
        for trend in rules.trends:
            window(rule_identity(trend.name), f"Other station {n}", trend.exams)
        for cumulative in rules.cumulatives:
            for _ in range(50):
                window(rule_identity(cumulative.name), secrets.token_hex(32), 2)
    with state.engine.begin() as conn:
        for start in range(0, len(rows), 10_000):
            conn.execute(sa.insert(window_exam_table), rows[start : start + 10_000])
    return len(rows)


def newest_study_date(url: str) -> date:
    with database.connect(url) as conn:
        found = conn.execute("SELECT max(study_date) FROM remapp_generalstudymoduleattr").fetchone()
    return found[0] if found and found[0] else date.today()


def stations_of(url: str) -> list[str]:
    with database.connect(url) as conn:
        found = conn.execute("SELECT DISTINCT display_name FROM remapp_uniqueequipmentnames").fetchall()
    return sorted(str(row[0]) for row in found if row[0])


def with_patient_ids(url: str, first: int, last: int) -> None:
    """Give the new exams patient IDs, 2 exams per patient (the generator, like OpenREM by default,
    stores none), so that the cumulative groups them."""
    with database.connect(url) as conn:
        conn.execute(
            "UPDATE remapp_patientmoduleattr SET patient_id = 'BENCH' || (general_study_module_attributes_id / 2) "
            "WHERE general_study_module_attributes_id BETWEEN %s AND %s",
            (first, last),
        )
        conn.commit()


@contextlib.contextmanager
def time_spent(spent: dict[str, float]) -> Iterator[None]:
    """Add up, in ``spent["windows"]``, the time the cycle spends on the windows: reading them and the
    patient keys, folding, and writing them (in the cycle's commit)."""
    wrapped = [(Watcher, "prepare"), (Watcher, "fold"), (Watcher, "flush"), (Windows, "_write_windows")]
    originals = [(owner, name, getattr(owner, name)) for owner, name in wrapped]

    def timed(function: Callable[..., Any]) -> Callable[..., Any]:
        def measured(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent["windows"] = spent.get("windows", 0.0) + time.perf_counter() - started

        return measured

    for owner, name, function in originals:
        setattr(owner, name, timed(function))
    try:
        yield
    finally:
        for owner, name, function in originals:
            setattr(owner, name, function)


def window_cycle(
    url: str, source: OpenremSource, rules: RuleSet, stored: int, n_new: int
) -> tuple[float, float, int, int, int]:
    """(seconds of the cycle evaluating ``n_new`` new exams, of them on the windows, window rows kept
    before, window rows of the new exams after, emails) with a state store that holds ``stored`` window rows."""
    marks = database.id_marks(url)
    with tempfile.TemporaryDirectory(prefix="ctp-bench-windows-") as name:
        tmp = Path(name)
        state = parts.state_store(tmp)
        archive = parts.archive(tmp)

        def cycle(now: datetime) -> Any:
            return run_once(source, state, rules, parts.notifier(tmp), archive, now=now, timing=parts.TIMING)

        try:
            state.ensure_schema()
            assert cycle(T0).initialised, "a fresh state store initialises on its first cycle"
            before = prefill(state, rules, stations_of(url), newest_study_date(url), stored)
            first, last = generate.add_exams(url, n_new)
            with_patient_ids(url, first, last)
            cycle(T0 + timedelta(seconds=60))
            spent: dict[str, float] = {}
            with time_spent(spent):
                started = time.perf_counter()
                evaluated = cycle(T0 + timedelta(seconds=60 + 121))
                seconds = time.perf_counter() - started
            if n_new and evaluated.exams_evaluated == 0:
                raise AssertionError(f"{n_new} new exams, none evaluated")
            with state.engine.connect() as conn:
                new_rows = sa.select(sa.func.count()).where(window_exam_table.c.study_uid.not_like("2.25.%"))
                after = int(conn.execute(new_rows).scalar_one())
            return seconds, spent.get("windows", 0.0), before, after, evaluated.created
        finally:
            state.dispose()
            database.delete_above(url, marks)


def window_figures(
    url: str,
    column: str,
    results: Results,
    source: OpenremSource,
    *,
    repeats: int = 3,
    n_new: int = 100,
    stored: Sequence[int] = STORED,
    say: Callable[[str], None] = lambda _m: None,
) -> list[Figure]:
    """The evaluating cycle of ``n_new`` new exams with trends and a cumulative, and the part of it
    spent on the windows, per number of window rows kept (the sizes taken in turn, so that a busy
    machine weighs on each alike)."""
    rules = watch_rules()
    cycles: dict[int, list[float]] = {rows: [] for rows in stored}
    parts_: dict[int, list[float]] = {rows: [] for rows in stored}
    base: list[float] = []
    for _ in range(repeats):
        seconds, _, _, _, emails = window_cycle(url, source, parts.load_rules(), 0, n_new)
        say(f"windows: the example rules alone, {n_new} new exams: {seconds:.3f} s ({emails} emails)")
        base.append(seconds)
        for rows in stored:
            seconds, on_windows, before, after, emails = window_cycle(url, source, rules, rows, n_new)
            say(
                f"windows: {before:,} rows kept, {n_new} new exams: {seconds:.3f} s, {on_windows:.3f} s of it "
                f"on the windows (then {after:,} rows of new exams; {emails} emails)"
            )
            cycles[rows].append(seconds)
            parts_[rows].append(on_windows)
    what = f"{n_new} new exams, the example rules alone (no trend, no cumulative)"
    figures = [results.add(Figure("windows.eval.base", f"in-process cycle, {what}", "s", column, base))]
    for rows in stored:
        what = f"{n_new} new exams, 3 trends + 1 cumulative, {rows:,} window rows kept"
        figures.append(
            results.add(Figure(f"windows.eval.{rows}", f"in-process cycle, {what}", "s", column, cycles[rows]))
        )
        figures.append(
            results.add(Figure(f"windows.part.{rows}", f"of it on the windows, {what}", "s", column, parts_[rows]))
        )
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", required=True, help="a bench database (bench/generate.py)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new", type=int, default=100, help="new exams per cycle (default 100)")
    args = parser.parse_args(argv)
    source = OpenremSource(parts.sqlalchemy_url(args.url))
    try:
        results = Results()
        say = lambda m: print(m, file=sys.stderr)  # noqa: E731
        figures = window_figures(args.url, "S", results, source, repeats=args.repeats, n_new=args.new, say=say)
    finally:
        source.dispose()
    for figure in figures:
        samples = ", ".join(f"{s:.3f}" for s in figure.samples)
        print(f"{figure.measure}: median {statistics.median(figure.samples):.3f} s ({samples})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
