"""The HTML report in real headless Chromium: written by the job from notifications in a real
PostgreSQL state store, its charts drawn by Chart.js (the DOM says so), no script error, hostile
text shown as text, and a screenshot that is not blank."""

from __future__ import annotations

import re
import statistics
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from ctpoller.archive.html import HtmlReport
from ctpoller.jobs.publish import write_report_html
from ctpoller.jobs.report import Report
from ctpoller.store.notifications import NewMessage
from ctpoller.store.store import CycleWrite, StateStore
from support import browser
from support.factories import notification

pytestmark = [pytest.mark.postgres, pytest.mark.browser]

STATIONS = (("CTAWP00001", "Main CT"), ("CTAWP00002", "Emergency CT"), ("CTAWP00003", "Oncology CT"))
RULES = (
    ("adult head", "ctdivol", Decimal("60"), "mGy", "Head routine"),
    ("adult chest", "ctdivol", Decimal("15"), "mGy", "Chest routine"),
    ("any exam DLP", "dlp_total", Decimal("1000"), "mGy·cm", "Abdomen/pelvis"),
)
HOSTILE = '</script><script>document.body.setAttribute("data-owned","1")</script><img src=x onerror=alert(1)>'
NOW = datetime(2026, 3, 20, 7, 0, tzinfo=UTC)


def fill(state: StateStore, count: int = 60) -> None:
    """``count`` notifications over eight months, three stations and three rules, one message each."""
    for index in range(count):
        station, display = STATIONS[index * 7 % 3 if index % 5 else 0]
        rule, metric, limit, unit, protocol = RULES[index % 3]
        studied = date(2025, 8, 1) + timedelta(days=index * 233 % 230)
        told = notification(
            study_uid=f"1.2.826.0.1.3680043.8.498.{1000 + index}",
            rule=rule,
            metric=metric,
            event_key="" if metric == "dlp_total" else f"1.2.3.{index}",
            value=limit * (Decimal(105 + index * 37 % 240) / 100),
            limit=limit,
            unit=unit,
            protocol=protocol,
            station_name=station,
            display_name=display,
            study_date=studied,
            description=HOSTILE if index == 3 else f"CT {rule.upper()}",
            accession_number=f"ACC{index:05d}",
        )
        message = NewMessage(f"<ctpoller.{index}@hospital.example>", told.study_uid, ("qa@hospital.example",), (told,))
        notified = datetime.combine(studied, datetime.min.time(), UTC) + timedelta(hours=9)
        state.commit_cycle(CycleWrite(messages=[message]), notified)


@pytest.fixture
def state(state_pg_url: str):
    store = StateStore(state_pg_url)
    store.ensure_schema()
    yield store
    store.dispose()


def body_tag(dom: str) -> str:
    match = re.search(r"<body[^>]*>", dom)
    assert match, dom[:500]
    return match.group(0)


def test_the_report_draws_its_charts_in_chromium_without_a_script_error(state: StateStore, tmp_path: Path) -> None:
    fill(state)
    page = tmp_path / "report.html"
    report = Report()
    write_report_html(state, HtmlReport(page), report, now=NOW)
    assert report.report_html_error is None and report.report_html_rows == 60

    dom = browser.dump_dom(page, tmp_path / "profile")

    body = body_tag(dom)
    assert "data-error" not in body, body
    assert 'data-ready="true"' in body, body
    for chart in ("chart-months", "chart-ratios"):
        canvas = re.search(rf'<canvas id="{chart}"[^>]*>', dom)
        assert canvas and 'data-rendered="true"' in canvas.group(0), canvas
    assert "60 of 60 shown" in dom
    assert dom.count('<tr class="open">') == 2 * 60  # every notification is open: both tables list it


def test_hostile_text_stays_text_and_no_identifier_reaches_the_page(state: StateStore, tmp_path: Path) -> None:
    fill(state, count=6)
    page = tmp_path / "report.html"
    write_report_html(state, HtmlReport(page), Report(), now=NOW)
    text = page.read_text(encoding="utf-8")
    assert "ACC0000" not in text and "1.2.826.0.1.3680043.8.498.100" not in text
    assert text.lower().count("</script") == 3  # the data block, Chart.js and the page's script: nothing else

    dom = browser.dump_dom(page, tmp_path / "profile")

    body = body_tag(dom)
    assert "data-owned" not in body and "data-error" not in body, body
    assert "&lt;/script&gt;&lt;script&gt;document.body.setAttribute" in dom  # shown as text in a cell
    assert "<img src" not in dom


def test_a_screenshot_of_the_report_is_not_blank(state: StateStore, tmp_path: Path) -> None:
    fill(state)
    page = tmp_path / "report.html"
    write_report_html(state, HtmlReport(page), Report(), now=NOW)

    png = browser.screenshot(page, tmp_path / "profile", tmp_path / "report.png")

    width, height, grey = browser.png_grey(png)
    assert (width, height) == (1280, 900)
    assert statistics.pvariance(grey) > 300  # a white page has none; text, tables and bars make plenty
    dark = sum(1 for level in grey if level < 200)
    assert dark > len(grey) // 50
    # The charts' half of the page (below the open items) is drawn too, not only the text at the top.
    lower = grey[len(grey) * 2 // 3 :]
    assert len(set(lower)) > 40 and statistics.pvariance(lower) > 300


def test_the_report_is_rewritten_only_after_the_record_changed(state: StateStore, tmp_path: Path) -> None:
    fill(state, count=2)
    page = tmp_path / "report.html"
    target = HtmlReport(page)
    write_report_html(state, target, Report(), now=NOW)
    first = page.stat().st_mtime_ns

    idle = Report()
    write_report_html(state, target, idle, now=NOW + timedelta(minutes=1))
    assert idle.report_html_rows is None and page.stat().st_mtime_ns == first

    told = replace(notification(), study_uid="1.2.3.999", accession_number=None)
    state.commit_cycle(CycleWrite(messages=[NewMessage("<n@x>", told.study_uid, ("qa@x.example",), (told,))]), NOW)
    changed = Report()
    write_report_html(state, target, changed, now=NOW + timedelta(minutes=2))
    assert changed.report_html_rows == 3
