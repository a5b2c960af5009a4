"""The HTML report (``CTPOLLER_REPORT_HTML``): one static, self-contained page for the QA share.

Open items first, then charts (notifications per month and station; each rule's values against its
limit) and every notification with its severity and the reference its limit comes from ("2 × 47 mGy
(UK NDRL 2022)"), with filters by station, rule, severity and outcome. Everything is inside the
file: the data as JSON, the page's script and Chart.js (MIT, vendored in ``assets/``), so the page
opens from a file share with no network; its Content-Security-Policy forbids fetching anything.

The data holds no patient or exam identifier (see ``items``). Text reaches the page only as JSON in
a ``<script type="application/json">`` block, with ``<``, ``>`` and ``&`` escaped, and the page's
script puts it into the DOM as text, never as markup: a description reading ``</script>`` stays text.
"""

from __future__ import annotations

import errno
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO

from ctpoller.archive.items import Item, NotificationKey, Review, report_items
from ctpoller.core.model import ArchiveRow
from ctpoller.errors import NotifyError
from ctpoller.files import atomic_write

#: A new report is readable by everyone who may read its directory: it holds no patient data.
NEW_FILE_MODE = 0o644
#: Enough rows for the "all notifications" table; the charts and the open items always use all.
TABLE_ROWS = 1000

_SOURCE_MAP = re.compile(r"^//# sourceMappingURL=.*$", re.MULTILINE)
_CLOSES_SCRIPT = re.compile(r"</script|<!--", re.IGNORECASE)
_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"


@cache
def asset(name: str) -> str:
    """A file of ``assets/`` as text, checked to be safe inside an inline ``<script>``/``<style>``."""
    text = resources.files("ctpoller.archive").joinpath("assets", name).read_text(encoding="utf-8")
    text = _SOURCE_MAP.sub("", text)  # no source map to look for: the page fetches nothing
    if _CLOSES_SCRIPT.search(text):
        raise ValueError(f"assets/{name} contains '</script' or '<!--' and cannot be inlined")
    return text


def script_json(data: Any) -> str:
    """``data`` as JSON that cannot end or confuse the ``<script>`` element it sits in."""
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _number(value: Decimal | None) -> float | None:
    if value is None or not value.is_finite():
        return None
    return float(value)


def item_data(item: Item, now: datetime) -> dict[str, Any]:
    return {
        "notified": item.notified_at.strftime("%Y-%m-%d %H:%M"),
        "month": item.month,
        "date": item.study_date.isoformat() if item.study_date else None,
        "station": item.station,
        "description": item.description,
        "protocol": item.protocol,
        "rule": item.rule,
        "metric": item.metric,
        "unit": item.unit,
        "value": _number(item.value),
        "limit": _number(item.limit),
        "ratio": _number(item.ratio),
        "update": item.update,
        "status": item.status,
        "outcome": item.outcome,
        "reason": item.reason,
        "age": item.age_days(now),
        "severity": item.severity,
        "reference": item.reference,
        "level": _number(item.reference_value),
        "multiple": _number(item.multiple),
    }


def render_report(items: Iterable[Item], *, now: datetime) -> str:
    """The whole page as text."""
    rows = [item_data(item, now) for item in items]
    generated = now.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    data = {"generated": generated, "tableRows": TABLE_ROWS, "items": rows}
    open_count = sum(1 for row in rows if not row["outcome"])
    alerts = sum(1 for row in rows if row["severity"] == "alert")
    return PAGE.format(
        csp=escape(_CSP),
        style=asset("report.css"),
        generated=escape(generated),
        total=len(rows),
        alerts=f" ({alerts} alert{'' if alerts == 1 else 's'})" if alerts else "",
        open=open_count,
        data=script_json(data),
        chartjs=asset("chart.umd.min.js"),
        script=asset("report.js"),
    )


class HtmlReport:
    """The report as one file (``CTPOLLER_REPORT_HTML``), rebuilt from the state store."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.exists()

    def write(
        self,
        rows: Iterable[ArchiveRow],
        *,
        now: datetime,
        reviews: Mapping[NotificationKey, Review] | None = None,
    ) -> int:
        """Replace the report with one of ``rows``; return how many notifications it shows.

        Raises ``NotifyError`` on any ``OSError``; the old report is then left intact.
        """
        items = list(report_items(rows, reviews))
        page = render_report(items, now=now).encode("utf-8")

        def write(file: BinaryIO) -> None:
            file.write(page)

        try:
            atomic_write(self.path, write, mode=None if self.path.exists() else NEW_FILE_MODE)
        except OSError as error:
            raise report_error(self.path, error) from error
        return len(items)


def report_error(path: Path, error: OSError) -> NotifyError:
    """A missing or unwritable directory needs a person (``scope="settings"``); anything else is temporary."""
    directory = path.parent
    if error.errno in (errno.ENOENT, errno.ENOTDIR) and not directory.is_dir():
        reason, person = f"directory {directory} does not exist", True
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason, person = f"directory {directory} is not writable by this user ({error.strerror})", True
    else:
        reason, person = error.strerror or error.__class__.__name__, False
    text = f"cannot write the HTML report {path}: {reason}: check CTPOLLER_REPORT_HTML"
    return NotifyError(text, permanent=False, scope="settings" if person else "server")


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>CT dose notifications</title>
<style>{style}</style>
</head>
<body data-ready="false">
<header>
<h1>CT dose notifications</h1>
<p class="meta">Written by ctpoller at {generated}: {total} notifications{alerts}, {open} not yet reviewed.
Patient-free: the workbook archive has the accession numbers.</p>
</header>
<noscript><p class="warning">This report needs JavaScript to show its tables and charts.</p></noscript>
<form id="filters" class="filters">
<label>Station <select id="filter-station"><option value="">all</option></select></label>
<label>Rule <select id="filter-rule"><option value="">all</option></select></label>
<label>Severity <select id="filter-severity"><option value="">all</option></select></label>
<label>Outcome <select id="filter-outcome"><option value="">all</option></select></label>
<span id="shown" class="meta"></span>
</form>
<section id="open-items">
<h2>Open items: not yet reviewed <span id="open-count" class="count"></span></h2>
<p id="open-empty" class="meta" hidden>Nothing is waiting for review.</p>
<div class="scroll"><table id="open-table"></table></div>
</section>
<section class="charts">
<figure><figcaption>Notifications per month and station (by study date)</figcaption>
<div class="chart"><canvas id="chart-months" role="img" aria-label="notifications per month and station"></canvas></div>
</figure>
<figure><figcaption>Each rule's values against its limit (value ÷ limit; 1 is the limit)</figcaption>
<div class="chart"><canvas id="chart-ratios" role="img" aria-label="values against limits"></canvas></div>
</figure>
</section>
<section id="all-items">
<h2>All notifications <span id="all-count" class="count"></span></h2>
<div class="scroll"><table id="all-table"></table></div>
</section>
<script type="application/json" id="ctpoller-data">{data}</script>
<script>{chartjs}</script>
<script>{script}</script>
</body>
</html>
"""
