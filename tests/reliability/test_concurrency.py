"""Two ``ctpoller run`` started at the same moment, round after round (a timer that fired twice, two
hosts sharing one state store): exactly one email per notification, and the loser exits 3 (locked)
or 0 (it came second and found nothing left to do)."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa

from ctpoller.demo.exams import SIEMENS_FLASH_QA, as_another_exam
from ctpoller.store.store import StateStore
from support import pg
from support.process import EXIT_LOCKED, EXIT_OK, base_env, wait_for
from support.smtp import message_ids, study_uids

from .harness import initialise_state, state_view

pytestmark = [pytest.mark.reliability, pytest.mark.postgres, pytest.mark.smtp]

ROUNDS = 8


def race(processes, env, cwd):
    """Start two runs back to back and wait for both."""
    first = processes.start("run", env=env, cwd=cwd)
    second = processes.start("run", env=env, cwd=cwd)
    return [processes.finish(first), processes.finish(second)]


def assert_one_winner(results) -> None:
    for result in results:
        result.assert_no_crash()
    codes = sorted(result.returncode for result in results)
    assert codes in ([EXIT_OK, EXIT_OK], [EXIT_OK, EXIT_LOCKED]), "\n".join(map(str, results))
    for result in results:
        if result.returncode == EXIT_LOCKED:
            result.assert_failed(EXIT_LOCKED, "another ctpoller run holds the lock")


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_two_runs_started_together_send_each_notification_exactly_once(
    store, openrem_db, state_pg_url, openrem, mail, processes, tmp_path
):
    env = base_env(tmp_path, source_url=openrem_db, smtp_port=mail.port)
    if store == "postgresql":
        env["CTPOLLER_STATE_URL"] = state_pg_url
    initialise_state(env["CTPOLLER_STATE_URL"])
    rounds = ROUNDS if store == "sqlite" else ROUNDS // 2
    uids = []
    for number in range(rounds):
        uid = f"1.2.826.0.1.3680043.10.777.{number}"
        uids.append(uid)
        openrem.import_study(as_another_exam(SIEMENS_FLASH_QA, uid))
        assert_one_winner(race(processes, env, tmp_path))

    ids = message_ids(mail.handler.delivered)
    assert len(ids) == len(set(ids)) == rounds, f"{len(ids)} emails for {rounds} exams"
    assert sorted(study_uids(mail.handler.delivered)) == sorted(uids)
    view = state_view(env["CTPOLLER_STATE_URL"])
    assert view.outbox == {"sent": rounds} and view.integrity == "ok"


def test_a_first_run_racing_another_first_run_over_the_new_schema_does_not_fail(
    openrem_db, state_pg_url, mail, processes, tmp_path
):
    """Two first runs on a new PostgreSQL state store, the interleaving made deterministic: the test plays
    the other run, which has created the tables and is committing its schema-version row right now."""
    env = base_env(tmp_path, source_url=openrem_db, smtp_port=mail.port)
    env["CTPOLLER_STATE_URL"] = state_pg_url
    store = StateStore(state_pg_url)
    try:
        store.ensure_schema()
        with store.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM ctp_meta WHERE key = 'schema_version'"))
    finally:
        store.dispose()
    with psycopg.connect(pg.libpq_url(state_pg_url)) as other_run:
        other_run.execute("INSERT INTO ctp_meta (key, value) VALUES ('schema_version', '1')")  # not committed yet
        running = processes.start("run", env=env, cwd=tmp_path)
        wait_for(lambda: waiting_state_backend(state_pg_url), 30, "ctpoller to wait for the other run's row")
        other_run.commit()
    result = processes.finish(running)

    result.assert_no_crash()
    assert result.returncode in (EXIT_OK, EXIT_LOCKED), str(result)


def waiting_state_backend(url: str) -> bool:
    with psycopg.connect(pg.libpq_url(url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = 'ctpoller-state' "
            "AND datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return row is not None
