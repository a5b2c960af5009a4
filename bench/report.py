"""The one table of figures (medians, S / M / L, L/S, runs) and which targets were met."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.figures import COLUMNS, Results, fmt, order


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
        return [(f"{key} at {column} {fmt(v, 's')}", float(v) < limit)] if isinstance(v, float | int) else []

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
            beside = f" (a bare import of its libraries: {fmt(floor, 's')})" if isinstance(floor, float | int) else ""
            out.append((f"process.idle at {column} {fmt(v, 's')}{beside}", v < 1.0))
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
    keys = sorted(results.rows, key=lambda k: (order(k), k))
    for i, key in enumerate(keys, start=1):
        row = results.rows[key]
        cells = [fmt(results.value(key, c), row["unit"]) for c in COLUMNS]
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
