"""The notification sheet's rows written as XML text, the same XML openpyxl writes, ~4x faster.

openpyxl's write-only mode still builds a cell object per value and serialises it through an element
tree: about 2 s for a year's ~5,000 rows of 35 columns, which is most of a run that adds one
notification. ``RowWriter`` renders a row of plain values straight to its ``<row>`` text with the
style ids openpyxl itself gave the first cell of each (column, type, unit, quoted) kind, and hands it
to the sheet's own stream; the workbook around it (styles, validations, conditional formats, filter,
print setup, defined names, the Summary sheet) is openpyxl's as before.

Anything it does not render exactly like openpyxl (a value of another type, a date with a time zone,
a number that is not finite, an XML writer other than et_xmlfile's) takes openpyxl's
own path for that row. ``tests/unit/test_xlsx.py`` compares the two paths' sheet XML byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import date, datetime, time
from typing import Any

from openpyxl.utils import get_column_letter
from openpyxl.utils.datetime import to_excel

from ctpoller.archive.columns import Column

#: (column, value) -> the cell openpyxl would write, with its style; from ``xlsx._cell``.
MakeCell = Callable[[Any, Any, Column, Any], Any]
_DATES = (datetime, date, time)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class RowWriter:
    """Replaces a write-only sheet's per-row writing (after its header row) with ``render``."""

    def __init__(self, sheet: Any, columns: Sequence[Column], make_cell: MakeCell, text: Callable[[str], str]) -> None:
        self.sheet = sheet
        self.columns = tuple(columns)
        self.make_cell = make_cell
        self.text = text
        self.letters = [get_column_letter(index) for index in range(1, len(columns) + 1)]
        self.styles: dict[tuple[int, type, Any, bool], str] = {}
        self.epoch = sheet.parent.epoch
        writer = sheet._writer  # created by the header row's append
        self._write_row = writer.write_row
        self._values_to_row = sheet._values_to_row
        writer.write_row = self._row
        sheet._values_to_row = lambda values, row_index: values  # the values reach ``_row`` as they are

    def _row(self, xf: Any, values: Sequence[Any], row_index: int) -> None:
        raw: Any = getattr(xf, "_file", None)  # et_xmlfile's writer: a str -> None callable
        xml = self.render(values, row_index) if callable(raw) else None
        if xml is None:
            unit = self._unit(values)
            cells = [self.make_cell(self.sheet, v, c, unit) for c, v in zip(self.columns, values, strict=False)]
            self._write_row(xf, self._values_to_row(cells, row_index), row_index)
        else:
            raw(xml)

    def _unit(self, values: Sequence[Any]) -> Any:
        return next((v for c, v in zip(self.columns, values, strict=False) if c.header == "Unit"), None)

    def _style(self, index: int, value: Any, unit: Any, quoted: bool) -> str:
        column = self.columns[index]
        key = (index, type(value), unit if column.kind == "value" else None, quoted)
        style = self.styles.get(key)
        if style is None:
            cell = self.make_cell(self.sheet, value, column, unit)
            style = f' s="{cell.style_id}"' if cell.has_style else ""
            self.styles[key] = style
        return style

    def render(self, values: Sequence[Any], row_index: int) -> str | None:
        """The ``<row>`` of ``values`` (the column order of ``columns``; None leaves a cell out), or
        None when one of them needs openpyxl's own path."""
        unit = self._unit(values)
        number = str(row_index)
        parts = [f'<row r="{number}">']
        for index, value in enumerate(values):
            if value is None:
                continue
            kind = type(value)
            reference = self.letters[index] + number
            if kind is str:
                text = self.text(value)
                style = self._style(index, value, unit, value.startswith(("=", "+", "-", "@", "\t", "\r")))
                if not text:
                    parts.append(f'<c r="{reference}"{style} t="inlineStr" />')
                    continue
                space = ' xml:space="preserve"' if text.strip() and text != text.strip() else ""
                parts.append(f'<c r="{reference}"{style} t="inlineStr"><is><t{space}>{_escape(text)}</t></is></c>')
            elif kind is float or kind is int:
                if not math.isfinite(value):
                    return None
                style = self._style(index, value, unit, False)
                parts.append(f'<c r="{reference}"{style} t="n"><v>{value:.16g}</v></c>')
            elif kind in _DATES:
                if getattr(value, "tzinfo", None) is not None:
                    return None
                style = self._style(index, value, unit, False)
                serial = to_excel(value, self.epoch)
                parts.append(f'<c r="{reference}"{style} t="n"><v>{serial:.16g}</v></c>')
            else:
                return None
        parts.append("</row>")
        return "".join(parts)
