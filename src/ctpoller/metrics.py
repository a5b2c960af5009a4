"""Prometheus textfile-collector metrics, written atomically after every run (``CTPOLLER_METRICS_FILE``).

``render_metrics`` is pure; ``write_metrics`` replaces the file atomically (temp file, fsync, rename)
so node_exporter never reads half a file. Every value is a gauge about the last run or the state
store, so nothing has to be carried from run to run.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ctpoller.errors import NotifyError


@dataclass(frozen=True)
class RunMetrics:
    finished_at: float  # unix time
    success: bool
    duration_seconds: float
    last_success_at: float | None = None
    exams_evaluated: int = 0
    events_evaluated: int = 0
    exceedances: int = 0
    notifications_created: int = 0
    notifications_sent: int = 0
    notifications_deferred: int = 0
    notifications_failed: int = 0
    outbox_pending: int | None = None
    outbox_failed: int | None = None
    studies_waiting: int | None = None
    watermark: int | None = None
    source_lag_seconds: float | None = None
    exit_code: int = 0


_HELP: list[tuple[str, str, str]] = [
    ("ctpoller_last_run_timestamp_seconds", "finished_at", "When the last run ended (unix time)."),
    ("ctpoller_last_success_timestamp_seconds", "last_success_at", "When the last successful run ended (unix time)."),
    ("ctpoller_last_run_success", "success", "1 if the last run succeeded, else 0."),
    ("ctpoller_last_run_exit_code", "exit_code", "Exit code of the last run (see README)."),
    ("ctpoller_run_duration_seconds", "duration_seconds", "How long the last run took."),
    ("ctpoller_exams_evaluated", "exams_evaluated", "Exams evaluated by the last run."),
    ("ctpoller_events_evaluated", "events_evaluated", "Irradiation events evaluated by the last run."),
    ("ctpoller_exceedances", "exceedances", "Exceedances found by the last run (new or not)."),
    ("ctpoller_notifications_created", "notifications_created", "Emails recorded by the last run."),
    ("ctpoller_notifications_sent", "notifications_sent", "Emails the mail server accepted in the last run."),
    ("ctpoller_notifications_deferred", "notifications_deferred", "Emails left for the next run (4xx, unreachable)."),
    ("ctpoller_notifications_failed", "notifications_failed", "Emails refused permanently in the last run (5xx)."),
    ("ctpoller_outbox_backlog", "outbox_pending", "Emails waiting in the outbox."),
    ("ctpoller_outbox_failed", "outbox_failed", "Emails ever refused permanently (shown in the archive)."),
    ("ctpoller_studies_waiting", "studies_waiting", "OpenREM studies above the watermark not yet decided."),
    ("ctpoller_watermark", "watermark", "OpenREM study pk at and below which everything is decided."),
    ("ctpoller_source_lag_seconds", "source_lag_seconds", "Replay lag of the OpenREM replica (standby only)."),
]


def render_metrics(m: RunMetrics) -> str:
    lines: list[str] = []
    for name, attribute, text in _HELP:
        value = getattr(m, attribute)
        if value is None:
            continue
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} gauge")
        number = int(value) if isinstance(value, bool) else value
        lines.append(f"{name} {number}")
    return "\n".join(lines) + "\n"


def write_metrics(m: RunMetrics, path: Path) -> None:
    """Replace ``path`` atomically; OSError becomes a temporary NotifyError naming the file."""
    path = Path(path)
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(render_metrics(m))
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temp, 0o644)
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
    except OSError as e:
        raise NotifyError(
            f"cannot write the metrics file {path}: {e.strerror or e} (CTPOLLER_METRICS_FILE)", permanent=False
        ) from e
