"""One measured child process: its wall time, its own peak RSS (the memory figures) and its output."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ChildRun:
    returncode: int
    seconds: float
    max_rss_mb: float
    stdout: str
    stderr: str


TIME = shutil.which("time", path="/usr/bin:/bin")


def run_child(args: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> ChildRun:
    """Run a command; its wall time and its own peak RSS.

    The peak RSS comes from ``/usr/bin/time -f %M``. Without it, ``os.wait4`` gives the child's
    ru_maxrss, which on Linux is at least the RSS of this (forking) process, so only an upper bound.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile() as rss:
        command = [TIME, "-f", "%M", "-o", rss.name, *args] if TIME else list(args)
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        max_rss_kib = float(usage.ru_maxrss)
        if TIME:
            lines = [line for line in Path(rss.name).read_text().split() if line.isdigit()]
            if lines:
                max_rss_kib = float(lines[-1])
        out.seek(0)
        err.seek(0)
        return ChildRun(
            child.returncode,
            seconds,
            max_rss_kib / 1024,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


_SUMMARY = re.compile(
    r"(\d+) new study rows, (\d+) exams evaluated(?: \(\d+ read in full\))?, (\d+) events, (\d+) exceedances"
)
READ_IN_FULL = re.compile(r"exams evaluated \((\d+) read in full\)")


def summary_counts(text: str) -> tuple[int, int, int, int] | None:
    found = _SUMMARY.findall(text)
    return tuple(int(x) for x in found[-1]) if found else None  # type: ignore[return-value]


def check(run: ChildRun, what: str) -> None:
    if run.returncode != 0:
        raise RuntimeError(f"{what} exited {run.returncode}: {(run.stderr or run.stdout).strip()[-500:]}")
