"""A rule on standard names against an OpenREM without them is refused by run and backfill alike."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from ctpoller.core.rules import parse_rules
from ctpoller.demo.openrem import create_schema
from ctpoller.errors import ConfigError
from ctpoller.jobs.backfill import backfill
from ctpoller.jobs.cycle import run_once
from ctpoller.openrem.source import OpenremSource
from ctpoller.openrem.tables import OPTIONAL
from ctpoller.store.store import StateStore

RULES = '[[rule]]\nname = "Head"\nstandard_name = ["head"]\nctdivol = 80\nrecipients = ["p@h.example"]\n'
NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@pytest.fixture
def parts(tmp_path: Path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'openrem.sqlite3'}")
    create_schema(engine)
    with engine.begin() as conn:
        for table in OPTIONAL:  # an OpenREM from before 1.0: no standard names
            conn.execute(sa.text(f"DROP TABLE {table}"))
    engine.dispose()
    source = OpenremSource(f"sqlite:///{tmp_path / 'openrem.sqlite3'}")
    state = StateStore(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    state.ensure_schema()
    yield source, state
    source.dispose()
    state.dispose()


def test_run_refuses_standard_name_rules_without_standard_name_tables(parts) -> None:
    source, state = parts
    with pytest.raises(ConfigError, match="standard_name"):
        run_once(source, state, parse_rules(RULES, source="rules"), None, None, now=NOW)


def test_backfill_refuses_them_too_instead_of_matching_nothing(parts) -> None:
    source, state = parts
    with pytest.raises(ConfigError, match="standard_name"):
        backfill(source, state, parse_rules(RULES, source="rules"), None, None, now=NOW, since=None)
    assert state.watermark() is None  # nothing was done
