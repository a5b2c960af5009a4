"""Building ctpoller's parts from the settings, for the CLI: source, state, rules, notifier, archive."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType

from ctpoller.errors import ConfigError, CtpollerError
from ctpoller.model import ArchiveRow, Tracked
from ctpoller.notify.base import Notifier
from ctpoller.poller import Timing
from ctpoller.rules import RuleSet, parse_rules
from ctpoller.settings import Settings
from ctpoller.source import OpenremSource
from ctpoller.state import StateStore


def load_rules(settings: Settings) -> RuleSet:
    path = settings.rules_file
    if path is None:
        raise ConfigError("CTPOLLER_RULES_FILE is not set: give the rules file (see examples/rules.toml)")
    try:
        if Path(path).exists() and not stat.S_ISREG(os.stat(path).st_mode) and not Path(path).is_dir():
            raise ConfigError(f"rules file {path} is not a regular file (CTPOLLER_RULES_FILE)")
        text = Path(path).read_text(encoding="utf-8-sig")  # a BOM from a Windows editor is not TOML
    except FileNotFoundError:
        raise ConfigError(f"rules file {path} does not exist (CTPOLLER_RULES_FILE)") from None
    except IsADirectoryError:
        raise ConfigError(f"rules file {path} is a directory (CTPOLLER_RULES_FILE)") from None
    except PermissionError:
        raise ConfigError(f"rules file {path} cannot be read: permission denied (CTPOLLER_RULES_FILE)") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"rules file {path} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"rules file {path} cannot be read: {e.strerror} (CTPOLLER_RULES_FILE)") from None
    rules = parse_rules(text, source=str(path)).with_recipients(settings.recipients)
    nobody = rules.without_recipients()
    if nobody:
        raise ConfigError(
            f"rules file {path}: {', '.join(repr(name) for name in nobody[:3])} would notify nobody: "
            "add recipients to [defaults] or to the rule, or set CTPOLLER_MAIL_TO"
        )
    return rules


def build_notifier(settings: Settings) -> Notifier | None:
    if settings.outbox_dir is not None:
        from ctpoller.notify.outbox import EmlDirectoryNotifier

        return EmlDirectoryNotifier(settings.outbox_dir, mail_from=settings.mail_from or "ctpoller@localhost")
    if settings.smtp_host is not None:
        if settings.mail_from is None:
            raise ConfigError("CTPOLLER_MAIL_FROM is not set: the sender address of the emails is required with SMTP")
        from ctpoller.notify.smtp import SmtpNotifier

        return SmtpNotifier(
            settings.smtp_host,
            settings.smtp_port_or_default,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            timeout=settings.smtp_timeout,
            mail_from=settings.mail_from,
        )
    return None


class XlsxArchive:
    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, rows: Iterator[ArchiveRow]) -> int:
        from ctpoller.notify.xlsx import write_archive

        return write_archive(rows, self.path)

    def exists(self) -> bool:
        return self.path.exists()


def check_archive_path(path: Path) -> None:
    """For ``check``: ConfigError unless ``path`` can be the archive file (a file in a directory that exists)."""
    if path.is_dir():
        raise ConfigError(f"CTPOLLER_ARCHIVE_PATH: {path} is a directory; give the path of the .xlsx file")
    if path.exists() and not path.is_file():
        raise ConfigError(f"CTPOLLER_ARCHIVE_PATH: {path} is not a regular file")
    if not path.parent.is_dir():
        raise ConfigError(f"CTPOLLER_ARCHIVE_PATH: directory {path.parent} does not exist")


def mail_domain(settings: Settings) -> str:
    if settings.mail_from and "@" in settings.mail_from:
        return settings.mail_from.rpartition("@")[2]
    return "ctpoller.invalid"


def build_source(settings: Settings) -> OpenremSource:
    return OpenremSource(
        settings.source_url,
        password=_secret(settings.source_password),
        statement_timeout_seconds=settings.statement_timeout_seconds,
    )


def build_state(settings: Settings) -> StateStore:
    return StateStore(settings.state_url, password=_secret(settings.state_password))


def timing(settings: Settings) -> Timing:
    return Timing(
        settle=timedelta(seconds=settings.settle_seconds),
        give_up=timedelta(seconds=settings.give_up_seconds),
        batch_size=settings.batch_size,
    )


class Components:
    """Everything one command needs, built and checked in a sensible order, disposed at the end."""

    def __init__(self, settings: Settings, *, need_delivery: bool, dry_run: bool = False) -> None:
        self.settings = settings
        self.dry_run = dry_run
        self.rules = load_rules(settings)
        self.notifier = build_notifier(settings)
        if need_delivery and self.notifier is None:
            raise ConfigError(
                "no delivery configured: set CTPOLLER_SMTP_HOST (or CTPOLLER_OUTBOX_DIR to write .eml files)"
            )
        # Not checked here: the emails never wait for the archive (a QA share may be away for a while).
        self.archive = XlsxArchive(settings.archive_path) if settings.archive_path else None
        self.mail_domain = mail_domain(settings)
        self.timing = timing(settings)
        self.state = build_state(settings)
        if dry_run and not self.state.exists():
            # A dry run before the first run: a throwaway store, so that nothing is created.
            self.state.dispose()
            self.state = StateStore("sqlite://")
        self.source = build_source(settings)

    def __enter__(self) -> Components:
        if not self.dry_run or self.state.url.database is None:
            self.state.ensure_schema()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.source.dispose()
        self.state.dispose()

    def record(self, now: datetime, error: CtpollerError | None) -> dict[str, float | int | None]:
        """Remember how this run ended, for ``ctpoller status``; return what the metrics need."""
        return {} if self.dry_run else record_run(self.state, now, error)

    @contextlib.contextmanager
    def locked(self, dry_run: bool) -> Iterator[None]:
        if dry_run:
            yield
            return
        with self.state.lock():
            yield


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


def record_failure(settings: Settings, now: datetime, error: CtpollerError) -> dict[str, float | int | None]:
    """``record_run`` for a run that failed before its parts were built (or after they were closed)."""
    try:
        state = StateStore(settings.state_url, password=_secret(settings.state_password))
    except CtpollerError:
        return {}
    try:
        return record_run(state, now, error)
    finally:
        state.dispose()


def _secret(value: object) -> str | None:
    getter = getattr(value, "get_secret_value", None)
    return getter() if getter is not None else None


def run_checks(settings: Settings) -> Iterator[tuple[bool, str, CtpollerError | None]]:
    """Each check as (passed, one line, the error if it failed)."""
    yield True, "settings: loaded", None
    try:
        rules = load_rules(settings)
        yield True, f"rules file {settings.rules_file}: {len(rules.rules)} rules", None
    except CtpollerError as e:
        rules = None
        yield False, str(e), e
    source: OpenremSource | None = None
    try:
        source = OpenremSource(
            settings.source_url,
            password=_secret(settings.source_password),
            statement_timeout_seconds=settings.statement_timeout_seconds,
        )
        source.connect()
        extra = "" if source.has_standard_names else " (no standard-name tables: standard_name never matches)"
        yield True, f"OpenREM database {source.where}: every needed table and column is there{extra}", None
        if rules is not None and rules.uses_standard_names and not source.has_standard_names:
            e2 = ConfigError("the rules use standard_name but the OpenREM database has no standard-name tables")
            yield False, str(e2), e2
    except CtpollerError as e:
        yield False, str(e), e
    finally:
        if source is not None:
            source.dispose()
    state: StateStore | None = None
    try:
        state = StateStore(settings.state_url, password=_secret(settings.state_password))
        state.ensure_schema()
        watermark = state.watermark()
        where = "not started yet" if watermark is None else f"watermark at OpenREM study pk {watermark}"
        yield True, f"state store {state.where}: {where}", None
    except CtpollerError as e:
        yield False, str(e), e
    finally:
        if state is not None:
            state.dispose()
    try:
        notifier = build_notifier(settings)
        if notifier is None:
            e3 = ConfigError("no delivery configured: set CTPOLLER_SMTP_HOST (or CTPOLLER_OUTBOX_DIR)")
            yield False, str(e3), e3
        else:
            checker = getattr(notifier, "check", None)
            detail = checker() if checker is not None else f"{notifier.name} ready"
            yield True, str(detail), None
    except CtpollerError as e:
        yield False, str(e), e
    if settings.archive_path is not None:
        try:
            check_archive_path(settings.archive_path)
            yield True, f"archive {settings.archive_path}: directory exists", None
        except ConfigError as e4:
            yield False, str(e4), e4


def status_lines(settings: Settings, *, now: datetime) -> Iterator[str]:
    """What ``ctpoller status`` prints. Reads only; OpenREM is asked only if it is configured."""
    state = StateStore(settings.state_url, password=_secret(settings.state_password))
    try:
        yield f"state store: {state.where}"
        if not state.exists():
            yield "watermark: not started (the first 'ctpoller run' starts at OpenREM's current end)"
            return
        watermark = state.watermark()
        if watermark is None:
            yield "watermark: not started (the first 'ctpoller run' starts at OpenREM's current end)"
            return
        yield f"watermark: OpenREM study pk {watermark}"
        for key in ("last_run_at", "last_success_at", "last_error"):
            value = state.get_meta(key)
            if value:
                yield f"{key.replace('_', ' ')}: {value}"
        counts = state.outbox_counts()
        outbox = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        yield f"outbox: {outbox or 'empty'} (pending = waiting to be sent; failed = refused, see the archive)"
        tracked = state.tracked_above(watermark)
        if settings.source_url is None:
            waiting = [t for t in tracked.values() if t.status == "pending"]
            yield f"studies above the watermark: {len(tracked)} ({len(waiting)} not yet decided)"
            return
        yield from _source_status(settings, watermark, tracked, now)
    finally:
        state.dispose()


def _source_status(settings: Settings, watermark: int, tracked: dict[int, Tracked], now: datetime) -> Iterator[str]:
    from ctpoller import settle

    source = OpenremSource(
        settings.source_url,
        password=_secret(settings.source_password),
        statement_timeout_seconds=settings.statement_timeout_seconds,
    )
    try:
        source.connect()
        with source.session("reading the status") as conn:
            lag = source.replica_lag_seconds(conn)
            snapshot = source.snapshot(conn)
            heads = source.heads_after(conn, watermark, 10_000)
        plan = settle.plan(
            heads,
            tracked,
            now=now,
            settle=timedelta(seconds=settings.settle_seconds),
            give_up=timedelta(seconds=settings.give_up_seconds),
            snapshot=snapshot,
        )
        yield f"OpenREM database {source.where}: {len(heads)} study rows above the watermark"
        if lag is not None:
            yield f"replica lag: {lag:.1f} s"
        for pk, why in plan.waiting[:50]:
            yield f"  waiting: pk {pk}: {why}"
        if plan.ready:
            yield f"  ready for the next run: {len(plan.ready)} studies"
    except CtpollerError as e:
        yield f"OpenREM database: {e}"
    finally:
        source.dispose()
