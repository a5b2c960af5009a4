"""PostgreSQL for the tests: one server for the session, throwaway databases on it, and a primary with
a hot standby of its own; their fixtures (registered by tests/conftest.py) and the pytest header line.

The session's server, in order of preference:

(a) ``CTPOLLER_TEST_DATABASE_URL``: a server-level URL such as ``postgresql://postgres@127.0.0.1:5432/postgres``
    (the tests create and drop their own databases on it);
(b) testcontainers ``postgres:15`` when a Docker engine answers;
(c) a throwaway cluster from local server binaries (``initdb``/``pg_ctl`` on PATH or under
    /usr/lib/postgresql/*/bin), run as the ``postgres`` OS user when we are root, on 127.0.0.1 and a
    free port, removed at the end of the session;
(d) none: tests that need PostgreSQL fail under CI (or ``CTPOLLER_REQUIRE_POSTGRES=1``) and skip elsewhere.

The primary and hot standby (``cluster``) are always built from local binaries: replication, and logins
that need a password (the session's server trusts everyone), need a cluster of their own.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from ctpoller.demo.openrem import OpenremImporter

from .ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
SUBSET_SQL = REPO_ROOT / "sql" / "openrem_subset.sql"
#: OpenREM's real CT schema and the rows its own importers wrote for its CT test files (tests/data/openrem).
OPENREM_DATA = REPO_ROOT / "tests" / "data" / "openrem"

URL_VARIABLE = "CTPOLLER_TEST_DATABASE_URL"
REQUIRE_VARIABLE = "CTPOLLER_REQUIRE_POSTGRES"
HOW_TO_PROVIDE = (
    f"set {URL_VARIABLE}=postgresql://postgres@127.0.0.1:5432/postgres, start a Docker engine, "
    "or install the PostgreSQL server binaries (initdb, pg_ctl)"
)


def postgres_required() -> bool:
    """Whether a missing server must fail: under CI (not 'false'/'0') or CTPOLLER_REQUIRE_POSTGRES=1."""
    ci = os.environ.get("CI", "").strip().lower()
    return (ci not in ("", "false", "0")) or os.environ.get(REQUIRE_VARIABLE, "").strip() == "1"


def sqlalchemy_url(url: str) -> str:
    """The same URL with the psycopg 3 driver, as SQLAlchemy needs it."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """The same URL without a SQLAlchemy driver suffix, for psycopg.connect() and psql."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def without_password(url: str) -> str:
    return make_url(url)._replace(password=None).render_as_string(hide_password=False)


def split_sql(script: str) -> list[str]:
    """Statements of a plain SQL file: comment lines dropped, split at semicolons that end a line."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    statements = re.split(r";[ \t]*$", "\n".join(lines), flags=re.MULTILINE)
    return [statement.strip() for statement in statements if statement.strip()]


def run_sql_file(url: str, path: Path) -> None:
    """Execute ``path`` statement by statement through SQLAlchemy, in one transaction."""
    engine = create_engine(sqlalchemy_url(url), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            for statement in split_sql(path.read_text(encoding="utf-8")):
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


@dataclass
class PgServer:
    """A PostgreSQL server the tests may create databases on."""

    admin_url: str  # postgresql+psycopg://…/postgres (a superuser)
    description: str  # for the pytest header: never contains a password
    _stop: Callable[[], None] = field(default=lambda: None, repr=False)

    def create_database(self, prefix: str) -> str:
        """Create an empty database named ``<prefix><random>``; return its SQLAlchemy URL."""
        name = f"{prefix}{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        name = make_url(url).database
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def check(self) -> None:
        """Raise if the server does not answer."""
        self._admin("SELECT 1")

    def stop(self) -> None:
        self._stop()

    def _admin(self, statement: str) -> None:
        engine = create_engine(self.admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(statement))
        finally:
            engine.dispose()


# --- choosing a server (cheap; nothing is started here) ------------------------------------------


@dataclass(frozen=True)
class Plan:
    kind: str  # "url" | "testcontainers" | "local" | "none"
    detail: str  # the URL (no password), the bin dir, or why there is none

    def describe(self) -> str:
        return {
            "url": f"{URL_VARIABLE} ({self.detail})",
            "testcontainers": "testcontainers postgres:15",
            "local": f"local cluster from {self.detail}",
        }.get(self.kind, f"none: {self.detail}")


def plan() -> Plan:
    url = os.environ.get(URL_VARIABLE, "").strip()
    if url:
        return Plan("url", without_password(sqlalchemy_url(url)))
    docker_problem = _docker_problem()
    if docker_problem is None:
        return Plan("testcontainers", "postgres:15")
    bindir, local_problem = _local_bindir()
    if bindir is not None:
        return Plan("local", str(bindir))
    return Plan("none", f"{URL_VARIABLE} is not set, {docker_problem}, {local_problem}")


def _docker_problem() -> str | None:
    """None when a Docker engine answers a ping within a few seconds, else why not."""
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return "no Docker engine (no DOCKER_HOST, no /var/run/docker.sock)"
    try:
        import docker  # type: ignore[import-untyped]  # comes with testcontainers
    except ImportError:
        return "the docker package is not installed"
    # docker-py leaves a socket open when the engine does not answer: collect it here, quietly,
    # rather than let it surface later as an unraisable ResourceWarning inside some test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env(timeout=3)
            try:
                client.ping()
            finally:
                client.close()
        except Exception as e:
            return f"no Docker engine answers ({type(e).__name__})"
        finally:
            gc.collect()
    return None


def _local_bindir() -> tuple[Path | None, str]:
    candidates: list[Path] = []
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).resolve().parent)
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(versions)
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            if os.geteuid() == 0 and not _has_postgres_user():
                return None, f"running as root and there is no 'postgres' OS user to run {bindir}/initdb"
            return bindir, ""
    return None, "no initdb/pg_ctl on PATH or under /usr/lib/postgresql/*/bin"


def _has_postgres_user() -> bool:
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return True


# --- starting one ---------------------------------------------------------------------------------


class NoServer(Exception):
    """No PostgreSQL could be provided; the message says why, in one line."""


def start(chosen: Plan) -> PgServer:
    if chosen.kind == "url":
        server = PgServer(sqlalchemy_url(os.environ[URL_VARIABLE].strip()), chosen.describe())
        try:
            server.check()
        except Exception as e:
            raise NoServer(f"{URL_VARIABLE} does not answer: {type(e).__name__}: {_first_line(e)}") from e
        return server
    if chosen.kind == "testcontainers":
        try:
            return _start_container()
        except NoServer as e:  # e.g. the engine answers but cannot pull the image: try local binaries
            bindir, local_problem = _local_bindir()
            if bindir is None:
                raise NoServer(f"{e}, {local_problem}") from e
            return _start_local_cluster(bindir)
    if chosen.kind == "local":
        return _start_local_cluster(Path(chosen.detail))
    raise NoServer(chosen.detail)


def _start_container() -> PgServer:
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # older testcontainers
        from testcontainers.postgres import PostgresContainer
    # testcontainers' own deprecations are not ours to fix, and docker-py leaks a socket when it
    # fails: collect it here (after the exception is gone), quietly.
    problem = ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            container = PostgresContainer("postgres:15", driver="psycopg")
            container.start()
        except Exception as e:
            problem = f"testcontainers could not start postgres:15: {_first_line(e)}"
        gc.collect()
    if problem:
        raise NoServer(problem)
    url = container.get_connection_url()
    return PgServer(sqlalchemy_url(url), "testcontainers postgres:15", container.stop)


class _Binaries:
    """Server binaries run in a scratch directory: as the ``postgres`` OS user when we are root (initdb
    refuses root), every cluster listening on 127.0.0.1 only, with its socket in the scratch directory."""

    def __init__(self, bindir: Path, prefix: str) -> None:
        self.bindir = bindir
        self.tmp = Path(tempfile.mkdtemp(prefix=prefix))
        self.as_postgres: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.tmp, user.pw_uid, user.pw_gid)
            self.as_postgres = ["runuser", "-u", "postgres", "--"]

    def run(self, tool: str, *args: str) -> None:
        command = [*self.as_postgres, str(self.bindir / tool), *args]
        subprocess.run(command, cwd=self.tmp, check=True, capture_output=True, text=True, timeout=120)

    def start(self, data: Path, port: int, log: Path) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {self.tmp} -c fsync=off"
        self.run("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options, "start")

    def stop(self, *clusters: Path) -> None:
        """Stop the clusters (immediately: nothing in them is kept) and remove the scratch directory."""
        for data in clusters:
            with contextlib.suppress(Exception):
                self.run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.tmp, ignore_errors=True)


def _start_local_cluster(bindir: Path) -> PgServer:
    binaries = _Binaries(bindir, "ctpoller-pg-")
    data, log = binaries.tmp / "data", binaries.tmp / "server.log"
    port = free_port()

    def stop() -> None:
        binaries.stop(data)

    try:
        binaries.run(
            "initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"
        )
        binaries.start(data, port, log)
    except (subprocess.SubprocessError, OSError) as e:
        detail = e.stderr if isinstance(e, subprocess.CalledProcessError) else str(e)
        log_tail = log.read_text(errors="replace")[-300:] if log.exists() else ""
        stop()
        raise NoServer(
            f"could not start a local cluster from {bindir}: {_last_line(detail)} {_last_line(log_tail)}"
        ) from e
    server = PgServer(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", f"local cluster from {bindir}", stop)
    try:
        server.check()
    except Exception as e:
        stop()
        raise NoServer(f"the local cluster from {bindir} does not answer: {_first_line(e)}") from e
    return server


def _first_line(value: object) -> str:
    lines = [line.strip() for line in str(value).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _last_line(value: object) -> str:
    lines = [line.strip() for line in str(value).splitlines() if line.strip()]
    return lines[-1] if lines else ""


@contextlib.contextmanager
def throwaway_database(server: PgServer, prefix: str) -> Iterator[str]:
    url = server.create_database(prefix)
    try:
        yield url
    finally:
        server.drop_database(url)


# --- a primary and a hot standby of their own -----------------------------------------------------

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


def replayed(primary: str, standby: str) -> None:
    """Wait until the standby has replayed everything the primary wrote so far."""
    with psycopg.connect(libpq_url(primary), autocommit=True) as conn:
        target = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
    deadline = time.monotonic() + 30
    # Its "postgres" database: one created on the primary may not be there yet.
    with psycopg.connect(libpq_url(standby).rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        while time.monotonic() < deadline:
            done = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (str(target[0]),)).fetchone()
            if done and done[0]:
                return
            time.sleep(0.1)
    raise AssertionError("the standby did not catch up within 30 s")


# --- fixtures and the pytest header (registered by tests/conftest.py) -----------------------------

_PLAN = pytest.StashKey[Plan]()
_USED = pytest.StashKey[str]()


def _plan(config: pytest.Config) -> Plan:
    if _PLAN not in config.stash:
        config.stash[_PLAN] = plan()
    return config.stash[_PLAN]


def pytest_report_header(config: pytest.Config) -> str:
    required = " (required)" if postgres_required() else ""
    return f"PostgreSQL for tests{required}: {_plan(config).describe()}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if _USED in config.stash:
        terminalreporter.write_line(f"PostgreSQL used: {config.stash[_USED]}")


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> Iterator[PgServer]:
    """A PostgreSQL server (``.admin_url``, driver postgresql+psycopg) for the whole session."""
    try:
        server = start(_plan(request.config))
    except NoServer as e:
        message = f"no PostgreSQL for tests ({e}): {HOW_TO_PROVIDE}"
        if postgres_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    request.config.stash[_USED] = server.description
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def openrem_db(pg_server: PgServer) -> Iterator[str]:
    """A fresh database holding sql/openrem_subset.sql; yields its postgresql+psycopg:// URL."""
    with throwaway_database(pg_server, "ctp_src_") as url:
        run_sql_file(url, SUBSET_SQL)
        yield url


@pytest.fixture
def openrem(openrem_db: str) -> Iterator[OpenremImporter]:
    """Writes studies into ``openrem_db`` the way OpenREM's importers do."""
    engine = sa.create_engine(openrem_db)
    try:
        yield OpenremImporter(engine)
    finally:
        engine.dispose()


@pytest.fixture
def state_pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh empty database for ctpoller's own state; yields its postgresql+psycopg:// URL."""
    with throwaway_database(pg_server, "ctp_state_") as url:
        yield url


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """A throwaway primary and hot standby from local binaries, each holding the database "openrem"
    (sql/openrem_subset.sql), and a role (``PASSWORD_ROLE``) that must log in with ``PASSWORD``."""
    bindir, problem = _local_bindir()
    if bindir is None:
        if postgres_required():
            pytest.fail(f"cannot build a primary and a standby: {problem}", pytrace=False)
        pytest.skip(f"cannot build a primary and a standby: {problem}")
    binaries = _Binaries(bindir, "ctpoller-standby-")
    primary, standby = binaries.tmp / "primary", binaries.tmp / "standby"
    ports = free_port(), free_port()
    try:
        binaries.run("initdb", "-D", str(primary), "-A", "trust", "-U", "postgres", "--no-sync")
        # One role must log in with a password; first match wins, so this line goes first.
        hba = primary / "pg_hba.conf"  # rewritten in place: it keeps its owner
        hba.write_text(f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        binaries.start(primary, ports[0], Path(f"{primary}.log"))
        binaries.run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(ports[0]), "-U", "postgres",
            "-D", str(standby), "-R", "-X", "stream",
        )  # fmt: skip
        binaries.start(standby, ports[1], Path(f"{standby}.log"))
        admin = f"postgresql://postgres@127.0.0.1:{ports[0]}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE openrem")
            conn.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD}'")
        url = "postgresql+psycopg://postgres@127.0.0.1:{}/openrem"
        run_sql_file(url.format(ports[0]), SUBSET_SQL)
        replayed(url.format(ports[0]), url.format(ports[1]))
        yield Cluster(url.format(ports[0]), url.format(ports[1]))
    finally:
        binaries.stop(standby, primary)


@pytest.fixture(scope="session")
def primary_and_standby(cluster: Cluster) -> tuple[str, str]:
    return cluster.primary, cluster.standby
