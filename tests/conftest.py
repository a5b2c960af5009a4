"""Shared fixtures: a PostgreSQL server for the integration tests, and a clean environment.

Which server is used (see tests/pg.py): ``CTPOLLER_TEST_DATABASE_URL``, else testcontainers when a Docker
engine answers, else a throwaway cluster from local binaries; the pytest header says which. Without any,
tests that need PostgreSQL skip, or fail under CI / ``CTPOLLER_REQUIRE_POSTGRES=1``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import pg

_PLAN = pytest.StashKey[pg.Plan]()
_USED = pytest.StashKey[str]()
_KEEP = frozenset({pg.URL_VARIABLE, pg.REQUIRE_VARIABLE})


def _plan(config: pytest.Config) -> pg.Plan:
    if _PLAN not in config.stash:
        config.stash[_PLAN] = pg.plan()
    return config.stash[_PLAN]


def pytest_report_header(config: pytest.Config) -> str:
    required = " (required)" if pg.postgres_required() else ""
    return f"PostgreSQL for tests{required}: {_plan(config).describe()}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if _USED in config.stash:
        terminalreporter.write_line(f"PostgreSQL used: {config.stash[_USED]}")


@pytest.fixture(autouse=True)
def _clean_ctpoller_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's CTPOLLER_* settings never leak into a test."""
    for name in list(os.environ):
        if name.startswith("CTPOLLER_") and name not in _KEEP:
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> Iterator[pg.PgServer]:
    """A PostgreSQL server (``.admin_url``, driver postgresql+psycopg) for the whole session."""
    try:
        server = pg.start(_plan(request.config))
    except pg.NoServer as e:
        message = f"no PostgreSQL for tests ({e}): {pg.HOW_TO_PROVIDE}"
        if pg.postgres_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    request.config.stash[_USED] = server.description
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def openrem_db(pg_server: pg.PgServer) -> Iterator[str]:
    """A fresh database holding sql/openrem_subset.sql; yields its postgresql+psycopg:// URL."""
    with pg.throwaway_database(pg_server, "ctp_src_") as url:
        pg.run_sql_file(url, pg.SUBSET_SQL)
        yield url


@pytest.fixture
def state_pg_url(pg_server: pg.PgServer) -> Iterator[str]:
    """A fresh empty database for ctpoller's own state; yields its postgresql+psycopg:// URL."""
    with pg.throwaway_database(pg_server, "ctp_state_") as url:
        yield url
