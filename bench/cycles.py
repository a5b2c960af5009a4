"""In-process cycles: ``ctpoller.run_once`` with a real OpenremSource on the bench database, a fresh
SQLite state store, the .eml outbox notifier and the .xlsx archive in a temporary directory, and a
virtual clock. Initialise at the end, add N exams, a first cycle at t ("seen": they wait to settle),
then the measured cycle at t+121 s (evaluates them).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import database, generate, parts
from bench.explain import Captured, capture, explain_statements, record_plans
from bench.figures import Figure, Results, fmt_s
from ctpoller.core.rules import RuleSet
from ctpoller.jobs.cycle import run_once
from ctpoller.jobs.report import Report
from ctpoller.openrem.source import OpenremSource

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
NEWS = (0, 100, 1000)


@dataclass
class CycleSample:
    seen_seconds: float
    eval_seconds: float
    eval_sql_seconds: float
    seen: Report
    evaluated: Report
    statements: list[Captured]
    plans: list[dict[str, Any]] = field(default_factory=list)


def in_process_cycle(
    url: str, source: OpenremSource, rules: RuleSet, n_new: int, *, explain: bool = False
) -> CycleSample:
    """Initialise a fresh state at the end, add ``n_new`` exams, time the "seen" and the evaluating cycle."""
    marks = database.id_marks(url)
    with tempfile.TemporaryDirectory(prefix="ctp-bench-") as name:
        tmp = Path(name)
        state = parts.state_store(tmp)
        archive = parts.archive(tmp)

        def cycle(now: datetime) -> Report:
            notifier = parts.notifier(tmp)
            return run_once(source, state, rules, notifier, archive, now=now, timing=parts.TIMING)

        try:
            state.ensure_schema()
            with capture(source.engine) as statements:
                first = cycle(T0)  # initialises: its statements are EXPLAINed too
                assert first.initialised, "a fresh state store initialises on its first cycle"
                generate.add_exams(url, n_new)
                started = time.perf_counter()
                seen = cycle(T0 + timedelta(seconds=60))
                seen_seconds = time.perf_counter() - started
                mark = len(statements)
                started = time.perf_counter()
                evaluated = cycle(T0 + timedelta(seconds=60 + 121))
                eval_seconds = time.perf_counter() - started
            sample = CycleSample(
                seen_seconds,
                eval_seconds,
                sum(s.seconds for s in statements[mark:]),
                seen,
                evaluated,
                statements,
            )
            if seen.studies_seen != n_new or (n_new and not evaluated.exams_evaluated):
                raise AssertionError(
                    f"{n_new} new exams: the first cycle saw {seen.studies_seen}, the second evaluated "
                    f"{evaluated.exams_evaluated}"
                )
            if explain:
                sample.plans = explain_statements(url, statements)
            return sample
        finally:
            state.dispose()
            database.delete_above(url, marks)


def cycle_figures(
    url: str,
    column: str,
    results: Results,
    source: OpenremSource,
    rules: RuleSet,
    *,
    repeats: int,
    news: Sequence[int],
    explain_at: int | None,
    say: Callable[[str], None],
) -> None:
    """The in-process cycles with 0, 100, 1,000 new exams (``news``), and EXPLAIN at ``explain_at``."""
    for n in news:
        samples = []
        for r in range(repeats):
            samples.append(in_process_cycle(url, source, rules, n, explain=(explain_at == n and r == 0)))
        if n == 0:
            results.add(
                Figure("cycle.idle", "in-process cycle, nothing new", "s", column, [s.eval_seconds for s in samples])
            )
        else:
            results.add(
                Figure(
                    f"cycle.seen.{n}",
                    f"in-process cycle that first sees {n:,} new exams",
                    "s",
                    column,
                    [s.seen_seconds for s in samples],
                )
            )
            results.add(
                Figure(
                    f"cycle.eval.{n}",
                    f"in-process cycle evaluating {n:,} new exams",
                    "s",
                    column,
                    [s.eval_seconds for s in samples],
                )
            )
            results.add(
                Figure(
                    f"cycle.sql.{n}",
                    f"  of which OpenREM queries ({n:,} new)",
                    "s",
                    column,
                    [s.eval_sql_seconds for s in samples],
                )
            )
        say(
            f"  {column}: in-process, {n} new: seen {fmt_s(statistics.median(s.seen_seconds for s in samples))}, "
            f"evaluating {fmt_s(statistics.median(s.eval_seconds for s in samples))} "
            f"({samples[0].evaluated.exams_evaluated} exams, {samples[0].evaluated.exceedances} exceedances)"
        )
        for s in samples:
            if s.plans:
                record_plans(results, column, s.plans)
                say(
                    f"  {column}: EXPLAIN of {len(s.plans)} distinct statements: "
                    + ", ".join(f"{p['label']} {p['verdict']}" for p in s.plans)
                )
