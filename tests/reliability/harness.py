"""Driving the real ``ctpoller`` process in the reliability tests, and checking what it left behind.

Every process is started through ``Processes`` (a fixture in conftest.py) so that none outlives its
test. ``CompletedRun`` checks the promises every scenario ends with: the documented exit code, one
clear last line on stderr and never a traceback or an "internal error".
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import openpyxl
import psycopg
import sqlalchemy as sa

from ctpoller.store.store import StateStore

MAIL_FROM = "ctpoller@hospital.example"
PHYSICS = "physics@hospital.example"

#: GE_VCT (176.12 mGy body CTDIvol, 2002.39 mGy·cm total) and SIEMENS_FLASH_QA (65.47 mGy) exceed these.
RULES = f"""
[defaults]
recipients = ["{PHYSICS}"]

[[rule]]
name = "Body CTDIvol"
phantom = "body"
ctdivol = 50

[[rule]]
name = "Exam DLP"
dlp_total = 1000
"""

EXIT_OK, EXIT_PERMANENT, EXIT_CONFIG, EXIT_LOCKED, EXIT_TEMPORARY = 0, 1, 2, 3, 75


def base_env(tmp_path: Path, *, source_url: str | None = None, smtp_port: int | None = None) -> dict[str, str]:
    """Settings for one test's ctpoller: files under ``tmp_path``, no settle time, plain SMTP to 127.0.0.1."""
    rules = tmp_path / "rules.toml"
    if not rules.exists():
        rules.write_text(RULES, encoding="utf-8")
    scratch = tmp_path / "tmp"  # openpyxl's temporary files: never left in the system /tmp
    scratch.mkdir(exist_ok=True)
    env = {
        "CTPOLLER_RULES_FILE": str(rules),
        "CTPOLLER_STATE_URL": f"sqlite:///{tmp_path / 'state.sqlite3'}",
        "CTPOLLER_ARCHIVE_PATH": str(tmp_path / "archive.xlsx"),
        "CTPOLLER_MAIL_FROM": MAIL_FROM,
        "CTPOLLER_SETTLE_SECONDS": "0",
        "CTPOLLER_SMTP_SECURITY": "none",
        "CTPOLLER_SMTP_TIMEOUT": "10",
        "TMPDIR": str(scratch),
    }
    if source_url is not None:
        env["CTPOLLER_SOURCE_URL"] = source_url
    if smtp_port is not None:
        env["CTPOLLER_SMTP_HOST"] = "127.0.0.1"
        env["CTPOLLER_SMTP_PORT"] = str(smtp_port)
    return env


def process_env(env: dict[str, str]) -> dict[str, str]:
    """The real environment without any CTPOLLER_* of the developer's, plus ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CTPOLLER_")}
    for name in ("JOURNAL_STREAM", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        clean.pop(name, None)
    return {**clean, **env}


@dataclass
class CompletedRun:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def __str__(self) -> str:
        return f"ctpoller {' '.join(self.args)} -> {self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"

    def assert_no_crash(self) -> None:
        """No traceback, no internal error (an exception ctpoller did not expect), every line a log line."""
        assert "Traceback" not in self.stderr, str(self)
        assert "internal error" not in self.stderr, str(self)
        for line in self.lines:
            assert not line.startswith((" ", "\t")), f"a continuation line on stderr: {line!r}\n{self}"

    def assert_ok(self) -> CompletedRun:
        self.assert_no_crash()
        assert self.returncode == EXIT_OK, str(self)
        return self

    def assert_failed(self, code: int, *needles: str) -> str:
        """Exit ``code`` after an error: the last stderr line is ONE ``ctpoller: ...`` line naming the problem."""
        self.assert_no_crash()
        assert self.returncode == code, str(self)
        assert self.lines, str(self)
        last = self.lines[-1]
        assert last.startswith("ctpoller: "), f"the last line is not the error: {last!r}\n{self}"
        assert [line for line in self.lines if line.startswith("ctpoller: ")] == [last], str(self)
        for needle in needles:
            assert needle in last, f"{needle!r} not in {last!r}"
        return last

    def assert_completed_with_problems(self, code: int, *needles: str) -> str:
        """A run that did its work but not all of it (deferred, failed): the summary line says so last,
        and an ERROR line before it names the cause."""
        self.assert_no_crash()
        assert self.returncode == code, str(self)
        last = self.lines[-1]
        assert "run with problems:" in last, str(self)
        errors = [line for line in self.lines if " ERROR " in line]
        assert errors, str(self)
        for needle in needles:
            assert any(needle in line for line in errors), f"{needle!r} in no ERROR line\n{self}"
        return last


def run(
    *args: str,
    env: dict[str, str],
    cwd: Path,
    timeout: float = 90,
    preexec_fn: Callable[[], None] | None = None,
) -> CompletedRun:
    """Run ``python -m ctpoller ARGS`` to the end."""
    result = subprocess.run(
        [sys.executable, "-m", "ctpoller", *args],
        env=process_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        preexec_fn=preexec_fn,
    )
    return CompletedRun(tuple(args), result.returncode, result.stdout, result.stderr)


@dataclass
class Processes:
    """Starts ctpoller processes in the background and makes sure none survives the test."""

    started: list[subprocess.Popen[str]] = field(default_factory=list)

    def start(self, *args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "ctpoller", *args],
            env=process_env(env),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.started.append(process)
        return process

    @staticmethod
    def finish(process: subprocess.Popen[str], timeout: float = 90) -> CompletedRun:
        stdout, stderr = process.communicate(timeout=timeout)
        args = tuple(str(a) for a in process.args[3:])  # type: ignore[index]
        return CompletedRun(args, process.returncode, stdout, stderr)

    @staticmethod
    def kill(process: subprocess.Popen[str]) -> None:
        """SIGKILL: no handler, no cleanup, exactly like a power cut for the process."""
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)

    def cleanup(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=30)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# -- what was delivered -------------------------------------------------------------------------------


def parse(content: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def message_ids(delivered: Iterable[Any]) -> list[str]:
    return [str(parse(d.content)["Message-ID"]).strip() for d in delivered]


def study_uids(delivered: Iterable[Any]) -> list[str]:
    """The Study Instance UID each delivered email tells about (from its "Study Instance UID:" line)."""
    found = []
    for d in delivered:
        lines = [line.strip() for line in body(parse(d.content)).splitlines()]
        found.append(next(line.split(": ", 1)[1] for line in lines if line.startswith("Study Instance UID:")))
    return found


def body(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    text = part.get_content()
    assert isinstance(text, str)
    return text


# -- the state store and the archive ------------------------------------------------------------------


@dataclass
class StateView:
    """What the state store holds (``state_view`` fails unless its integrity check says "ok")."""

    watermark: int | None
    outbox: dict[str, int]  # status -> count
    integrity: str
    unsent_ids: list[str]  # Message-IDs recorded but neither sent nor failed (pending, or claimed by a dead run)
    archive_due: bool


def initialise_state(state_url: str, watermark: int = 0) -> None:
    """What the first ``ctpoller run`` does against an empty OpenREM (saves a process per test)."""
    state = StateStore(state_url)
    try:
        state.ensure_schema()
        assert state.initialise(watermark, datetime.now(UTC))
    finally:
        state.dispose()


def state_view(state_url: str) -> StateView:
    state = StateStore(state_url)
    try:
        state.ensure_schema()
        with state.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT message_id, status FROM ctp_message ORDER BY id")).all()
        integrity = state.integrity_check()
        assert integrity == "ok", f"the state store is damaged: {integrity}"
        return StateView(
            watermark=state.watermark(),
            outbox=dict(Counter(status for _, status in rows)),
            integrity=integrity,
            unsent_ids=[mid for mid, status in rows if status not in ("sent", "failed", "not_sent")],
            archive_due=state.archive_due(),
        )
    finally:
        state.dispose()


def archive_rows(path: Path) -> list[tuple[Any, ...]]:
    """Every row of the archive below the header; fails if the file is not a complete workbook."""
    workbook = openpyxl.load_workbook(path, read_only=True)
    try:
        rows = list(workbook.active.iter_rows(values_only=True))
    finally:
        workbook.close()
    assert rows and rows[0][0] == "Notified at (UTC)", "the archive has no header row"
    return rows[1:]


def archive_cells(path: Path) -> Iterator[Any]:
    """Every cell of the archive (openpyxl cells, with ``data_type``)."""
    workbook = openpyxl.load_workbook(path)
    try:
        for row in workbook.active.iter_rows():
            yield from row
    finally:
        workbook.close()


COLUMN = {
    name: index
    for index, name in enumerate(
        (
            "notified_at",
            "study_date",
            "study_time",
            "station",
            "display_name",
            "accession",
            "description",
            "protocol",
            "rule",
            "metric",
            "value",
            "limit",
            "unit",
            "ratio",
            "previous",
            "status",
            "sent_at",
            "error",
            "message_id",
            "study_uid",
            "event",
        )
    )
}


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@contextlib.contextmanager
def table_locked(url: str, table: str) -> Iterator[None]:
    """Hold ACCESS EXCLUSIVE on an OpenREM table (as a long ALTER or VACUUM FULL would) until the block ends."""
    with psycopg.connect(libpq(url), application_name="reliability-test-lock") as conn:
        conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            conn.rollback()


def blocked_ctpoller_backend(url: str) -> int | None:
    """The pid of ctpoller's OpenREM backend while it waits for a lock, else None."""
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'ctpoller' "
            "AND datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return int(row[0]) if row else None


def sql(url: str, *statements: str, **params: Any) -> None:
    """Run statements on a database in one transaction (the test writing behind ctpoller's back)."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement), params)
    finally:
        engine.dispose()
