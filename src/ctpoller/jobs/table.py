"""Aligned columns for a terminal: what ``backfill --stats``, ``explain`` and ``check`` print as tables."""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import TextIO

_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def width(text: str) -> int:
    """How many terminal cells ``text`` takes: wide (East Asian) characters two, combining marks and
    colour escapes none."""
    cells = 0
    for c in _ESCAPE.sub("", text):
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


def wants_colour(stream: TextIO) -> bool:
    """Colour only on a terminal, and never with ``NO_COLOR`` set (no-color.org) or ``TERM=dumb``."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Paint:
    """Marks and emphasis for a terminal: ANSI colours when ``colour``, the plain text otherwise."""

    def __init__(self, colour: bool) -> None:
        self.colour = colour

    def _sgr(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.colour and text else text

    def good(self, text: str) -> str:
        return self._sgr("32", text)

    def bad(self, text: str) -> str:
        return self._sgr("1;31", text)

    def warn(self, text: str) -> str:
        return self._sgr("33", text)

    def dim(self, text: str) -> str:
        return self._sgr("2", text)

    def bold(self, text: str) -> str:
        return self._sgr("1", text)

    def mark(self, passed: bool) -> str:
        """✓ (green) or ✗ (red)."""
        return self.good("✓") if passed else self.bad("✗")
