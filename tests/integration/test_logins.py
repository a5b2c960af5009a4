"""A PostgreSQL login that needs a password it was not given, or was given wrong, is for a person
to fix (exit 1), with one line naming the setting: for OpenREM and for the state store alike.

The shared test server trusts every login, so these use the cluster of conftest.py, where one role
must give a password."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.pg import PASSWORD, PASSWORD_ROLE, Cluster
from support.process import ctpoller

pytestmark = [pytest.mark.postgres]

EXIT_PERMANENT = 1


def environment(tmp_path: Path, source_url: str, state_url: str) -> dict[str, str]:
    rules = tmp_path / "rules.toml"
    rules.write_text('[defaults]\nrecipients = ["p@h.example"]\n[[rule]]\nname = "Any"\nctdivol = 1\n')
    return {
        "CTPOLLER_SOURCE_URL": source_url,
        "CTPOLLER_STATE_URL": state_url,
        "CTPOLLER_RULES_FILE": str(rules),
        "CTPOLLER_OUTBOX_DIR": str(tmp_path / "outbox"),
        "CTPOLLER_ARCHIVE_PATH": str(tmp_path / "archive.xlsx"),
        "CTPOLLER_MAIL_FROM": "ctpoller@hospital.example",
    }


def refused(result, *words: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == EXIT_PERMANENT, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert "internal error" not in lines[0] and "wrong-password" not in lines[0] and PASSWORD not in lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("password", "libpq_says"),
    [(None, "no password supplied"), ("wrong-password", "password authentication failed")],
)
def test_openrem_refusing_the_login_for_want_of_the_right_password_needs_a_person(
    cluster: Cluster, tmp_path, password, libpq_says
):
    env = environment(tmp_path, cluster.url(user=PASSWORD_ROLE), f"sqlite:///{tmp_path / 'state.sqlite3'}")
    if password is not None:
        env["CTPOLLER_SOURCE_PASSWORD"] = password
    for command in (["run"], ["backfill", "--since", "2000-01-01", "--no-email"]):
        line = refused(ctpoller(*command, env=env, cwd=tmp_path), "OpenREM database", libpq_says)
        assert "CTPOLLER_SOURCE_PASSWORD" in line


@pytest.mark.parametrize(
    ("password", "libpq_says"),
    [(None, "no password supplied"), ("wrong-password", "password authentication failed")],
)
def test_a_state_store_refusing_the_login_for_want_of_the_right_password_needs_a_person(
    cluster: Cluster, tmp_path, password, libpq_says
):
    env = environment(tmp_path, cluster.primary, cluster.url(user=PASSWORD_ROLE, database="postgres"))
    if password is not None:
        env["CTPOLLER_STATE_PASSWORD"] = password
    for command in ("run", "status"):
        line = refused(ctpoller(command, env=env, cwd=tmp_path), "state store", libpq_says)
        assert "CTPOLLER_STATE_PASSWORD" in line


def test_with_its_password_the_role_logs_in(cluster: Cluster, tmp_path):
    """The refusals above are for want of the password, not of the role: given it, ctpoller runs."""
    env = environment(tmp_path, cluster.url(user=PASSWORD_ROLE), f"sqlite:///{tmp_path / 'state.sqlite3'}")
    env["CTPOLLER_SOURCE_PASSWORD"] = PASSWORD
    result = ctpoller("check", env=env, cwd=tmp_path)
    assert "OpenREM" in result.stdout and "no password" not in result.stdout + result.stderr
