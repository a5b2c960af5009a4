"""Where the tests' fixtures are registered: those of tests/support (PostgreSQL, SMTP, the ctpoller
process), and a clean environment for every test.

Which PostgreSQL server is used (see tests/support/pg.py): ``CTPOLLER_TEST_DATABASE_URL``, else
testcontainers when a Docker engine answers, else a throwaway cluster from local binaries; the pytest
header says which. Without any, tests that need PostgreSQL skip, or fail under CI /
``CTPOLLER_REQUIRE_POSTGRES=1``.
"""

from __future__ import annotations

import os

import pytest

# Before anything imports them: the support modules' asserts explain themselves like a test's.
pytest.register_assert_rewrite("support")

pytest_plugins = ["support.pg", "support.smtp", "support.process"]

from support import browser  # noqa: E402  (after the line above)
from support.pg import REQUIRE_VARIABLE, URL_VARIABLE  # noqa: E402

_KEEP = frozenset({URL_VARIABLE, REQUIRE_VARIABLE, browser.REQUIRE_VARIABLE})


@pytest.fixture(autouse=True)
def _clean_ctpoller_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's CTPOLLER_* settings never leak into a test."""
    for name in list(os.environ):
        if name.startswith("CTPOLLER_") and name not in _KEEP:
            monkeypatch.delenv(name)
