"""ctpoller's parts as the benchmark builds them: the rules, the source, a fresh state store, the
outbox notifier, the archive, the timing of an in-process cycle, and the environment of a
``python -m ctpoller`` child.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from bench import database
from ctpoller.notify.outbox import EmlDirectoryNotifier
from ctpoller.poller import Timing
from ctpoller.rules import RuleSet, parse_rules
from ctpoller.source import OpenremSource
from ctpoller.state import StateStore
from ctpoller.wiring import XlsxArchive

REPO = Path(__file__).resolve().parents[1]
RULES_FILE = REPO / "examples" / "rules.toml"
MAIL_FROM = "ctpoller@bench.example"
TIMING = Timing(settle=timedelta(seconds=120), give_up=timedelta(hours=6), batch_size=500)


def load_rules() -> RuleSet:
    return parse_rules(RULES_FILE.read_text(encoding="utf-8"), source=str(RULES_FILE))


def sqlalchemy_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return "postgresql+psycopg" + sep + rest if scheme in ("postgresql", "postgres") else url


def ctpoller_env(url: str, tmp: Path, *, settle: int = 0) -> dict[str, str]:
    """The environment of a ``python -m ctpoller`` child: no CTPOLLER_* of ours leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTPOLLER_") and k != "JOURNAL_STREAM"}
    env.update(
        CTPOLLER_SOURCE_URL=database.libpq_url(url),
        CTPOLLER_STATE_URL=f"sqlite:///{tmp / 'state.sqlite3'}",
        CTPOLLER_RULES_FILE=str(RULES_FILE),
        CTPOLLER_SETTLE_SECONDS=str(settle),
        CTPOLLER_OUTBOX_DIR=str(tmp / "outbox"),
        CTPOLLER_ARCHIVE_PATH=str(tmp / "archive.xlsx"),
        CTPOLLER_MAIL_FROM=MAIL_FROM,
    )
    return env


def openrem_source(url: str) -> OpenremSource:
    """The OpenREM source on a bench database (not yet connected)."""
    return OpenremSource(sqlalchemy_url(url), statement_timeout_seconds=60)


def state_store(tmp: Path) -> StateStore:
    """A fresh SQLite state store in ``tmp`` (its schema not yet made)."""
    return StateStore(f"sqlite:///{tmp / 'state.sqlite3'}")


def archive(tmp: Path) -> XlsxArchive:
    return XlsxArchive(tmp / "archive.xlsx")


def notifier(tmp: Path) -> EmlDirectoryNotifier:
    """The .eml outbox notifier writing into ``tmp``."""
    return EmlDirectoryNotifier(tmp / "outbox", mail_from=MAIL_FROM)
