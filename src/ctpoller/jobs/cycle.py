"""One poll cycle: read -> settle -> evaluate -> record -> deliver -> archive.

Collaborators are passed in; nothing here knows SQL, SMTP or a clock. The order is the promise:
decisions, the outbox and the watermark are committed together before anything is sent, a message
is marked sent only after it was accepted, and the archive is rebuilt from the state store.
"""

from __future__ import annotations

import logging
from datetime import datetime

from ctpoller.archive.base import Archive
from ctpoller.archive.html import HtmlReport
from ctpoller.core import settle
from ctpoller.core.model import (
    StudyHead,
)
from ctpoller.core.rules import RuleSet
from ctpoller.core.settle import DEFAULT_TIMING, Timing
from ctpoller.errors import ConfigError, SourceError
from ctpoller.jobs.deliver import deliver, write_archive
from ctpoller.jobs.heartbeat import Heartbeat, check
from ctpoller.jobs.news import evaluate_exams
from ctpoller.jobs.publish import write_report_html
from ctpoller.jobs.report import Report
from ctpoller.jobs.start import check_not_behind, first_run, late_window
from ctpoller.mail.base import Notifier
from ctpoller.openrem.reads import Reads
from ctpoller.openrem.source import OpenremSource
from ctpoller.store.store import CycleWrite, StateStore
from ctpoller.store.tables import LATE_WINDOW

log = logging.getLogger(__name__)


def run_once(
    source: OpenremSource,
    state: StateStore,
    rules: RuleSet,
    notifier: Notifier | None,
    archive: Archive | None,
    *,
    now: datetime,
    timing: Timing = DEFAULT_TIMING,
    dry_run: bool = False,
    mail_domain: str = "ctpoller.invalid",
    heartbeat: Heartbeat | None = None,
    report_html: HtmlReport | None = None,
) -> Report:
    """One poll cycle. With ``dry_run`` nothing is written and nothing is sent.

    What is already in the outbox is delivered even when OpenREM cannot be read this time. After a
    cycle that read OpenREM, the ``heartbeat`` is checked; what it records is delivered with the rest.
    """
    report = Report(arrivals=[])
    try:
        _cycle(report, source, state, rules, now=now, timing=timing, dry_run=dry_run, mail_domain=mail_domain)
    except SourceError:
        if not dry_run:
            deliver(state, notifier, report, now=now)
            write_archive(state, archive, report, now=now)
            write_report_html(state, report_html, report, now=now)
        raise
    if heartbeat is not None and not dry_run:
        check(state, report, heartbeat, now=now)
    if not dry_run and not report.initialised:
        deliver(state, notifier, report, now=now)
        write_archive(state, archive, report, now=now)
        write_report_html(state, report_html, report, now=now)
    return report


def _cycle(
    report: Report,
    source: OpenremSource,
    state: StateStore,
    rules: RuleSet,
    *,
    now: datetime,
    timing: Timing,
    dry_run: bool,
    mail_domain: str,
) -> None:
    """Everything of one cycle that reads OpenREM; decisions are committed, nothing is sent."""
    connect_for(source, rules)
    watermark = state.watermark()
    report.watermark_before = report.watermark_after = watermark
    if watermark is None:
        first_run(report, source, state, now=now, timing=timing, dry_run=dry_run)
        return

    window = late_window(state)
    known = state.tracked_above(watermark if window is None else window.floor)
    with source.reading("reading new studies") as reads:
        check_not_behind(reads, state, watermark, dry_run=dry_run)
        snapshot = reads.snapshot()
        report.source_lag_seconds = reads.replica_lag_seconds()
        if window is None:
            heads = _all_heads(reads, watermark, timing.batch_size)
        else:  # and rows the first run could not see yet: committed since, below its watermark
            heads, known = window.late(_all_heads(reads, window.floor, timing.batch_size), known, watermark)
        report.studies_seen = sum(1 for h in heads if h.pk not in known)
        plan = settle.plan(heads, known, now=now, settle=timing.settle, give_up=timing.give_up, snapshot=snapshot)
        for pk, why in plan.abandoned:
            log.warning("OpenREM study pk %d: %s", pk, why)
        for head, why in plan.forced:
            log.warning("OpenREM study pk %d: %s", head.pk, why)
        to_evaluate = plan.ready + [head for head, _ in plan.forced]
        messages, gone = evaluate_exams(
            reads, state, rules, to_evaluate, report, now=now, domain=mail_domain, chunk=timing.batch_size
        )
    settle.decide(plan, [h.pk for h in to_evaluate], now)
    new_watermark = settle.advance(
        watermark, plan, now=now, settle=timing.settle, give_up=timing.give_up, snapshot=snapshot
    )
    # Rows the watermark passes need no tracking unless they belong to an exam (decided).
    passed = [
        pk
        for pk, t in plan.tracked.items()
        if pk <= new_watermark and t.status in settle.FINAL and t.status not in settle.BELONGS_TO_AN_EXAM
    ]
    write = CycleWrite(
        upsert=[plan.tracked[pk] for pk in sorted(plan.changed) if pk not in passed],
        forget=sorted(set(plan.forget) | set(passed) | set(gone)),
        messages=messages,
        watermark_from=watermark,
        watermark_to=new_watermark,
    )
    report.waiting, report.abandoned, report.messages = plan.waiting, plan.abandoned, messages
    report.created = len(messages)
    report.watermark_after = new_watermark
    if not dry_run:
        state.commit_cycle(write, now)
        below = any(pk <= watermark and t.status not in settle.FINAL for pk, t in plan.tracked.items())
        if window is not None and not below and window.closed(snapshot, now, timing.give_up):
            state.set_meta({LATE_WINDOW: None})


def _all_heads(reads: Reads, watermark: int, batch: int) -> list[StudyHead]:
    heads: list[StudyHead] = []
    after = watermark
    while True:
        page = reads.heads_after(after, batch)
        heads.extend(page)
        if len(page) < batch:
            return heads
        after = page[-1].pk


def connect_for(source: OpenremSource, rules: RuleSet) -> None:
    """Connect the source for these rules: standard names are read only when a rule uses them, and
    a rule that uses them against an OpenREM without them is refused (run and backfill alike)."""
    source.connect()
    source.read_standard_names = rules.uses_standard_names
    if problem := source.criteria_problem(rules):
        raise ConfigError(problem)
    if rules.uses_standard_names and not source.has_standard_names:
        raise ConfigError(
            f"the rules file uses standard_name, but the OpenREM database {source.where} "
            "has no standard-name tables (OpenREM 1.0 or later has them)"
        )
