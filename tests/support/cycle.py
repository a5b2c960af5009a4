"""One poll cycle in this process: a ctpoller wired to a real OpenREM-shaped PostgreSQL and a real SMTP
server (``support.smtp``), with a virtual clock."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ctpoller import poller
from ctpoller.notify.smtp import SmtpNotifier
from ctpoller.poller import Report, Timing
from ctpoller.rules import RuleSet, parse_rules
from ctpoller.source import OpenremSource
from ctpoller.state import StateStore
from ctpoller.wiring import XlsxArchive

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

    def __post_init__(self) -> None:
        self.archive_path = self.tmp / "archive.xlsx"

    @property
    def rules(self) -> RuleSet:
        return parse_rules(self.rules_text, source="test rules")

    @contextlib.contextmanager
    def parts(self, port: int | None = None) -> Iterator[tuple[OpenremSource, StateStore, SmtpNotifier]]:
        """A fresh source, state store and SMTP notifier, as each ``ctpoller`` process builds them."""
        source = OpenremSource(self.source_url, statement_timeout_seconds=30)
        state = StateStore(self.state_url)
        notifier = SmtpNotifier(
            "127.0.0.1",
            port or self.smtp_port,
            security="none",
            username=None,
            password=None,
            timeout=10,
            mail_from="ctpoller@hospital.example",
        )
        try:
            state.ensure_schema()
            yield source, state, notifier
        finally:
            source.dispose()
            state.dispose()

    def cycle(self, *, after: timedelta = timedelta(0), dry_run: bool = False, port: int | None = None) -> Report:
        """One real poll cycle at the virtual time (advanced by ``after`` first)."""
        self.clock += after
        with self.parts(port) as (source, state, notifier):
            return poller.run_once(
                source,
                state,
                self.rules,
                notifier,
                XlsxArchive(self.archive_path),
                now=self.clock,
                timing=self.timing,
                dry_run=dry_run,
                mail_domain="hospital.example",
            )

    def backfill(self, *, since=None, email: bool = True, dry_run: bool = False) -> Report:
        with self.parts() as (source, state, notifier):
            return poller.backfill(
                source,
                state,
                self.rules,
                notifier,
                XlsxArchive(self.archive_path),
                now=self.clock,
                since=since,
                email=email,
                dry_run=dry_run,
                timing=self.timing,
                mail_domain="hospital.example",
            )
