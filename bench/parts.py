"""ctpoller's parts as the benchmark builds them: the rules, the source, a fresh state store, the
outbox notifier, the archive, the timing of an in-process cycle, and the environment of a
``python -m ctpoller`` child.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench import database
from ctpoller import wiring
from ctpoller.archive.base import XlsxArchive
from ctpoller.core.rules import RuleSet
from ctpoller.mail.base import Notifier
from ctpoller.openrem.source import OpenremSource
from ctpoller.settings import Settings
from ctpoller.store.store import StateStore

REPO = Path(__file__).resolve().parents[1]
RULES_FILE = REPO / "examples" / "rules.toml"
MAIL_FROM = "ctpoller@bench.example"
TIMING = wiring.timing(Settings(_env_file=None, settle_seconds=120, give_up_seconds=6 * 3600, batch_size=500))


def load_rules() -> RuleSet:
    return wiring.load_rules(settings("sqlite://", Path(".")))


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


def settings(url: str, tmp: Path) -> Settings:
    """The settings of an in-process bench run, as the child processes' environment has them; the
    parts are built from them by ``ctpoller.wiring``, as every ctpoller command builds them."""
    return Settings(
        _env_file=None,
        source_url=sqlalchemy_url(url),
        state_url=f"sqlite:///{tmp / 'state.sqlite3'}",
        rules_file=RULES_FILE,
        outbox_dir=tmp / "outbox",
        archive_path=tmp / "archive.xlsx",
        mail_from=MAIL_FROM,
        statement_timeout_seconds=60,
    )


def openrem_source(url: str) -> OpenremSource:
    """The OpenREM source on a bench database (not yet connected)."""
    return wiring.build_source(settings(url, Path(".")))


def state_store(tmp: Path) -> StateStore:
    """A fresh SQLite state store in ``tmp`` (its schema not yet made)."""
    return wiring.build_state(settings("sqlite://", tmp))


def archive(tmp: Path) -> XlsxArchive:
    built = wiring.build_archive(settings("sqlite://", tmp))
    assert built is not None
    return built


def notifier(tmp: Path) -> Notifier:
    """The .eml outbox notifier writing into ``tmp``."""
    built = wiring.build_notifier(settings("sqlite://", tmp))
    assert built is not None
    return built
