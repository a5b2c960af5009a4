"""Aligned columns for a terminal: what ``backfill --stats``, ``explain`` and ``check`` print as tables."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence


def width(text: str) -> int:
    """How many terminal cells ``text`` takes: wide (East Asian) characters two, combining marks none."""
    cells = 0
    for c in text:
        if unicodedata.combining(c):
            continue
        cells += 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1
    return cells


def pad(text: str, cells: int, *, right: bool = False) -> str:
    """``text`` padded with spaces to ``cells`` terminal cells (on the left when ``right``)."""
    fill = " " * max(cells - width(text), 0)
    return fill + text if right else text + fill


def aligned(rows: Sequence[Sequence[str]], *, right: Iterable[int] = (), indent: str = "") -> list[str]:
    """The rows as lines of aligned columns; the columns numbered in ``right`` are right-aligned
    (numbers). Trailing spaces are left out, so a copied table stays clean."""
    if not rows:
        return []
    count = max(len(row) for row in rows)
    widths = [max((width(row[i]) for row in rows if i < len(row)), default=0) for i in range(count)]
    right = set(right)
    lines = []
    for row in rows:
        cells = [pad(cell, widths[i], right=i in right) for i, cell in enumerate(row)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def clipped(text: str, cells: int) -> str:
    """``text`` cut to at most ``cells`` terminal cells, ending in "…" when cut."""
    if width(text) <= cells:
        return text
    kept = ""
    for c in text:
        if width(kept + c) > cells - 1:
            break
        kept += c
    return kept + "…"
