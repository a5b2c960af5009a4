"""The statements ctpoller sends to OpenREM, captured during a cycle, and EXPLAIN (ANALYZE, BUFFERS) of each
with its real parameters: does any of them scan a big table?
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.figures import Figure, Results
from bench.parts import sqlalchemy_url

BIG_TABLES = ("remapp_ctirradiationeventdata", "remapp_generalstudymoduleattr")


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
