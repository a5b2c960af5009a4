"""The real ``ctpoller`` command, as the systemd timer and a physicist run it: to the end (``ctpoller``)
or in the background (``Processes``, a fixture that lets none outlive its test).

``CompletedRun`` checks the promises every run ends with: the documented exit code, one clear last line
on stderr and never a traceback or an "internal error".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

MAIL_FROM = "ctpoller@hospital.example"
PHYSICS = "physics@hospital.example"

#: GE_VCT (176.12 mGy body CTDIvol) and SIEMENS_FLASH_QA (65.47 mGy) exceed it.
BODY_CTDIVOL_RULES = f"""
[defaults]
recipients = ["{PHYSICS}"]

[[rule]]
name = "Body CTDIvol"
phantom = "body"
ctdivol = 50
"""

#: Also GE_VCT's 2002.39 mGy·cm total exceeds these.
RULES = f"""{BODY_CTDIVOL_RULES}
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


def one_line(result: CompletedRun) -> str:
    """The only line the run wrote on stderr (and no traceback)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def ctpoller(
    *args: str,
    env: dict[str, str],
    cwd: Path,
    timeout: float = 120,
    preexec_fn: Callable[[], None] | None = None,
) -> CompletedRun:
    """Run ``python -m ctpoller ARGS`` to the end, with ``env`` on top of a clean environment."""
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


@pytest.fixture
def processes() -> Iterator[Processes]:
    """Background ctpoller processes; any still running at the end of the test is killed."""
    tracked = Processes()
    try:
        yield tracked
    finally:
        tracked.cleanup()
