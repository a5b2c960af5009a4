"""The real ctpoller process when a database fails under it, or the disk fills up.

Every failure is temporary (exit 75) with one line naming what failed; nothing undone is marked done
(the watermark does not move past it, the archive stays due), and the next normal run delivers and
archives everything exactly once.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from ctpoller.demo.exams import GE_VCT, SIEMENS_FLASH_QA
from support import pg
from support.ports import free_port
from support.process import EXIT_PERMANENT, EXIT_TEMPORARY, base_env, ctpoller, wait_for
from support.smtp import message_ids
from support.workbooks import year_workbook

from .harness import COLUMN, archive_rows, blocked_ctpoller_backend, initialise_state, state_view, table_locked

pytestmark = [pytest.mark.reliability, pytest.mark.postgres, pytest.mark.smtp]


def test_source_connection_terminated_mid_query_is_temporary_and_the_next_run_notifies_once(
    openrem_db, openrem, mail, processes, tmp_path
):
    env = base_env(tmp_path, source_url=openrem_db, smtp_port=mail.port)
    initialise_state(env["CTPOLLER_STATE_URL"])
    openrem.import_study(GE_VCT)

    with table_locked(openrem_db, "remapp_ctirradiationeventdata"):
        running = processes.start("run", env=env, cwd=tmp_path)
        pid = wait_for(lambda: blocked_ctpoller_backend(openrem_db), 30, "ctpoller to block on the locked table")
        with psycopg.connect(pg.libpq_url(openrem_db), autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        terminated = processes.finish(running)

    terminated.assert_failed(EXIT_TEMPORARY, "OpenREM database", "terminating connection")
    view = state_view(env["CTPOLLER_STATE_URL"])
    assert view.integrity == "ok" and view.watermark == 0 and view.outbox == {}
    assert mail.handler.delivered == []

    ctpoller("run", env=env, cwd=tmp_path).assert_ok()
    assert len(mail.handler.delivered) == 1
    assert state_view(env["CTPOLLER_STATE_URL"]).outbox == {"sent": 1}


def test_statement_timeout_while_openrem_is_locked_is_temporary_and_names_the_setting(
    openrem_db, openrem, mail, tmp_path
):
    env = base_env(tmp_path, source_url=openrem_db, smtp_port=mail.port)
    env["CTPOLLER_STATEMENT_TIMEOUT_SECONDS"] = "1"
    initialise_state(env["CTPOLLER_STATE_URL"])
    openrem.import_study(GE_VCT)

    with table_locked(openrem_db, "remapp_ctirradiationeventdata"):
        timed_out = ctpoller("run", env=env, cwd=tmp_path, timeout=30)

    timed_out.assert_failed(EXIT_TEMPORARY, "statement timeout", "CTPOLLER_STATEMENT_TIMEOUT_SECONDS")
    view = state_view(env["CTPOLLER_STATE_URL"])
    assert view.watermark == 0 and view.outbox == {} and mail.handler.delivered == []
    ctpoller("run", env=env, cwd=tmp_path).assert_ok()
    assert len(mail.handler.delivered) == 1


def test_unreachable_openrem_is_temporary_and_changes_nothing(openrem_db, openrem, mail, tmp_path):
    env = base_env(tmp_path, source_url=openrem_db, smtp_port=mail.port)
    initialise_state(env["CTPOLLER_STATE_URL"])
    openrem.import_study(GE_VCT)
    before = state_view(env["CTPOLLER_STATE_URL"])

    closed = f"postgresql://ctpoller:s3cret-pw@127.0.0.1:{free_port()}/openrem"

    down = ctpoller("run", env={**env, "CTPOLLER_SOURCE_URL": closed}, cwd=tmp_path)

    down.assert_failed(EXIT_TEMPORARY, "OpenREM database 127.0.0.1:", "CTPOLLER_SOURCE_URL")
    assert "s3cret-pw" not in down.stderr + down.stdout
    assert state_view(env["CTPOLLER_STATE_URL"]) == before
    ctpoller("run", env=env, cwd=tmp_path).assert_ok()
    assert len(mail.handler.delivered) == 1


def test_unreachable_postgresql_state_store_is_temporary_and_sends_nothing(
    openrem_db, state_pg_url, openrem, mail, tmp_path
):
    env = base_env(tmp_path, source_url=openrem_db, smtp_port=mail.port)
    env["CTPOLLER_STATE_URL"] = state_pg_url
    initialise_state(state_pg_url)
    openrem.import_study(GE_VCT)

    down = ctpoller(
        "run", env={**env, "CTPOLLER_STATE_URL": f"postgresql://ctpoller@127.0.0.1:{free_port()}/state"}, cwd=tmp_path
    )

    down.assert_failed(EXIT_TEMPORARY, "state store 127.0.0.1:")
    assert mail.handler.delivered == []
    ctpoller("run", env=env, cwd=tmp_path).assert_ok()
    assert len(mail.handler.delivered) == 1
    assert state_view(state_pg_url).outbox == {"sent": 1}


def test_a_postgresql_state_store_refusing_the_login_or_missing_is_for_a_person_and_names_the_setting(
    openrem_db, state_pg_url, openrem, mail, tmp_path
):
    env = base_env(tmp_path, source_url=openrem_db, smtp_port=mail.port)
    server = sa.engine.make_url(state_pg_url)
    openrem.import_study(GE_VCT)
    for wrong in (
        server.set(drivername="postgresql", username="no_such_role_ctp"),
        server.set(drivername="postgresql", database="no_such_database_ctp"),
    ):
        refused = ctpoller("run", env={**env, "CTPOLLER_STATE_URL": wrong.render_as_string()}, cwd=tmp_path)
        refused.assert_failed(EXIT_PERMANENT, "state store", "check CTPOLLER_STATE_URL")
    assert mail.handler.delivered == []


@contextlib.contextmanager
def sqlite_write_locked(path: Path) -> Iterator[None]:
    """Another connection holds a write transaction on the state file (BEGIN IMMEDIATE)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
    finally:
        conn.rollback()
        conn.close()


def sleeping(pid: int) -> bool:
    """Whether the process sleeps in nanosleep: SQLite's busy handler waiting for the lock."""
    try:
        return "nanosleep" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False


def test_state_store_locked_by_another_writer_is_temporary_and_nothing_is_sent_twice(
    openrem_db, openrem, mail, processes, tmp_path
):
    env = base_env(tmp_path, source_url=openrem_db, smtp_port=mail.port)
    initialise_state(env["CTPOLLER_STATE_URL"])
    openrem.import_study(GE_VCT)

    with sqlite_write_locked(tmp_path / "state.sqlite3"):
        running = processes.start("run", env=env, cwd=tmp_path)
        wait_for(lambda: running.poll() is not None or sleeping(running.pid), 60, "ctpoller to wait or end")
        if running.poll() is None:
            # ctpoller waits to record its decisions, and SQLite gives up after its 10 s busy timeout.
            # Then the lock goes, so that recording how the run ended does not wait as long again.
            # (Without /proc/PID/wchan the lock is simply held until the run ends.)
            deadline = time.monotonic() + 11
            while running.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
    locked = processes.finish(running)

    locked.assert_failed(EXIT_TEMPORARY, "state store", "locked")
    assert mail.handler.delivered == [], "nothing is sent before the decision is recorded"
    view = state_view(env["CTPOLLER_STATE_URL"])
    assert view.integrity == "ok" and view.watermark == 0 and view.outbox == {}
    ctpoller("run", env=env, cwd=tmp_path).assert_ok()
    assert len(mail.handler.delivered) == 1


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs mounted for this test only (root needed; skipped when mounting is refused)."""
    mountpoint = tmp_path / "small-disk"
    mountpoint.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mountpoint)],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        pytest.skip(f"cannot mount a small tmpfs to fill up ({detail.strip()}): needs root and CAP_SYS_ADMIN")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, capture_output=True, timeout=30)


def fill(directory: Path, leave: int) -> Path:
    """Fill the file system of ``directory`` until at most ``leave`` bytes are free."""
    filler = directory / "filler"
    with open(filler, "wb") as f, contextlib.suppress(OSError):  # ENOSPC: full already
        while (free := os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize) > leave:
            f.write(b"\0" * min(4096, free - leave))
            f.flush()
    return filler


def test_disk_full_while_writing_the_archive_keeps_the_old_archive_and_the_next_run_completes_it(
    openrem_db, openrem, mail, small_disk, tmp_path
):
    env = base_env(tmp_path, source_url=openrem_db, smtp_port=mail.port)
    env["CTPOLLER_ARCHIVE_PATH"] = str(small_disk / "archive.xlsx")
    archive = year_workbook(small_disk / "archive.xlsx")
    initialise_state(env["CTPOLLER_STATE_URL"])
    openrem.import_study(GE_VCT)
    ctpoller("run", env=env, cwd=tmp_path).assert_ok()
    old = archive.read_bytes()
    assert len(archive_rows(archive)) == 2

    filler = fill(small_disk, leave=1024)
    openrem.import_study(SIEMENS_FLASH_QA)
    full = ctpoller("run", env=env, cwd=tmp_path)
    again = ctpoller("run", env=env, cwd=tmp_path)

    for result in (full, again):
        result.assert_completed_with_problems(EXIT_TEMPORARY, "cannot write the archive", "CTPOLLER_ARCHIVE_PATH")
    assert archive.read_bytes() == old, "the old archive is left intact"
    assert sorted(p.name for p in small_disk.iterdir()) == [archive.name, "filler"], "no temporary file left"
    view = state_view(env["CTPOLLER_STATE_URL"])
    assert view.archive_due and view.outbox == {"sent": 2} and view.integrity == "ok"
    assert len(mail.handler.delivered) == 2, "the email does not wait for the archive, and is sent once"

    filler.unlink()
    ctpoller("run", env=env, cwd=tmp_path).assert_ok()
    assert [row[COLUMN["status"]] for row in archive_rows(archive)] == ["sent"] * 4
    assert not state_view(env["CTPOLLER_STATE_URL"]).archive_due
    assert len(set(message_ids(mail.handler.delivered))) == 2


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_file_size_limit_while_writing_the_archive_is_temporary_and_the_next_run_completes_it(
    openrem_db, state_pg_url, openrem, mail, tmp_path
):
    """The same promise with RLIMIT_FSIZE (EFBIG); the state store is PostgreSQL, so only files are limited."""
    env = base_env(tmp_path, source_url=openrem_db, smtp_port=mail.port)
    env["CTPOLLER_STATE_URL"] = state_pg_url
    initialise_state(state_pg_url)
    openrem.import_study(GE_VCT)

    limited = ctpoller("run", env=env, cwd=tmp_path, preexec_fn=_file_size_limit(2048))

    limited.assert_completed_with_problems(EXIT_TEMPORARY, "cannot write the archive")
    archive = year_workbook(tmp_path / "archive.xlsx")
    assert not list(tmp_path.glob("archive*.xlsx")) and not list(tmp_path.glob(".archive*.xlsx.*"))
    view = state_view(state_pg_url)
    assert view.archive_due and view.outbox == {"sent": 1} and view.watermark is not None
    ctpoller("run", env=env, cwd=tmp_path).assert_ok()
    assert len(archive_rows(archive)) == 2 and len(mail.handler.delivered) == 1


def test_a_failed_archive_write_prints_no_traceback(openrem_db, state_pg_url, openrem, mail, tmp_path):
    env = base_env(tmp_path, source_url=openrem_db, smtp_port=mail.port)
    env["CTPOLLER_STATE_URL"] = state_pg_url
    initialise_state(state_pg_url)
    openrem.import_study(GE_VCT)

    limited = ctpoller("run", env=env, cwd=tmp_path, preexec_fn=_file_size_limit(2048))

    assert "cannot write the archive" in limited.stderr
    limited.assert_completed_with_problems(EXIT_TEMPORARY, "cannot write the archive")


@pytest.mark.parametrize("probe", ["pg_current_snapshot", "pg_sequence_last_value"])
def test_openrem_lost_while_its_features_are_probed_is_temporary_not_a_missing_feature(openrem_db, probe, caplog):
    """The snapshot probe guards against late commits of lower pks, the sequence probe against taking
    deleted studies for a restore: a connection lost during either must stop the run (exit 75),
    never turn the guard off for the run."""

    from ctpoller.errors import SourceError
    from ctpoller.openrem.source import OpenremSource

    source = OpenremSource(openrem_db)
    terminated: list[int] = []

    def terminate_at_the_probe(conn, _cursor, statement, *_args) -> None:
        if probe in statement and not terminated:
            terminated.append(conn.connection.dbapi_connection.info.backend_pid)
            with psycopg.connect(pg.libpq_url(openrem_db), autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (terminated[-1],))

    sa.event.listen(source.engine, "before_cursor_execute", terminate_at_the_probe)
    try:
        with pytest.raises(SourceError) as lost:
            source.connect()
        assert lost.value.temporary, str(lost.value)
        assert "OpenREM database" in str(lost.value) and "checking what the server offers" in str(lost.value)
        assert terminated and not source.tables
        assert not [r for r in caplog.records if r.levelname == "WARNING"]
        source.connect()  # the next run: the server answers, and both guards are on
        assert source.supports_snapshot and source.study_sequence is not None
    finally:
        source.dispose()
