"""Whole ``python -m ctpoller run`` processes (with CTPOLLER_SETTLE_SECONDS=0: a first run that only
initialises, a second, then N exams and the measured run, which evaluates them at once), their peak
RSS, and the start-up floor beside them: a bare import of the libraries ctpoller is built on.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import database, generate
from bench.child import ChildRun, check, run_child, summary_counts
from bench.figures import Figure, Results, fmt_s
from bench.parts import ctpoller_env

BACKLOG = 20_000  # new exams in one run after an outage: RSS must not depend on it


#: What every ctpoller command must import: the floor under any ``ctpoller`` process on this machine.
LIBRARIES = (
    "import sqlalchemy, sqlalchemy.dialects.postgresql.psycopg, sqlalchemy.dialects.sqlite, psycopg, pydantic_settings"
)


def library_floor() -> ChildRun:
    """A bare ``python -c`` importing the libraries ctpoller is built on, and nothing of ctpoller."""
    run = run_child([sys.executable, "-c", LIBRARIES])
    check(run, "importing the libraries")
    return run


def compile_bytecode() -> None:
    """Write ctpoller's ``.pyc`` files, as ``pip install`` does for an installed package.

    The process figures measure a timer's run of an installed ctpoller. From a source checkout with
    ``PYTHONDONTWRITEBYTECODE`` set (some shells and CI images set it), every child would otherwise
    compile ctpoller's modules again, which an installed ctpoller never does.
    """
    import compileall

    import ctpoller

    compileall.compile_dir(str(Path(ctpoller.__file__).parent), quiet=1)


def process_cycle(url: str, n_new: int) -> tuple[ChildRun, ChildRun, ChildRun]:
    """``python -m ctpoller run`` three times on a fresh state: the first initialises, the second finds
    nothing new but writes the (empty) archive for the first time, as a second run always does, and the
    third, measured, finds ``n_new`` exams: with 0, the steady idle run of a timer."""
    marks = database.id_marks(url)
    with tempfile.TemporaryDirectory(prefix="ctp-bench-") as name:
        tmp = Path(name)
        env = ctpoller_env(url, tmp)
        try:
            init = run_child([sys.executable, "-m", "ctpoller", "run"], env=env, cwd=tmp)
            check(init, "first ctpoller run")
            second = run_child([sys.executable, "-m", "ctpoller", "run"], env=env, cwd=tmp)
            check(second, "second ctpoller run")
            generate.add_exams(url, n_new)
            run = run_child([sys.executable, "-m", "ctpoller", "run"], env=env, cwd=tmp)
            check(run, f"ctpoller run with {n_new} new exams")
            counts = summary_counts(run.stderr)
            if counts is None or counts[0] != n_new:
                raise AssertionError(f"ctpoller run with {n_new} new exams said: {run.stderr.strip()[-300:]}")
            return init, second, run
        finally:
            database.delete_above(url, marks)


def process_figures(
    url: str,
    column: str,
    results: Results,
    *,
    repeats: int,
    news: Sequence[int],
    backlog: int,
    say: Callable[[str], None],
) -> None:
    """The whole processes with 0, 100, 1,000 new exams (``news``); then one run with a backlog (RSS)."""
    compile_bytecode()
    init_runs: list[ChildRun] = []
    second_runs: list[ChildRun] = []
    floor_runs: list[ChildRun] = []
    for n in news:
        runs = []
        for _ in range(repeats):
            init, second, run = process_cycle(url, n)
            init_runs.append(init)
            second_runs.append(second)
            runs.append(run)
            if n == 0:  # interleaved with the idle runs, so that both see the same machine
                floor_runs.append(library_floor())
        key = "process.idle" if n == 0 else f"process.run.{n}"
        label = "`ctpoller run` process, nothing new" if n == 0 else f"`ctpoller run` process, {n:,} new exams"
        results.add(Figure(key, label, "s", column, [r.seconds for r in runs]))
        results.add(Figure(f"rss.{key}", "  peak RSS of that process", "MB", column, [r.max_rss_mb for r in runs]))
        if n == 0:
            results.add(
                Figure(
                    "process.floor",
                    "  a bare `python -c` importing SQLAlchemy, psycopg, pydantic-settings (no ctpoller)",
                    "s",
                    column,
                    [r.seconds for r in floor_runs],
                )
            )
        say(
            f"  {column}: process, {n} new: {fmt_s(statistics.median(r.seconds for r in runs))}, "
            f"{statistics.median(r.max_rss_mb for r in runs):.1f} MB"
        )
    if backlog:
        _, _, run = process_cycle(url, backlog)
        say(f"  {column}: process, backlog of {backlog} new exams: {fmt_s(run.seconds)}, {run.max_rss_mb:.1f} MB")
        results.add(
            Figure(
                "process.backlog",
                f"`ctpoller run` process, backlog of {backlog:,} new exams",
                "s",
                column,
                [run.seconds],
            )
        )
        results.add(Figure("rss.process.backlog", "  peak RSS of that process", "MB", column, [run.max_rss_mb]))
    results.add(
        Figure(
            "process.init",
            "`ctpoller run` process, first run (only initialises)",
            "s",
            column,
            [r.seconds for r in init_runs],
        )
    )
    results.add(
        Figure("rss.process.init", "  peak RSS of that process", "MB", column, [r.max_rss_mb for r in init_runs])
    )
    results.add(
        Figure(
            "process.second",
            "`ctpoller run` process, second run (nothing new; writes the empty archive once)",
            "s",
            column,
            [r.seconds for r in second_runs],
        )
    )
