"""The HTML report (``CTPOLLER_REPORT_HTML``): rewritten after each run that changed the record.

It follows the archive's generation (``archive_generation`` counts every change of the record) with
its own "written" mark, so the report and the workbook never wait for each other: a report that
cannot be written is retried by the next run, and the emails and the workbook are done before it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from ctpoller.archive.html import HtmlReport
from ctpoller.errors import NotifyError
from ctpoller.jobs.report import Report
from ctpoller.store.store import StateStore

log = logging.getLogger(__name__)

GENERATION = "archive_generation"


@dataclass(frozen=True)
class Verdict:
    """A review's outcome and reason, as the report shows them."""

    outcome: str | None
    reason: str | None


WRITTEN = "report_html_written_generation"


def report_html_due(state: StateStore, target: HtmlReport) -> bool:
    """Missing, or the record changed since it was last written."""
    if not target.exists():
        return True
    generation = state.get_meta(GENERATION)
    return generation is not None and generation != state.get_meta(WRITTEN)


def write_report_html(state: StateStore, target: HtmlReport | None, report: Report, *, now: datetime) -> None:
    """Rebuild the HTML report from the state store when the record changed (or it is missing)."""
    if target is None or not report_html_due(state, target):
        return
    generation = state.get_meta(GENERATION)
    try:
        reviews = {key: Verdict(fields.get("outcome"), fields.get("reason")) for key, fields in state.reviews().items()}
        report.report_html_rows = target.write(state.archive_rows(), now=now, reviews=reviews)
    except NotifyError as e:
        report.report_html_error = str(e)
        report.report_html_needs_a_person = not e.temporary
        log.error("%s (nothing is lost: the next run that can write the report rebuilds it)", e)
        return
    state.set_meta({WRITTEN: generation})
