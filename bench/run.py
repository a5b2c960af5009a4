"""ctpoller's performance benchmark. Prints one table of figures (medians) and which targets were met.

    .venv/bin/python bench/run.py --size S        # steady state, old script, EXPLAIN on ctp_bench_s
    .venv/bin/python bench/run.py --size L        # the same on ctp_bench_l (1.5 M studies)
    .venv/bin/python bench/run.py --size M        # backfill vs COPY, old script on ctp_bench_m
    .venv/bin/python bench/run.py --size all      # all three, then the table
    .venv/bin/python bench/run.py --report        # just print the table from bench/results.json
    .venv/bin/python bench/run.py --archive       # the QA archive: 50,000 notifications over ten years
    .venv/bin/python bench/run.py --windows       # trends and cumulative rules: 10k vs 100k window rows kept

A missing database is generated first (bench/generate.py); ``--regenerate`` rebuilds it, ``--drop``
drops it after measuring. Every run merges its figures into bench/results.json, so the table can
combine S, M and L measured at different times (the L/S ratio needs both). What is measured:

1. steady state on S and L, with 0, 100 and 1,000 new exams: the in-process cycle
   (``ctpoller.poller.run_once`` with a real OpenremSource on the bench database, a fresh SQLite
   StateStore, the .eml outbox notifier and the .xlsx archive in a temporary directory, a virtual
   clock): initialise at the end, add N exams, a first cycle at t ("seen": they wait to settle),
   then the measured cycle at t+121 s (evaluates them); and the whole process
   (``python -m ctpoller run`` with CTPOLLER_SETTLE_SECONDS=0: a first run that only initialises,
   then N exams, then the measured run, which evaluates them at once).
2. ``ctpoller backfill --since 1900-01-01 --no-email`` over M, against
   ``psql -c "COPY (<the same join>) TO STDOUT" > /dev/null`` on the same database.
3. peak RSS of every ctpoller process (``os.wait4``: that child's own ru_maxrss).
4. the old script's approach (bench/oldscript.py): 90 days of events in one query, all in memory.
5. EXPLAIN (ANALYZE, BUFFERS) of every statement ctpoller sent to OpenREM during the cycles with
   100 new exams (captured with a ``before_cursor_execute`` listener), with its real parameters.

The new exams are deleted again after each repeat, so every repeat sees the same database.

This module is the command line and says what each database is measured for; the measurements live
beside it: cycles.py (1, in-process), processes.py (1 and 3, whole processes and the start-up floor),
backfill.py (2), child.py (3, a child's wall time and peak RSS), baseline.py (4), explain.py (5),
parts.py (ctpoller's parts as the benchmark builds them), figures.py (the figures and results.json),
report.py (the table and the targets), machine.py (machine, load and code in results.json), and
archive.py (``--archive``: the workbooks per year, an idle run against one that adds a notification;
it needs no OpenREM database and prints its own figures), and windows.py (``--windows``: the cycle of
100 new exams with three trends and a cumulative rule, with 10,000 and 100,000 window rows kept in the
state store, against the same cycle without them; on S, printed on its own).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import database, generate, parts
from bench.backfill import backfill_vs_copy
from bench.baseline import old_script
from bench.cycles import NEWS, cycle_figures
from bench.explain import write_plans
from bench.figures import COLUMNS, Figure, Results
from bench.machine import code_version, load, machine
from bench.processes import BACKLOG, process_figures
from bench.report import table

BENCH = Path(__file__).resolve().parent
RESULTS_FILE = BENCH / "results.json"
DEFAULT_SERVER = database.DEFAULT_SERVER


# --- what each database is measured for ---------------------------------------------------------------


def steady_state(
    url: str,
    column: str,
    results: Results,
    *,
    repeats: int = 5,
    news: Sequence[int] = NEWS,
    explain_at: int | None = 100,
    backlog: int = BACKLOG,
    say: Callable[[str], None] = print,
) -> None:
    """Section 1 (+3 for the runs, +5 EXPLAIN) on one database; then one run with a backlog (RSS).

    One source stays open for the in-process cycles and closes after the whole-process runs.
    """
    rules = parts.load_rules()
    source = parts.openrem_source(url)
    source.connect()
    try:
        cycle_figures(url, column, results, source, rules, repeats=repeats, news=news, explain_at=explain_at, say=say)
        process_figures(url, column, results, repeats=repeats, news=news, backlog=backlog, say=say)
    finally:
        source.dispose()


# --- orchestration ------------------------------------------------------------------------------------------


def run_benchmark(
    urls: dict[str, str],
    results: Results,
    *,
    repeats: int = 5,
    repeats_slow: int = 3,
    news: Sequence[int] = NEWS,
    backlog: int = BACKLOG,
    say: Callable[[str], None] = print,
) -> Results:
    """Measure what each column's database is for: S and L steady state (+ old script, EXPLAIN); M backfill."""
    results.info.setdefault("machine", {}).update(machine())
    for column in ("S", "L"):
        if column in urls:
            url = urls[column]
            say(f"{column}: steady state ({load()})")
            steady_state(url, column, results, repeats=repeats, news=news, backlog=backlog, say=say)
            say(f"{column}: old script ({load()})")
            old_script(url, column, results, repeats=repeats_slow, say=say)
            results.info.setdefault("load", {})[column] = load()
            results.info.setdefault("code", {})[column] = code_version()
    if "M" in urls:
        say(f"M: backfill vs COPY ({load()})")
        backfill_vs_copy(urls["M"], "M", results, repeats=repeats_slow, say=say)
        say(f"M: old script ({load()})")
        old_script(urls["M"], "M", results, repeats=repeats_slow, say=say)
        results.info.setdefault("load", {})["M"] = load()
        results.info.setdefault("code", {})["M"] = code_version()
    return results


def ensure_database(server: str, size: str, results: Results, *, regenerate: bool, say: Callable[[str], None]) -> str:
    name = generate.bench_database_name(size)
    n = generate.size_of(size)
    url = database.database_url(server, name)
    present = False
    if not regenerate:
        with contextlib.suppress(Exception), database.connect(url) as conn:
            present = int(conn.execute(f"SELECT count(*) FROM {database.STUDY}").fetchone()[0]) == n  # type: ignore[index]
    if not present:
        say(f"{name}: generating {n:,} studies ({load()})")
        started = time.perf_counter()
        generate.create_database(server, name)
        timings = generate.generate(url, n)
        seconds = time.perf_counter() - started
        results.add(Figure("gen.time", "generate the database (generate.py)", "s", size, [seconds]))
        say(f"{name}: generated in {seconds:.0f} s ({timings})")
    with database.connect(url) as conn:
        size_bytes = int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])  # type: ignore[index]
        events = int(conn.execute(f"SELECT count(*) FROM {database.EVENT}").fetchone()[0])  # type: ignore[index]
    results.add(Figure("gen.studies", "studies (remapp_generalstudymoduleattr rows)", "rows", size, [float(n)]))
    results.add(Figure("gen.events", "irradiation events", "rows", size, [float(events)]))
    results.add(Figure("gen.size", "database size", "MB", size, [size_bytes / 1024 / 1024]))
    return url


def _windows(args: argparse.Namespace) -> int:
    """``--windows``: a cycle's cost with trends and a cumulative rule, by window rows kept (on S)."""
    from bench.windows import window_figures
    from ctpoller.openrem.source import OpenremSource

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    results = Results()
    results.load(args.results)
    url = ensure_database(args.server, "S", results, regenerate=args.regenerate, say=say)
    source = OpenremSource(parts.sqlalchemy_url(url))
    try:
        figures = window_figures(url, "S", results, source, repeats=args.repeats, say=say)
    finally:
        source.dispose()
    for figure in figures:
        print(f"{figure.measure}: median {statistics.median(figure.samples):.3f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size", choices=("S", "M", "L", "all"), help="which database(s) to measure")
    parser.add_argument("--server", default=DEFAULT_SERVER, help=f"server-level URL (default {DEFAULT_SERVER})")
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure (default 5)")
    parser.add_argument("--repeats-slow", type=int, default=3, help="runs of backfill, COPY, old script (default 3)")
    parser.add_argument("--regenerate", action="store_true", help="rebuild the databases first")
    parser.add_argument("--drop", action="store_true", help="drop the databases measured at the end")
    parser.add_argument(
        "--results", type=Path, default=RESULTS_FILE, help=f"merge figures into (default {RESULTS_FILE})"
    )
    parser.add_argument("--report", action="store_true", help="only print the table from --results")
    parser.add_argument("--archive", action="store_true", help="measure the QA archive (bench/archive.py) only")
    parser.add_argument(
        "--archive-notifications", type=int, default=50_000, help="notifications for --archive (default 50,000)"
    )
    parser.add_argument("--windows", action="store_true", help="measure trends and cumulative rules only")
    args = parser.parse_args(argv)
    if args.windows:
        return _windows(args)
    if args.archive:
        from bench.archive import measure

        print("\n".join(measure(args.archive_notifications, repeats=args.repeats).lines()))
        return 0
    results = Results()
    results.load(args.results)
    if args.report or not args.size:
        print(table(results))
        return 0
    sizes = list(COLUMNS) if args.size == "all" else [args.size]

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        for size in sizes:
            url = ensure_database(args.server, size, results, regenerate=args.regenerate, say=say)
            run_benchmark({size: url}, results, repeats=args.repeats, repeats_slow=args.repeats_slow, say=say)
            results.save(args.results)
            if args.drop:
                generate.drop_database(args.server, generate.bench_database_name(size))
    finally:
        results.save(args.results)
        write_plans(results, args.results.parent)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
