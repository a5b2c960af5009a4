"""The HTML report without a browser: safe JSON, patient-free items, reviews plugged in, write errors."""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ctpoller.archive.html import HtmlReport, asset, render_report, script_json
from ctpoller.archive.items import notification_key, report_items
from ctpoller.errors import NotifyError
from support.factories import archive_row

NOW = datetime(2026, 3, 20, 7, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Verdict:
    outcome: str | None
    reason: str | None


def test_json_in_the_page_cannot_close_its_script_element() -> None:
    text = script_json({"d": "</script><!-- & \u2028"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"d": "</script><!-- & \u2028"}


def test_the_page_holds_no_accession_number_nor_study_uid() -> None:
    row = archive_row(notification={"accession_number": "ACC-SECRET-1", "study_uid": "1.2.3.444555"})
    page = render_report(report_items([row]), now=NOW)
    assert "ACC-SECRET-1" not in page and "1.2.3.444555" not in page
    # Nothing to fetch: no linked file, no element with a source, and a policy that forbids fetching.
    assert "<link" not in page and not re.search(r"<(script|img|iframe|object|embed)\b[^>]*\bsrc=", page)
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    assert policy and "default-src 'none'" in html.unescape(policy.group(1))


def test_without_reviews_every_item_is_open_and_a_review_closes_it() -> None:
    row = archive_row()
    (item,) = report_items([row])
    assert item.open and item.outcome is None
    reviews = {notification_key(row): Verdict("justified", "patient size / habitus")}
    (reviewed,) = report_items([row], reviews)
    assert not reviewed.open and (reviewed.outcome, reviewed.reason) == ("justified", "patient size / habitus")


def test_every_inlined_asset_is_safe_inside_a_script_element() -> None:
    for name in ("chart.umd.min.js", "report.js", "report.css"):
        text = asset(name)
        assert not re.search(r"</script|<!--", text, re.IGNORECASE)
        assert "sourceMappingURL" not in text


def test_a_missing_directory_is_an_error_naming_the_setting_and_needs_a_person(tmp_path: Path) -> None:
    target = HtmlReport(tmp_path / "gone" / "report.html")
    with pytest.raises(NotifyError) as raised:
        target.write([archive_row()], now=NOW)
    assert "CTPOLLER_REPORT_HTML" in str(raised.value) and "does not exist" in str(raised.value)
    assert raised.value.scope == "settings" and not raised.value.temporary


def test_a_new_report_is_readable_by_all_and_an_existing_one_keeps_its_mode(tmp_path: Path) -> None:
    target = HtmlReport(tmp_path / "report.html")
    assert target.write([archive_row()], now=NOW) == 1
    assert target.path.stat().st_mode & 0o777 == 0o644
    target.path.chmod(0o640)
    target.write([archive_row(), archive_row()], now=NOW)
    assert target.path.stat().st_mode & 0o777 == 0o640


def test_the_page_shows_severity_and_the_reference_of_each_limit_but_no_detail() -> None:
    from decimal import Decimal

    drl = {"severity": "alert", "reference": "UK NDRL 2022", "reference_value": Decimal(47), "multiple": Decimal(2)}
    trend = {**drl, "metric": "trend_ctdivol", "event_key": "", "detail": "armed by 1.2.826.0.1.987654 at 210 mGy"}
    rows = [archive_row(), archive_row(notification=trend)]
    page = render_report(report_items(rows), now=NOW)
    data = json.loads(html.unescape(re.search(r'id="ctpoller-data">(.*?)</script>', page).group(1)))  # type: ignore[union-attr]

    plain, alert = data["items"]
    assert (plain["severity"], plain["reference"], plain["level"], plain["multiple"]) == (
        "notification",
        "",
        None,
        None,
    )
    assert (alert["severity"], alert["reference"], alert["level"], alert["multiple"]) == (
        "alert",
        "UK NDRL 2022",
        47,
        2,
    )
    assert "2 notifications (1 alert), 2 not yet reviewed" in page
    assert 'id="filter-severity"' in page and '["Severity", function' in page and '["Reference", function' in page
    assert "1.2.826.0.1.987654" not in page  # a trend's detail names an exam: never on the QA share's page
