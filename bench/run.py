"""ctpoller's performance benchmark. Prints one table of figures (medians) and which targets were met.

    .venv/bin/python bench/run.py --size S        # steady state, old script, EXPLAIN on ctp_bench_s
    .venv/bin/python bench/run.py --size L        # the same on ctp_bench_l (1.5 M studies)
    .venv/bin/python bench/run.py --size M        # backfill vs COPY, old script on ctp_bench_m
    .venv/bin/python bench/run.py --size all      # all three, then the table
    .venv/bin/python bench/run.py --report        # just print the table from bench/results.json

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
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import database, generate
from ctpoller import poller
from ctpoller.notify.outbox import EmlDirectoryNotifier
from ctpoller.poller import Report, Timing
from ctpoller.rules import RuleSet, parse_rules
from ctpoller.source import OpenremSource
from ctpoller.state import StateStore
from ctpoller.wiring import XlsxArchive

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RULES_FILE = REPO / "examples" / "rules.toml"
RESULTS_FILE = BENCH / "results.json"
OLD_SCRIPT = BENCH / "oldscript.py"
DEFAULT_SERVER = database.DEFAULT_SERVER
MAIL_FROM = "ctpoller@bench.example"
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
TIMING = Timing(settle=timedelta(seconds=120), give_up=timedelta(hours=6), batch_size=500)
NEWS = (0, 100, 1000)
BACKLOG = 20_000  # new exams in one run after an outage: RSS must not depend on it
COLUMNS = ("S", "M", "L")

# The rows of the backfill-versus-COPY join: what source.study_rows/_events read, all at once.
COPY_JOIN = """
SELECT g.id, g.study_instance_uid, g.accession_number, g.study_date, g.study_time, g.study_description,
       g.requested_procedure_code_meaning, g.procedure_code_meaning, g.modality_type, g.total_dlp,
       g.number_of_events, ps.patient_age_decimal, ps.patient_age, eq.station_name, u.display_name,
       e.id, e.irradiation_event_uid, e.acquisition_protocol, e.mean_ctdivol, e.dlp, e.series_description,
       acq.code_value, acq.code_meaning, ph.code_value,
       dc.ctdivol_alert_value_configured, dc.ctdivol_alert_value, dc.dlp_alert_value_configured,
       dc.dlp_alert_value, dc.accumulated_ctdivol_forward_estimate, dc.accumulated_dlp_forward_estimate,
       dc.ctdivol_notification_value_configured, dc.ctdivol_notification_value,
       dc.dlp_notification_value_configured, dc.dlp_notification_value, dc.ctdivol_forward_estimate,
       dc.dlp_forward_estimate
FROM remapp_generalstudymoduleattr g
LEFT JOIN remapp_patientstudymoduleattr ps ON ps.general_study_module_attributes_id = g.id
LEFT JOIN remapp_generalequipmentmoduleattr eq ON eq.general_study_module_attributes_id = g.id
LEFT JOIN remapp_uniqueequipmentnames u ON u.id = eq.unique_equipment_name_id
JOIN remapp_ctradiationdose r ON r.general_study_module_attributes_id = g.id
JOIN remapp_ctirradiationeventdata e ON e.ct_radiation_dose_id = r.id
LEFT JOIN remapp_contextid acq ON acq.id = e.ct_acquisition_type_id
LEFT JOIN remapp_contextid ph ON ph.id = e.ctdiw_phantom_type_id
LEFT JOIN remapp_ctdosecheckdetails dc ON dc.ct_irradiation_event_data_id = e.id
WHERE g.modality_type = 'CT'
"""

BIG_TABLES = ("remapp_ctirradiationeventdata", "remapp_generalstudymoduleattr")

# --- figures ------------------------------------------------------------------------------------------


@dataclass
class Figure:
    """One measured value: the median of ``samples`` in one column (S, M or L)."""

    key: str
    measure: str
    unit: str
    column: str
    samples: list[float] = field(default_factory=list)
    text: str | None = None  # a verdict instead of a number
    note: str = ""

    @property
    def value(self) -> float | str:
        if self.text is not None:
            return self.text
        return statistics.median(self.samples)

    def as_json(self) -> dict[str, Any]:
        return {
            "measure": self.measure,
            "unit": self.unit,
            "samples": self.samples,
            "text": self.text,
            "note": self.note,
        }


class Results:
    """Figures by key and column, mergeable with a JSON file of earlier runs."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}  # key -> {"measure", "unit", "order", "cells": {column: ...}}
        self.info: dict[str, Any] = {}

    def add(self, figure: Figure) -> Figure:
        row = self.rows.setdefault(
            figure.key, {"measure": figure.measure, "unit": figure.unit, "order": _order(figure.key), "cells": {}}
        )
        row["measure"], row["unit"] = figure.measure, figure.unit
        row["cells"][figure.column] = figure.as_json() | {"measured_at": _stamp()}
        return figure

    def value(self, key: str, column: str) -> float | str | None:
        cell = self.rows.get(key, {}).get("cells", {}).get(column)
        if cell is None:
            return None
        if cell["text"] is not None:
            return str(cell["text"])
        return statistics.median(cell["samples"]) if cell["samples"] else None

    def runs(self, key: str, column: str) -> int | None:
        cell = self.rows.get(key, {}).get("cells", {}).get(column)
        return len(cell["samples"]) if cell and cell["text"] is None else None

    def load(self, path: Path) -> None:
        if path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))
            self.rows, self.info = data.get("rows", {}), data.get("info", {})

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"rows": self.rows, "info": self.info}, indent=1, default=str) + "\n")


def _stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


_ORDER = (
    "gen.studies",
    "gen.events",
    "gen.size",
    "gen.time",
    "cycle.idle",
    "cycle.seen.100",
    "cycle.eval.100",
    "cycle.sql.100",
    "cycle.seen.1000",
    "cycle.eval.1000",
    "cycle.sql.1000",
    "process.init",
    "rss.process.init",
    "process.second",
    "process.idle",
    "process.floor",
    "rss.process.idle",
    "process.run.100",
    "rss.process.run.100",
    "process.run.1000",
    "rss.process.run.1000",
    "process.backlog",
    "rss.process.backlog",
    "backfill.time",
    "backfill.exams",
    "backfill.read",
    "backfill.exceedances",
    "backfill.exams_per_s",
    "backfill.events_per_s",
    "rss.backfill",
    "copy.time",
    "copy.rows",
    "copy.rows_per_s",
    "ratio.backfill_copy",
    "old.time",
    "old.query",
    "old.rows",
    "old.rss",
)


def _order(key: str) -> int:
    """Table order: the listed keys as listed, anything else (the EXPLAIN verdicts) after them."""
    return _ORDER.index(key) if key in _ORDER else len(_ORDER)


# --- building ctpoller's parts --------------------------------------------------------------------------


def load_rules() -> RuleSet:
    return parse_rules(RULES_FILE.read_text(encoding="utf-8"), source=str(RULES_FILE))


def sqlalchemy_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return "postgresql+psycopg" + sep + rest if scheme in ("postgresql", "postgres") else url


def ctpoller_env(url: str, tmp: Path, *, settle: int = 0) -> dict[str, str]:
    """The environment of a ``python -m ctpoller`` child: no CTPOLLER_* of ours leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTPOLLER_") and k != "JOURNAL_STREAM"}
    env.update(
        CTPOLLER_SOURCE_URL=database.libpq_url(url),
        CTPOLLER_STATE_URL=f"sqlite:///{tmp / 'state.sqlite3'}",
        CTPOLLER_RULES_FILE=str(RULES_FILE),
        CTPOLLER_SETTLE_SECONDS=str(settle),
        CTPOLLER_OUTBOX_DIR=str(tmp / "outbox"),
        CTPOLLER_ARCHIVE_PATH=str(tmp / "archive.xlsx"),
        CTPOLLER_MAIL_FROM=MAIL_FROM,
    )
    return env


@dataclass
class ChildRun:
    returncode: int
    seconds: float
    max_rss_mb: float
    stdout: str
    stderr: str


TIME = shutil.which("time", path="/usr/bin:/bin")


def run_child(args: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> ChildRun:
    """Run a command; its wall time and its own peak RSS.

    The peak RSS comes from ``/usr/bin/time -f %M``. Without it, ``os.wait4`` gives the child's
    ru_maxrss, which on Linux is at least the RSS of this (forking) process, so only an upper bound.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile() as rss:
        command = [TIME, "-f", "%M", "-o", rss.name, *args] if TIME else list(args)
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        max_rss_kib = float(usage.ru_maxrss)
        if TIME:
            lines = [line for line in Path(rss.name).read_text().split() if line.isdigit()]
            if lines:
                max_rss_kib = float(lines[-1])
        out.seek(0)
        err.seek(0)
        return ChildRun(
            child.returncode,
            seconds,
            max_rss_kib / 1024,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


_SUMMARY = re.compile(
    r"(\d+) new study rows, (\d+) exams evaluated(?: \(\d+ read in full\))?, (\d+) events, (\d+) exceedances"
)
_READ_IN_FULL = re.compile(r"exams evaluated \((\d+) read in full\)")


def summary_counts(text: str) -> tuple[int, int, int, int] | None:
    found = _SUMMARY.findall(text)
    return tuple(int(x) for x in found[-1]) if found else None  # type: ignore[return-value]


# --- 1. steady state ------------------------------------------------------------------------------------


@dataclass
class Captured:
    statement: str
    parameters: Any
    seconds: float = 0.0


@contextlib.contextmanager
def capture(engine: sa.engine.Engine) -> Iterator[list[Captured]]:
    """Every statement sent through ``engine`` (with its parameters and time) while inside."""
    seen: list[Captured] = []

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        conn.info.setdefault("bench_started", []).append(time.perf_counter())
        seen.append(Captured(statement, parameters))

    def after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        started = conn.info["bench_started"].pop()
        seen[-1].seconds = time.perf_counter() - started

    sa.event.listen(engine, "before_cursor_execute", before)
    sa.event.listen(engine, "after_cursor_execute", after)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", before)
        sa.event.remove(engine, "after_cursor_execute", after)


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
        state = StateStore(f"sqlite:///{tmp / 'state.sqlite3'}")
        archive = XlsxArchive(tmp / "archive.xlsx")

        def cycle(now: datetime) -> Report:
            notifier = EmlDirectoryNotifier(tmp / "outbox", mail_from=MAIL_FROM)
            return poller.run_once(source, state, rules, notifier, archive, now=now, timing=TIMING)

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


#: What every ctpoller command must import: the floor under any ``ctpoller`` process on this machine.
LIBRARIES = (
    "import sqlalchemy, sqlalchemy.dialects.postgresql.psycopg, sqlalchemy.dialects.sqlite, psycopg, pydantic_settings"
)


def library_floor() -> ChildRun:
    """A bare ``python -c`` importing the libraries ctpoller is built on, and nothing of ctpoller."""
    run = run_child([sys.executable, "-c", LIBRARIES])
    _check(run, "importing the libraries")
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
            _check(init, "first ctpoller run")
            second = run_child([sys.executable, "-m", "ctpoller", "run"], env=env, cwd=tmp)
            _check(second, "second ctpoller run")
            generate.add_exams(url, n_new)
            run = run_child([sys.executable, "-m", "ctpoller", "run"], env=env, cwd=tmp)
            _check(run, f"ctpoller run with {n_new} new exams")
            counts = summary_counts(run.stderr)
            if counts is None or counts[0] != n_new:
                raise AssertionError(f"ctpoller run with {n_new} new exams said: {run.stderr.strip()[-300:]}")
            return init, second, run
        finally:
            database.delete_above(url, marks)


def _check(run: ChildRun, what: str) -> None:
    if run.returncode != 0:
        raise RuntimeError(f"{what} exited {run.returncode}: {(run.stderr or run.stdout).strip()[-500:]}")


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
    """Section 1 (+3 for the runs, +5 EXPLAIN) on one database; then one run with a backlog (RSS)."""
    rules = load_rules()
    source = OpenremSource(sqlalchemy_url(url), statement_timeout_seconds=60)
    source.connect()
    try:
        for n in news:
            samples = []
            for r in range(repeats):
                samples.append(in_process_cycle(url, source, rules, n, explain=(explain_at == n and r == 0)))
            if n == 0:
                results.add(
                    Figure(
                        "cycle.idle", "in-process cycle, nothing new", "s", column, [s.eval_seconds for s in samples]
                    )
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
                f"  {column}: in-process, {n} new: seen {_fmt_s(statistics.median(s.seen_seconds for s in samples))}, "
                f"evaluating {_fmt_s(statistics.median(s.eval_seconds for s in samples))} "
                f"({samples[0].evaluated.exams_evaluated} exams, {samples[0].evaluated.exceedances} exceedances)"
            )
            for s in samples:
                if s.plans:
                    record_plans(results, column, s.plans)
                    say(
                        f"  {column}: EXPLAIN of {len(s.plans)} distinct statements: "
                        + ", ".join(f"{p['label']} {p['verdict']}" for p in s.plans)
                    )
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
                f"  {column}: process, {n} new: {_fmt_s(statistics.median(r.seconds for r in runs))}, "
                f"{statistics.median(r.max_rss_mb for r in runs):.1f} MB"
            )
        if backlog:
            _, _, run = process_cycle(url, backlog)
            say(f"  {column}: process, backlog of {backlog} new exams: {_fmt_s(run.seconds)}, {run.max_rss_mb:.1f} MB")
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
    finally:
        source.dispose()


# --- 5. EXPLAIN -------------------------------------------------------------------------------------------

_LABELS = (
    (re.compile(r"pg_current_snapshot", re.I), "snapshot"),
    (re.compile(r"max\(remapp_generalstudymoduleattr\.id\)", re.I), "max_study_pk"),
    (re.compile(r"count\(remapp_ctirradiationeventdata\.id\)", re.I), "heads: event counts/sums"),
    (re.compile(r"^SELECT remapp_patientmoduleattr\.", re.I), "heads: patient rows"),
    (re.compile(r"^SELECT remapp_patientstudymoduleattr\.", re.I), "heads: patient ages"),
    (
        re.compile(r"FROM remapp_generalstudymoduleattr\s+WHERE remapp_generalstudymoduleattr\.id >", re.I),
        "heads_after (keyset page)",
    ),
    (
        re.compile(r"FROM remapp_generalstudymoduleattr\s+WHERE remapp_generalstudymoduleattr\.id <=", re.I),
        "history (first run)",
    ),
    (re.compile(r"FROM remapp_generalstudymoduleattr LEFT OUTER JOIN", re.I), "study_rows: studies"),
    (
        re.compile(r"FROM remapp_ctradiationdose JOIN remapp_ctirradiationeventdata .* LEFT OUTER JOIN", re.I | re.S),
        "study_rows: events",
    ),
    (re.compile(r"FROM remapp_ctdosecheckdetails", re.I), "study_rows: dose checks"),
    (re.compile(r"remapp_generalstudymoduleattr_standard_names", re.I), "study_rows: study standard names"),
    (re.compile(r"remapp_ctirradiationeventdata_standard_protocols", re.I), "study_rows: event standard names"),
    (re.compile(r"pg_sequence_last_value", re.I), "study pk sequence"),
    (re.compile(r"pg_last_xact_replay_timestamp|pg_is_in_recovery", re.I), "replica lag"),
)
_IN_LIST = re.compile(r"\((?:%\(\w+\)s(?:, )?)+\)")


def label_of(statement: str) -> str:
    for pattern, label in _LABELS:
        if pattern.search(statement):
            return label
    return " ".join(statement.split())[:60]


def explain_statements(url: str, statements: Sequence[Captured]) -> list[dict[str, Any]]:
    """EXPLAIN (ANALYZE, BUFFERS) each distinct OpenREM SELECT once, with the parameters it was sent with."""
    distinct: dict[str, Captured] = {}
    for s in statements:
        if not re.match(r"\s*SELECT", s.statement, re.I):
            continue
        shape = _IN_LIST.sub("(...)", s.statement)
        distinct.setdefault(shape, s)
    engine = sa.create_engine(sqlalchemy_url(url), poolclass=sa.pool.NullPool)
    plans = []
    try:
        with engine.connect() as conn:
            for shape, s in distinct.items():
                rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + s.statement, s.parameters).all()
                plan = "\n".join(row[0] for row in rows)
                scans = sorted(set(re.findall(r"Seq Scan on (\w+)", plan)))
                bad = [t for t in scans if t in BIG_TABLES]
                verdict = ("SEQ SCAN on " + ", ".join(bad)) if bad else "no seq scan of the big tables"
                others = [t for t in scans if t not in BIG_TABLES]
                plans.append(
                    {
                        "label": label_of(s.statement),
                        "verdict": verdict,
                        "ok": not bad,
                        "other_seq_scans": others,
                        "statement": shape,
                        "parameters": len(s.parameters or ()),
                        "plan": plan,
                    }
                )
            conn.rollback()
    finally:
        engine.dispose()
    return plans


def record_plans(results: Results, column: str, plans: Sequence[dict[str, Any]]) -> None:
    for p in plans:
        key = "plan." + re.sub(r"\W+", "_", p["label"]).strip("_").lower()
        note = ("other seq scans: " + ", ".join(p["other_seq_scans"])) if p["other_seq_scans"] else ""
        verdict = "ok: " + p["verdict"] if p["ok"] else "FAIL: " + p["verdict"]
        results.add(Figure(key, f"EXPLAIN {p['label']}", "", column, text=verdict, note=note))
    results.info.setdefault("plans", {})[column] = list(plans)


def write_plans(results: Results, directory: Path) -> None:
    """bench/explain-<column>.txt: every captured statement with its plan."""
    for column, plans in results.info.get("plans", {}).items():
        parts = []
        for p in plans:
            head = f"=== {p['label']}: {p['verdict']} ({p['parameters']} parameters)"
            parts.append(f"{head}\n{p['statement'].strip()}\n\n{p['plan']}\n")
        (directory / f"explain-{column}.txt").write_text("\n".join(parts), encoding="utf-8")


# --- 2. backfill versus COPY ----------------------------------------------------------------------------


def backfill_vs_copy(
    url: str, column: str, results: Results, *, repeats: int = 3, say: Callable[[str], None] = print
) -> None:
    """``ctpoller backfill --no-email`` over the whole database, and the COPY of the same rows."""
    runs: list[ChildRun] = []
    counts: tuple[int, int, int, int] | None = None
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="ctp-bench-") as name:
            tmp = Path(name)
            run = run_child(
                [sys.executable, "-m", "ctpoller", "backfill", "--since", "1900-01-01", "--no-email"],
                env=ctpoller_env(url, tmp),
                cwd=tmp,
            )
            _check(run, "ctpoller backfill")
            counts = summary_counts(run.stderr)
            if counts is None:
                raise AssertionError(f"no summary line from backfill: {run.stderr.strip()[-300:]}")
            runs.append(run)
            say(f"  {column}: backfill {run.seconds:.1f} s, {run.max_rss_mb:.1f} MB, {counts}")
    assert counts is not None
    _, exams, events, exceedances = counts
    results.add(
        Figure(
            "backfill.time", "`ctpoller backfill --no-email`, whole database", "s", column, [r.seconds for r in runs]
        )
    )
    results.add(Figure("backfill.exams", "  exams evaluated", "exams", column, [float(exams)]))
    read = _READ_IN_FULL.findall(runs[-1].stderr)
    if read:
        results.add(
            Figure(
                "backfill.read",
                "  of which read in full (the screen could not clear them)",
                "exams",
                column,
                [float(read[-1])],
            )
        )
    results.add(Figure("backfill.exceedances", "  exceedances found", "exams", column, [float(exceedances)]))
    results.add(Figure("backfill.exams_per_s", "  backfill exams/s", "1/s", column, [exams / r.seconds for r in runs]))
    results.add(
        Figure("backfill.events_per_s", "  backfill events/s", "1/s", column, [events / r.seconds for r in runs])
    )
    results.add(
        Figure("rss.backfill", "  peak RSS of the backfill process", "MB", column, [r.max_rss_mb for r in runs])
    )
    psql = shutil.which("psql")
    if psql is None:
        say("  psql is not on PATH: no COPY limit")
        return
    copies = []
    target = sa.engine.make_url(database.libpq_url(url))
    env = dict(os.environ)
    if target.password:  # never on a command line
        env["PGPASSWORD"] = str(target.password)
    dsn = target.set(password=None).render_as_string(hide_password=False)
    for _ in range(repeats):
        copies.append(
            run_child(
                [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", f"COPY ({COPY_JOIN}) TO STDOUT"], env=env
            )
        )
        _check(copies[-1], "psql COPY")
        say(f"  {column}: COPY {copies[-1].seconds:.1f} s")
    with database.connect(url) as conn:
        rows = int(conn.execute(f"SELECT count(*) FROM ({COPY_JOIN}) AS j").fetchone()[0])  # type: ignore[index]
    results.add(
        Figure("copy.time", "`psql COPY (same join) TO STDOUT > /dev/null`", "s", column, [c.seconds for c in copies])
    )
    results.add(Figure("copy.rows", "  COPY rows (one per event)", "rows", column, [float(rows)]))
    results.add(Figure("copy.rows_per_s", "  COPY rows/s", "1/s", column, [rows / c.seconds for c in copies]))
    ratio = statistics.median(r.seconds for r in runs) / statistics.median(c.seconds for c in copies)
    results.add(Figure("ratio.backfill_copy", "backfill time / COPY time", "x", column, [ratio]))


# --- 4. the old script ------------------------------------------------------------------------------------


def old_script(
    url: str, column: str, results: Results, *, repeats: int = 3, say: Callable[[str], None] = print
) -> None:
    runs, details = [], []
    for _ in range(repeats):
        run = run_child([sys.executable, str(OLD_SCRIPT), database.libpq_url(url)])
        _check(run, "old script")
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


# --- the table and the targets ---------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    keys: tuple[str, ...]
    check: Callable[[Results], list[tuple[str, bool]]]


def _ratio(results: Results, key: str) -> float | None:
    s, big = results.value(key, "S"), results.value(key, "L")
    if isinstance(s, float | int) and isinstance(big, float | int) and s > 0:
        return float(big) / float(s)
    return None


def _per_cycle(results: Results) -> list[tuple[str, bool]]:
    out = []
    for key in ("cycle.idle", "cycle.seen.100", "cycle.eval.100", "cycle.seen.1000", "cycle.eval.1000"):
        r = _ratio(results, key)
        if r is not None:
            out.append((f"{key} L/S {r:.2f}", r <= 1.3))
    return out


def _under(key: str, column: str, limit: float) -> Callable[[Results], list[tuple[str, bool]]]:
    def check(results: Results) -> list[tuple[str, bool]]:
        v = results.value(key, column)
        return [(f"{key} at {column} {_fmt(v, 's')}", float(v) < limit)] if isinstance(v, float | int) else []

    return check


def _checks(*checks: Callable[[Results], list[tuple[str, bool]]]) -> Callable[[Results], list[tuple[str, bool]]]:
    return lambda results: [item for check in checks for item in check(results)]


def _rss(results: Results) -> list[tuple[str, bool]]:
    out = []
    for key in results.rows:
        if key.startswith("rss."):
            for column in COLUMNS:
                v = results.value(key, column)
                if isinstance(v, float | int):
                    out.append((f"{key} at {column} {v:.0f} MB", v < 150))
    return out


def _idle(results: Results) -> list[tuple[str, bool]]:
    """T3, with the floor measured beside it: no ``ctpoller`` process can start faster than that."""
    out = []
    for column in ("S", "L"):
        v, floor = results.value("process.idle", column), results.value("process.floor", column)
        if isinstance(v, float | int):
            beside = f" (a bare import of its libraries: {_fmt(floor, 's')})" if isinstance(floor, float | int) else ""
            out.append((f"process.idle at {column} {_fmt(v, 's')}{beside}", v < 1.0))
    return out


def _backfill(results: Results) -> list[tuple[str, bool]]:
    v = results.value("ratio.backfill_copy", "M")
    return [(f"backfill/COPY at M {v:.1f}x", v <= 3)] if isinstance(v, float | int) else []


TARGETS = (
    Target("per-cycle time at L within 1.3x of S (in-process)", ("cycle.",), _per_cycle),
    Target(
        "a cycle with 100 new exams at L under 0.3 s (in-process)",
        ("cycle.seen.100", "cycle.eval.100"),
        _checks(_under("cycle.seen.100", "L", 0.3), _under("cycle.eval.100", "L", 0.3)),
    ),
    Target(
        "idle whole-process run under 1 s",
        ("process.idle",),
        _idle,
    ),
    Target("backfill within 3x of the COPY limit", ("ratio.backfill_copy",), _backfill),
    Target("peak RSS under 150 MB for any ctpoller run", ("rss.",), _rss),
)


def _fmt_s(v: float) -> str:
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def _fmt(v: float | str | None, unit: str) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if unit == "s":
        return _fmt_s(v)
    if unit == "MB":
        return f"{v:.1f} MB"
    if unit == "x":
        return f"{v:.1f}x"
    if unit in ("1/s", "rows", "exams"):
        return f"{v:,.0f}"
    return f"{v:.3g}"


def table(results: Results) -> str:
    """The one table: every figure (median, S / M / L), L/S, runs, and the target it serves."""
    target_of: dict[str, tuple[str, bool | None]] = {}
    verdicts = {t.name: t.check(results) for t in TARGETS}
    for t in TARGETS:
        for key in results.rows:
            if any(key.startswith(k) for k in t.keys):
                mine = [ok for text, ok in verdicts[t.name] if text.startswith(key + " ")]
                if mine:
                    target_of[key] = (t.name, all(mine))
    lines = [
        "| # | measure | S | M | L | L/S | runs S/M/L | target | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted(results.rows, key=lambda k: (_order(k), k))
    for i, key in enumerate(keys, start=1):
        row = results.rows[key]
        cells = [_fmt(results.value(key, c), row["unit"]) for c in COLUMNS]
        ratio = _ratio(results, key) if row["unit"] == "s" else None
        runs = "/".join(str(results.runs(key, c) or "–") for c in COLUMNS)
        target, met = target_of.get(key, ("", None))
        short = {t.name: f"T{j}" for j, t in enumerate(TARGETS, start=1)}.get(target, "")
        lines.append(
            f"| {i} | {row['measure']} | {' | '.join(cells)} | {f'{ratio:.2f}' if ratio else ''} | {runs} | "
            f"{short} | {'' if met is None else ('yes' if met else 'NO')} |"
        )
    lines.append("")
    lines.append("Targets:")
    for j, t in enumerate(TARGETS, start=1):
        items = verdicts[t.name]
        state = "not measured" if not items else ("MET" if all(ok for _, ok in items) else "NOT MET")
        failing = [text for text, ok in items if not ok]
        lines.append(f"  T{j} {t.name}: {state}" + (f" ({'; '.join(failing)})" if failing else ""))
    return "\n".join(lines)


def code_version() -> str:
    """The commit and a digest of src/ctpoller as measured (other work edits src/ while this runs)."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "src" / "ctpoller").rglob("*.py")):
        digest.update(path.read_bytes())
    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    return f"{commit} + src digest {digest.hexdigest()[:12]}"


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kb / 1024 / 1024:.1f} GiB"
    return {
        "nproc": str(os.cpu_count()),
        "memory": memory,
        "cpu": cpu,
        "python": platform.python_version(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


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
            say(f"{column}: steady state ({_load()})")
            steady_state(url, column, results, repeats=repeats, news=news, backlog=backlog, say=say)
            say(f"{column}: old script ({_load()})")
            old_script(url, column, results, repeats=repeats_slow, say=say)
            results.info.setdefault("load", {})[column] = _load()
            results.info.setdefault("code", {})[column] = code_version()
    if "M" in urls:
        say(f"M: backfill vs COPY ({_load()})")
        backfill_vs_copy(urls["M"], "M", results, repeats=repeats_slow, say=say)
        say(f"M: old script ({_load()})")
        old_script(urls["M"], "M", results, repeats=repeats_slow, say=say)
        results.info.setdefault("load", {})["M"] = _load()
        results.info.setdefault("code", {})["M"] = code_version()
    return results


def _load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def ensure_database(server: str, size: str, results: Results, *, regenerate: bool, say: Callable[[str], None]) -> str:
    name = generate.bench_database_name(size)
    n = generate.size_of(size)
    url = database.database_url(server, name)
    present = False
    if not regenerate:
        with contextlib.suppress(Exception), database.connect(url) as conn:
            present = int(conn.execute(f"SELECT count(*) FROM {database.STUDY}").fetchone()[0]) == n  # type: ignore[index]
    if not present:
        say(f"{name}: generating {n:,} studies ({_load()})")
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
    args = parser.parse_args(argv)
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
