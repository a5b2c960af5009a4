"""SIGKILL at every stage of a run, then run again: nothing lost, nothing sent twice except the one
documented case (killed after the server's 250, before ctpoller recorded it: the same Message-ID again),
the state store intact, the archive always a complete workbook."""

from __future__ import annotations

import hashlib
import random
import sqlite3
import subprocess
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from ctpoller.core.model import Notification
from ctpoller.demo.exams import GE_VCT, SIEMENS_FLASH_QA, as_another_exam
from ctpoller.store.notifications import NewMessage
from ctpoller.store.store import CycleWrite, StateStore
from support.process import base_env, ctpoller, wait_for
from support.smtp import body, message_ids, parse, study_uids
from support.workbooks import year_workbook

from .harness import COLUMN, archive_rows, blocked_ctpoller_backend, initialise_state, state_view, table_locked

pytestmark = [pytest.mark.reliability, pytest.mark.postgres, pytest.mark.smtp]


def test_run_killed_while_blocked_reading_openrem_records_nothing_and_the_next_run_notifies_once(
    openrem_db, openrem, mail, processes, tmp_path
):
    env = base_env(tmp_path, source_url=openrem_db, smtp_port=mail.port)
    initialise_state(env["CTPOLLER_STATE_URL"])
    openrem.import_study(GE_VCT)
    before = state_view(env["CTPOLLER_STATE_URL"])

    with table_locked(openrem_db, "remapp_ctirradiationeventdata"):
        running = processes.start("run", env=env, cwd=tmp_path)
        wait_for(lambda: blocked_ctpoller_backend(openrem_db), 30, "ctpoller to block on the locked table")
        processes.kill(running)

    after = state_view(env["CTPOLLER_STATE_URL"])
    assert after.integrity == "ok"
    assert (after.watermark, after.outbox) == (before.watermark, before.outbox) == (0, {})
    assert mail.handler.delivered == []

    ctpoller("run", env=env, cwd=tmp_path).assert_ok()
    assert len(mail.handler.delivered) == 1
    assert state_view(env["CTPOLLER_STATE_URL"]).outbox == {"sent": 1}
    assert {row[COLUMN["status"]] for row in archive_rows(year_workbook(tmp_path / "archive.xlsx"))} == {"sent"}


def test_run_killed_while_the_mail_server_holds_data_sends_the_message_once_on_the_next_run(
    openrem_db, openrem, mail, processes, tmp_path
):
    env = base_env(tmp_path, source_url=openrem_db, smtp_port=mail.port)
    env["CTPOLLER_SMTP_TIMEOUT"] = "60"
    initialise_state(env["CTPOLLER_STATE_URL"])
    openrem.import_study(GE_VCT)
    mail.handler.hang = 30

    running = processes.start("run", env=env, cwd=tmp_path)
    assert mail.handler.data_arrived.wait(30), "ctpoller never reached DATA"
    processes.kill(running)

    view = state_view(env["CTPOLLER_STATE_URL"])
    assert view.integrity == "ok" and len(view.unsent_ids) == 1, "the decision was committed before sending"
    mail.handler.hang = 0
    ctpoller("run", env=env, cwd=tmp_path).assert_ok()
    assert message_ids(mail.handler.delivered) == view.unsent_ids
    assert state_view(env["CTPOLLER_STATE_URL"]).outbox == {"sent": 1}
    assert len(archive_rows(year_workbook(tmp_path / "archive.xlsx"))) == 2  # Body CTDIvol 176.12 and Exam DLP 2002.39


def test_run_killed_after_the_server_accepted_a_message_sends_it_again_only_with_the_same_message_id(
    openrem_db, openrem, mail, processes, tmp_path
):
    """The one documented duplicate: the server said 250, ctpoller died before recording it."""
    env = base_env(tmp_path, source_url=openrem_db, smtp_port=mail.port)
    initialise_state(env["CTPOLLER_STATE_URL"])
    openrem.import_study(GE_VCT)
    held: list[sqlite3.Connection] = []
    accepted = threading.Event()

    def hold_the_state_store(_content: bytes) -> None:
        # Right before the 250: keep ctpoller from recording "sent" until it is killed.
        conn = sqlite3.connect(tmp_path / "state.sqlite3", timeout=5, check_same_thread=False, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        held.append(conn)
        accepted.set()

    mail.handler.before_accept = hold_the_state_store
    running = processes.start("run", env=env, cwd=tmp_path)
    try:
        assert accepted.wait(30), "the message never reached the server"
        time.sleep(0.5)  # ctpoller has its 250 and waits for the state store
        processes.kill(running)
    finally:
        for conn in held:
            conn.rollback()
            conn.close()
    mail.handler.before_accept = None
    view = state_view(env["CTPOLLER_STATE_URL"])
    assert view.integrity == "ok" and len(view.unsent_ids) == 1

    ctpoller("run", env=env, cwd=tmp_path).assert_ok()
    ids = message_ids(mail.handler.delivered)
    assert ids == view.unsent_ids * 2, "exactly one duplicate, with the same Message-ID"
    first, second = (parse(d.content) for d in mail.handler.delivered)
    for header in ("Subject", "Date", "To", "From"):
        assert first[header] == second[header], f"the re-sent message has another {header}"
    assert body(first) == body(second), "the re-sent message says the same"
    assert state_view(env["CTPOLLER_STATE_URL"]).outbox == {"sent": 1}


def _record_history(state_url: str, start: int, count: int, per_message: int = 5) -> None:
    """Recorded notifications (as ``backfill --no-email`` leaves them), written straight into the store."""
    state = StateStore(state_url)
    try:
        state.ensure_schema()
        messages = [
            NewMessage(
                message_id=f"<history.{number}@hospital.example>",
                study_uid=f"1.2.826.0.1.3680043.10.99.{number}",
                recipients=("physics@hospital.example",),
                notifications=tuple(
                    Notification(
                        study_uid=f"1.2.826.0.1.3680043.10.99.{number}",
                        rule="Body CTDIvol",
                        metric="ctdivol",
                        event_key=f"1.2.826.0.1.3680043.10.99.{number}.2.{event}",
                        value=Decimal("60.25"),
                        limit=Decimal(50),
                        unit="mGy",
                        protocol="Thorax routine",
                        description="Thorax^Routine (Adult)",
                    )
                    for event in range(per_message)
                ),
                status="not_sent",
            )
            for number in range(start, start + count)
        ]
        state.commit_cycle(CycleWrite(messages=messages), datetime.now(UTC))
    finally:
        state.dispose()


def _archive_write_started(process: subprocess.Popen[str], directory: Path) -> float:
    """Wait until the run has begun writing the archive (its temporary file exists) or has ended; when."""
    wait_for(
        lambda: process.poll() is not None or any(directory.glob(".archive-*.xlsx.*.tmp")),
        60,
        "the archive's temporary file",
        interval=0.005,
    )
    return time.monotonic()


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def test_run_killed_while_writing_the_archive_never_leaves_a_partial_or_missing_archive(
    openrem_db, mail, processes, tmp_path
):
    env = base_env(tmp_path, source_url=openrem_db, smtp_port=mail.port)
    archive = year_workbook(tmp_path / "archive.xlsx")
    initialise_state(env["CTPOLLER_STATE_URL"])
    _record_history(env["CTPOLLER_STATE_URL"], 0, 600)
    writing = processes.start("run", env=env, cwd=tmp_path)
    began = _archive_write_started(writing, tmp_path)
    processes.finish(writing).assert_ok()
    window = time.monotonic() - began  # from the temporary file to the end of the run
    expected = 3000
    assert len(archive_rows(archive)) == expected
    valid = {_digest(archive): expected}  # every archive seen, and how many rows it held

    outcomes = {"old": 0, "new": 0}
    chooser = random.Random(20260302)
    for attempt in range(7):
        _record_history(env["CTPOLLER_STATE_URL"], 1000 + attempt, 1)  # one more row: the archive is due
        expected += 5
        running = processes.start("run", env=env, cwd=tmp_path)
        _archive_write_started(running, tmp_path)
        time.sleep(chooser.uniform(0, window))
        processes.kill(running)
        digest = _digest(archive)
        assert digest is not None, "the archive disappeared"
        if digest not in valid:
            valid[digest] = len(archive_rows(archive))  # raises unless it is a complete workbook
            assert valid[digest] == expected, "the archive was replaced by an incomplete one"
        outcomes["new" if valid[digest] == expected else "old"] += 1

    assert outcomes["old"] > 0, f"no kill landed while the archive was being written: {outcomes}"
    ctpoller("run", env=env, cwd=tmp_path).assert_ok()
    assert len(archive_rows(archive)) == expected, "the next run rebuilds the archive with every row"
    assert state_view(env["CTPOLLER_STATE_URL"]).integrity == "ok"
    assert mail.handler.delivered == []


def test_two_exams_and_a_kill_during_sending_still_deliver_each_exam_exactly_once(
    openrem_db, openrem, mail, processes, tmp_path
):
    """Killed while the server holds the first of two messages: both are delivered once by the next run."""
    env = base_env(tmp_path, source_url=openrem_db, smtp_port=mail.port)
    env["CTPOLLER_SMTP_TIMEOUT"] = "60"
    initialise_state(env["CTPOLLER_STATE_URL"])
    openrem.import_study(GE_VCT)
    openrem.import_study(SIEMENS_FLASH_QA)
    mail.handler.hang = 30
    running = processes.start("run", env=env, cwd=tmp_path)
    assert mail.handler.data_arrived.wait(30)
    processes.kill(running)
    mail.handler.hang = 0

    ctpoller("run", env=env, cwd=tmp_path).assert_ok()
    ids = message_ids(mail.handler.delivered)
    assert len(ids) == 2 and len(set(ids)) == 2
    assert state_view(env["CTPOLLER_STATE_URL"]).outbox == {"sent": 2}


def test_runs_killed_at_random_moments_lose_nothing_and_repeat_at_most_the_message_in_flight(
    openrem_db, openrem, mail, processes, tmp_path
):
    """A new exam before each run, each run SIGKILLed at a random moment (or finishing first); then one
    clean run. Every exam is notified, every copy of an exam's email has the same Message-ID, and there
    are no more extra copies than kills."""
    env = base_env(tmp_path, source_url=openrem_db, smtp_port=mail.port)
    initialise_state(env["CTPOLLER_STATE_URL"])
    chooser = random.Random(7)
    uids, kills = [], 0
    for attempt in range(8):
        uid = f"1.2.826.0.1.3680043.10.555.{attempt}"
        uids.append(uid)
        openrem.import_study(as_another_exam(GE_VCT, uid))
        running = processes.start("run", env=env, cwd=tmp_path)
        time.sleep(chooser.uniform(0.3, 1.5))
        if running.poll() is None:
            kills += 1
        processes.kill(running)
        assert state_view(env["CTPOLLER_STATE_URL"]).integrity == "ok"
        archive = year_workbook(tmp_path / "archive.xlsx")
        if archive.exists():
            archive_rows(archive)  # a complete workbook whenever it exists

    ctpoller("run", env=env, cwd=tmp_path).assert_ok()

    assert kills > 0
    told = study_uids(mail.handler.delivered)
    assert set(told) == set(uids), "an exam was never notified"
    by_exam: dict[str, set[str]] = {}
    for uid, message_id in zip(told, message_ids(mail.handler.delivered), strict=True):
        by_exam.setdefault(uid, set()).add(message_id)
    assert all(len(ids) == 1 for ids in by_exam.values()), "a repeated email with another Message-ID"
    assert len(told) - len(uids) <= kills
    view = state_view(env["CTPOLLER_STATE_URL"])
    assert view.outbox == {"sent": len(uids)} and not view.archive_due
    assert len(archive_rows(year_workbook(tmp_path / "archive.xlsx"))) == 2 * len(uids)
