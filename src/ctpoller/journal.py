"""How each run ended: recorded in the state store (for ``status``) and as Prometheus textfile-collector
metrics, written atomically after every run (``CTPOLLER_METRICS_FILE``).

``render_metrics`` is pure; ``write_metrics`` replaces the file atomically (temp file, fsync, rename)
so node_exporter never reads half a file. Every value is a gauge about the last run or the state
store, so nothing has to be carried from run to run. ``setup_logging``: where a run's log lines go.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ctpoller.errors import CtpollerError, NotifyError
from ctpoller.files import atomic_write
from ctpoller.jobs.report import Report
from ctpoller.store.store import StateStore

log = logging.getLogger(__name__)


def setup_logging(verbose: bool) -> None:
    under_systemd = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = "%(levelname)s %(name)s: %(message)s" if under_systemd else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("sqlalchemy", "aiosmtpd", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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
    source_silence_seconds: float | None = None
    silence_alarm: bool | None = None
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
    (
        "ctpoller_source_silence_seconds",
        "source_silence_seconds",
        "How long OpenREM has sent no new CT study (within CTPOLLER_SILENCE_HOURS if set).",
    ),
    ("ctpoller_silence_alarm", "silence_alarm", "1 while OpenREM's silence is announced (the heartbeat), else 0."),
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
    text = render_metrics(m).encode("utf-8")
    try:
        atomic_write(path, lambda file: file.write(text), mode=0o644)
    except OSError as e:
        raise NotifyError(
            f"cannot write the metrics file {path}: {e.strerror or e} (CTPOLLER_METRICS_FILE)", permanent=False
        ) from e


def record_run(state: StateStore, now: datetime, error: CtpollerError | None) -> dict[str, float | int | None]:
    """Write how a run ended into the state store and return the facts the metrics show.

    Never fails the run over it: a state store that cannot be reached yields fewer facts.
    """
    facts: dict[str, float | int | None] = {}
    values: dict[str, str | None] = {"last_run_at": now.isoformat(timespec="seconds")}
    if error is None:
        values["last_success_at"] = values["last_run_at"]
    else:
        values["last_error"] = f"{now.isoformat(timespec='seconds')} {error}"
    with contextlib.suppress(CtpollerError):
        if not state.exists():
            return facts
        state.set_meta(values)
        last_success = state.get_meta("last_success_at")
        facts["last_success_at"] = datetime.fromisoformat(last_success).timestamp() if last_success else None
        counts = state.outbox_counts()
        facts["outbox_pending"] = counts.get("pending", 0)
        facts["outbox_failed"] = counts.get("failed", 0)
        watermark = state.watermark()
        facts["watermark"] = watermark
        if watermark is not None:
            tracked = state.tracked_above(watermark)
            facts["studies_waiting"] = sum(1 for t in tracked.values() if t.status == "pending")
    return facts


def record_failure(
    build_state: Callable[[], StateStore], now: datetime, error: CtpollerError
) -> dict[str, float | int | None]:
    """``record_run`` for a run that failed before its parts were built (or after they were closed)."""
    try:
        state = build_state()
    except CtpollerError:
        return {}
    try:
        return record_run(state, now, error)
    finally:
        state.dispose()


def write_run_metrics(
    path: Path, report: Report | None, facts: dict[str, float | int | None], code: int, started: float
) -> None:
    """The metrics of a run that ended with ``code`` (``started``: its ``time.monotonic()``)."""
    values: dict[str, object] = dict(
        finished_at=round(time.time(), 3),
        success=code == 0,
        exit_code=code,
        duration_seconds=round(time.monotonic() - started, 3),
        **facts,
    )
    if report is not None:
        values.update(
            exams_evaluated=report.exams_evaluated,
            events_evaluated=report.events_evaluated,
            exceedances=report.exceedances,
            notifications_created=report.created,
            notifications_sent=report.sent,
            notifications_deferred=len(report.deferred),
            notifications_failed=len(report.failed),
            source_lag_seconds=report.source_lag_seconds,
            source_silence_seconds=None if report.silence_seconds is None else round(report.silence_seconds),
            silence_alarm=report.silence_alarm,
        )
    try:
        write_metrics(RunMetrics(**values), path)  # type: ignore[arg-type]
    except CtpollerError as e:
        log.warning("%s", e)
