"""One poll cycle in this process: a ctpoller wired to a real OpenREM-shaped PostgreSQL and a real SMTP
server (``support.smtp``), with a virtual clock."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ctpoller import wiring
from ctpoller.core.rules import RuleSet, parse_rules
from ctpoller.core.settle import Timing
from ctpoller.jobs.backfill import backfill
from ctpoller.jobs.cycle import run_once
from ctpoller.jobs.heartbeat import Heartbeat
from ctpoller.jobs.report import Report
from ctpoller.mail.base import Notifier
from ctpoller.openrem.source import OpenremSource
from ctpoller.settings import Settings
from ctpoller.store.store import StateStore
from support.workbooks import year_workbook

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
SETTLE = timedelta(seconds=120)


@dataclass
class Harness:
    source_url: str
    state_url: str
    rules_text: str
    smtp_port: int
    tmp: Path
    timing: Timing = field(default_factory=lambda: Timing(settle=SETTLE, give_up=timedelta(hours=6)))
    clock: datetime = T0
    settings_changes: dict[str, Any] = field(default_factory=dict)  # more settings, as a .env would add
    heartbeat: Heartbeat | None = None

    def __post_init__(self) -> None:
        self.archive_path = self.tmp / "archive.xlsx"
        self.report_html = self.tmp / "report.html"

    @property
    def workbook(self) -> Path:
        """The archive's workbook of the harness clock's year (one per year beside ``archive_path``)."""
        return year_workbook(self.archive_path, self.clock.year)

    @property
    def rules(self) -> RuleSet:
        return parse_rules(self.rules_text, source="test rules")

    def settings(self, port: int | None = None) -> Settings:
        """The settings of this ctpoller, as a ``.env`` would hold them."""
        return Settings(
            _env_file=None,
            source_url=self.source_url,
            state_url=self.state_url,
            statement_timeout_seconds=30,
            smtp_host="127.0.0.1",
            smtp_port=port or self.smtp_port,
            smtp_security="none",
            smtp_timeout=10,
            mail_from="ctpoller@hospital.example",
            archive_path=self.archive_path,
            **self.settings_changes,
            report_html=self.report_html,
        )

    @contextlib.contextmanager
    def parts(self, port: int | None = None) -> Iterator[tuple[OpenremSource, StateStore, Notifier]]:
        """A fresh source, state store and SMTP notifier, built by ``wiring`` as each ``ctpoller``
        process builds them (the rules and the timing are the harness's own)."""
        settings = self.settings(port)
        source, state, notifier = wiring.build_source(settings), wiring.build_state(settings), None
        try:
            notifier = wiring.build_notifier(settings)
            assert notifier is not None
            state.ensure_schema()
            yield source, state, notifier
        finally:
            source.dispose()
            state.dispose()

    def cycle(self, *, after: timedelta = timedelta(0), dry_run: bool = False, port: int | None = None) -> Report:
        """One real poll cycle at the virtual time (advanced by ``after`` first)."""
        self.clock += after
        with self.parts(port) as (source, state, notifier):
            return run_once(
                source,
                state,
                self.rules,
                notifier,
                wiring.build_archive(self.settings()),
                now=self.clock,
                timing=self.timing,
                dry_run=dry_run,
                mail_domain="hospital.example",
                heartbeat=self.heartbeat,
                report_html=wiring.build_report_html(self.settings()),
            )

    def backfill(self, *, since=None, email: bool = True, dry_run: bool = False) -> Report:
        with self.parts() as (source, state, notifier):
            return backfill(
                source,
                state,
                self.rules,
                notifier,
                wiring.build_archive(self.settings()),
                now=self.clock,
                since=since,
                email=email,
                dry_run=dry_run,
                timing=self.timing,
                mail_domain="hospital.example",
                report_html=wiring.build_report_html(self.settings()),
            )
