"""The figures: one measured value per key and column, and the results.json that keeps them all.

Every run merges its figures into the file, so S, M and L measured at different times make one table
(report.py prints it).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

COLUMNS = ("S", "M", "L")


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
            figure.key, {"measure": figure.measure, "unit": figure.unit, "order": order(figure.key), "cells": {}}
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


def order(key: str) -> int:
    """Table order: the listed keys as listed, anything else (the EXPLAIN verdicts) after them."""
    return _ORDER.index(key) if key in _ORDER else len(_ORDER)


# --- how a value is written ----------------------------------------------------------------------------


def fmt_s(v: float) -> str:
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def fmt(v: float | str | None, unit: str) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if unit == "s":
        return fmt_s(v)
    if unit == "MB":
        return f"{v:.1f} MB"
    if unit == "x":
        return f"{v:.1f}x"
    if unit in ("1/s", "rows", "exams"):
        return f"{v:,.0f}"
    return f"{v:.3g}"
