"""ctpoller reading a real hot-standby replica: a throwaway primary and standby from local binaries."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

import pg
from ctpoller.demo.exams import GE_OPTIMA, GE_VCT
from ctpoller.demo.openrem import OpenremImporter

from .poller_harness import SETTLE, Harness, Inbox, free_port, start_smtp

pytestmark = [pytest.mark.postgres, pytest.mark.smtp]


@pytest.fixture(scope="module")
def primary_and_standby() -> Iterator[tuple[str, str]]:
    bindir, problem = pg._local_bindir()
    if bindir is None:
        if pg.postgres_required():
            pytest.fail(f"cannot build a primary and a standby: {problem}", pytrace=False)
        pytest.skip(f"cannot build a primary and a standby: {problem}")
    tmp = Path(tempfile.mkdtemp(prefix="ctpoller-standby-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(tmp, user.pw_uid, user.pw_gid)
        as_postgres = ["runuser", "-u", "postgres", "--"]
    primary, standby = tmp / "primary", tmp / "standby"
    ports = free_port(), free_port()

    def run(*args: str) -> None:
        subprocess.run([*as_postgres, *args], cwd=tmp, check=True, capture_output=True, text=True, timeout=120)

    def start(data: Path, port: int) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {tmp} -c fsync=off"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(data) + ".log", "-w", "-t", "60", "-o", options, "start")

    try:
        run(str(bindir / "initdb"), "-D", str(primary), "-A", "trust", "-U", "postgres", "--no-sync")
        start(primary, ports[0])
        run(
            str(bindir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(ports[0]), "-U", "postgres",
            "-D", str(standby), "-R", "-X", "stream",
        )  # fmt: skip
        start(standby, ports[1])
        admin = f"postgresql://postgres@127.0.0.1:{ports[0]}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE openrem")
        url = "postgresql+psycopg://postgres@127.0.0.1:{}/openrem"
        pg.run_sql_file(url.format(ports[0]), pg.SUBSET_SQL)
        yield url.format(ports[0]), url.format(ports[1])
    finally:
        for data in (standby, primary):
            with contextlib.suppress(Exception):
                run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(tmp, ignore_errors=True)


def replayed(primary: str, standby: str) -> None:
    """Wait until the standby has replayed everything the primary wrote so far."""
    with psycopg.connect(pg.libpq_url(primary), autocommit=True) as conn:
        target = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    deadline = time.monotonic() + 30
    with psycopg.connect(pg.libpq_url(standby), autocommit=True) as conn:
        while time.monotonic() < deadline:
            done = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (str(target),)).fetchone()[0]
            if done:
                return
            time.sleep(0.1)
    raise AssertionError("the standby did not catch up within 30 s")


def test_ctpoller_reads_a_hot_standby_and_reports_its_lag(primary_and_standby, tmp_path):
    primary, standby = primary_and_standby
    engine = sa.create_engine(primary)
    openrem = OpenremImporter(engine)
    openrem.import_study(GE_OPTIMA)
    inbox = Inbox()
    controller, port = start_smtp(inbox)
    try:
        rules = '[defaults]\nrecipients = ["p@h.example"]\n[[rule]]\nname = "Body"\nphantom = "body"\nctdivol = 50\n'
        harness = Harness(standby, f"sqlite:///{tmp_path / 's.sqlite3'}", rules, port, tmp_path)
        replayed(primary, standby)
        assert harness.cycle().initialised
        openrem.import_study(GE_VCT)
        replayed(primary, standby)
        seen = harness.cycle(after=timedelta(seconds=1))
        assert seen.source_lag_seconds is not None and seen.source_lag_seconds >= 0
        done = harness.cycle(after=SETTLE + timedelta(seconds=1))
        assert [m.study_uid for m in done.messages] == [GE_VCT.uid]
        assert done.watermark_after == 2  # the snapshot check works on a standby too
        assert len(inbox.messages) == 1
    finally:
        controller.stop()
        engine.dispose()
