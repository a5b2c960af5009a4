"""The old script's approach (oldscript.py), measured as a whole process: the baseline ctpoller replaces."""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from bench import database
from bench.child import check, run_child
from bench.figures import Figure, Results

OLD_SCRIPT = Path(__file__).resolve().parent / "oldscript.py"


def old_script(
    url: str, column: str, results: Results, *, repeats: int = 3, say: Callable[[str], None] = print
) -> None:
    runs, details = [], []
    for _ in range(repeats):
        run = run_child([sys.executable, str(OLD_SCRIPT), database.libpq_url(url)])
        check(run, "old script")
        runs.append(run)
        details.append(json.loads(run.stdout.strip().splitlines()[-1]))
    results.add(
        Figure(
            "old.time",
            "old script: 90 days of events, one query + fetchall, process",
            "s",
            column,
            [r.seconds for r in runs],
        )
    )
    results.add(Figure("old.query", "  of which query + fetchall", "s", column, [d["seconds"] for d in details]))
    results.add(Figure("old.rows", "  event rows loaded", "rows", column, [float(details[0]["rows"])]))
    results.add(Figure("old.rss", "  peak RSS of the old script", "MB", column, [r.max_rss_mb for r in runs]))
    say(
        f"  {column}: old script {statistics.median(r.seconds for r in runs):.2f} s, "
        f"{details[0]['rows']} rows, {statistics.median(r.max_rss_mb for r in runs):.1f} MB"
    )
