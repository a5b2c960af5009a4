"""A throwaway primary and hot standby from local binaries, shared by the tests that need a cluster
of their own (replication, or logins that need a password: the shared test server trusts everyone)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

import pg

from .poller_harness import free_port

#: A role of the primary that must give a password (SCRAM) to log in over TCP.
PASSWORD_ROLE = "ctpoller_with_password"
PASSWORD = "s3cret-for-tests"


@dataclass(frozen=True)
class Cluster:
    primary: str  # postgresql+psycopg:// URL of the database "openrem" on the primary
    standby: str  # the same database on the hot standby

    def url(self, *, user: str, database: str = "openrem", standby: bool = False) -> str:
        """A URL of this cluster for another role or database (no password in it)."""
        port = (self.standby if standby else self.primary).split(":")[-1].split("/")[0]
        return f"postgresql://{user}@127.0.0.1:{port}/{database}"


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
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
        # One role must log in with a password; first match wins, so this line goes first.
        hba = primary / "pg_hba.conf"  # rewritten in place: it keeps its owner
        hba.write_text(f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        start(primary, ports[0])
        run(
            str(bindir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(ports[0]), "-U", "postgres",
            "-D", str(standby), "-R", "-X", "stream",
        )  # fmt: skip
        start(standby, ports[1])
        admin = f"postgresql://postgres@127.0.0.1:{ports[0]}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE openrem")
            conn.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD}'")
        url = "postgresql+psycopg://postgres@127.0.0.1:{}/openrem"
        pg.run_sql_file(url.format(ports[0]), pg.SUBSET_SQL)
        replayed(url.format(ports[0]), url.format(ports[1]))
        yield Cluster(url.format(ports[0]), url.format(ports[1]))
    finally:
        for data in (standby, primary):
            with contextlib.suppress(Exception):
                run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(tmp, ignore_errors=True)


def replayed(primary: str, standby: str) -> None:
    """Wait until the standby has replayed everything the primary wrote so far."""
    with psycopg.connect(pg.libpq_url(primary), autocommit=True) as conn:
        target = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
    deadline = time.monotonic() + 30
    # Its "postgres" database: one created on the primary may not be there yet.
    with psycopg.connect(pg.libpq_url(standby).rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        while time.monotonic() < deadline:
            done = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (str(target[0]),)).fetchone()
            if done and done[0]:
                return
            time.sleep(0.1)
    raise AssertionError("the standby did not catch up within 30 s")


@pytest.fixture(scope="session")
def primary_and_standby(cluster: Cluster) -> tuple[str, str]:
    return cluster.primary, cluster.standby
