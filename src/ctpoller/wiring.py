"""Building ctpoller's parts from the settings, for the CLI: source, state, rules, notifier, archive."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType

from ctpoller.errors import ConfigError, CtpollerError, NotifyError, SourceError, StateError
from ctpoller.model import ArchiveRow, Message, Tracked
from ctpoller.notify.base import Notifier
from ctpoller.poller import Report, Timing, deliver, failed_line, warn_failed, write_archive
from ctpoller.rules import RuleSet, parse_rules
from ctpoller.settings import Settings
from ctpoller.source import OpenremSource
from ctpoller.state import LATE_WINDOW, OPENREM_BEHIND, OPENREM_RESTORED, StateStore


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


def check_archive_path(path: Path) -> str:
    """For ``check``: what was proven about the archive path, or the error a run would meet.

    A path that cannot be a file is a setting to fix (ConfigError, exit 2); a directory that is
    missing or that this user may not write into needs a person (exit 1), as in a run. The file
    itself is replaced by a rename, so only the directory must be writable.
    """
    if path.is_dir():
        raise ConfigError(f"CTPOLLER_ARCHIVE_PATH: {path} is a directory; give the path of the .xlsx file")
    if path.exists() and not path.is_file():
        raise ConfigError(f"CTPOLLER_ARCHIVE_PATH: {path} is not a regular file")
    directory = path.parent
    if not directory.is_dir():
        raise NotifyError(
            f"cannot write the archive {path}: directory {directory} does not exist: check CTPOLLER_ARCHIVE_PATH",
            permanent=False,
            scope="settings",
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise NotifyError(
            f"cannot write the archive {path}: directory {directory} is not writable by this user: "
            "check CTPOLLER_ARCHIVE_PATH",
            permanent=False,
            scope="settings",
        )
    state = "replaced by each run that changes it" if path.exists() else "not written yet"
    return f"archive {path}: directory {directory} exists and this user may write there ({state})"


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
    default = "state_url" not in settings.model_fields_set
    return StateStore(settings.state_url, password=_secret(settings.state_password), create_directory=default)


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
        state = build_state(settings)
    except CtpollerError:
        return {}
    try:
        return record_run(state, now, error)
    finally:
        state.dispose()


def _secret(value: object) -> str | None:
    getter = getattr(value, "get_secret_value", None)
    return getter() if getter is not None else None


Check = tuple[bool, str, CtpollerError | None]


def settings_file(env_file: str | None) -> Path | None:
    """The settings file ``load_settings`` reads: ``--env-file``, ``CTPOLLER_ENV_FILE``, else ./.env if any."""
    explicit = env_file or os.environ.get("CTPOLLER_ENV_FILE")
    if explicit:
        return Path(explicit)
    return Path(".env") if Path(".env").is_file() else None


def _settings_checks(settings: Settings, env_file: str | None) -> Iterator[Check]:
    """Where the settings came from, and every required one that is missing (each its own line)."""
    from dotenv import dotenv_values

    def counted(values: dict[str, str | None]) -> int:
        return sum(
            1 for k, v in values.items() if k.upper().startswith("CTPOLLER_") and k.upper() != "CTPOLLER_ENV_FILE" and v
        )

    problems: list[ConfigError] = []
    path = settings_file(env_file)
    in_environment = counted(dict(os.environ))
    where = f"{in_environment} CTPOLLER_ variables from the environment"
    if path is not None:
        in_file = counted(dotenv_values(path, encoding="utf-8"))
        if in_file == 0:
            problems.append(ConfigError(f"settings file {path} sets nothing (no CTPOLLER_ variable with a value)"))
        where = f"{in_file} CTPOLLER_ variables from {path}, {where}"
    if settings.source_url is None:
        problems.append(
            ConfigError(
                "CTPOLLER_SOURCE_URL is not set: give the OpenREM database, e.g. postgresql://ctpoller@db/openrem"
            )
        )
    if settings.rules_file is None:
        problems.append(ConfigError("CTPOLLER_RULES_FILE is not set: give the rules file (see examples/rules.toml)"))
    if settings.smtp_host is None and settings.outbox_dir is None:
        problems.append(ConfigError("no delivery configured: set CTPOLLER_SMTP_HOST (or CTPOLLER_OUTBOX_DIR)"))
    elif settings.outbox_dir is None and settings.mail_from is None:
        problems.append(ConfigError("CTPOLLER_MAIL_FROM is not set: the sender address is required with SMTP"))
    for problem in problems:
        yield False, str(problem), problem
    if not problems:
        smtp = "CTPOLLER_SMTP_HOST, CTPOLLER_MAIL_FROM"
        delivery = "CTPOLLER_OUTBOX_DIR" if settings.outbox_dir is not None else smtp
        yield True, f"settings: {where}; CTPOLLER_SOURCE_URL, CTPOLLER_RULES_FILE and {delivery} are set", None


def run_checks(settings: Settings, env_file: str | None = None) -> Iterator[Check]:
    """Each check as (passed, one line saying what was proven, the error if it failed). Writes nothing:
    no state store, lock, archive or outbox file is created, nothing is sent."""
    yield from _settings_checks(settings, env_file)
    rules: RuleSet | None = None
    if settings.rules_file is not None:
        try:
            rules = load_rules(settings)
            yield True, f"rules file {settings.rules_file}: {len(rules.rules)} rules, each with recipients", None
        except CtpollerError as e:
            yield False, str(e), e
    if settings.source_url is not None:
        yield from _source_checks(settings, rules)
    yield from _state_checks(settings)
    if settings.outbox_dir is not None or (settings.smtp_host is not None and settings.mail_from is not None):
        try:
            notifier = build_notifier(settings)
            checker = getattr(notifier, "check", None)
            detail = checker() if checker is not None else f"{getattr(notifier, 'name', 'delivery')} ready"
            yield True, str(detail), None
        except CtpollerError as e:
            yield False, str(e), e
    if settings.archive_path is not None:
        try:
            yield True, check_archive_path(settings.archive_path), None
        except CtpollerError as e:
            yield False, str(e), e


def _source_checks(settings: Settings, rules: RuleSet | None) -> Iterator[Check]:
    source: OpenremSource | None = None
    try:
        source = OpenremSource(
            settings.source_url,
            password=_secret(settings.source_password),
            statement_timeout_seconds=settings.statement_timeout_seconds,
        )
        source.connect()
        missing = source.missing_privileges()
        if missing:
            more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
            e1 = SourceError(
                f"OpenREM database {source.where}: this role may not SELECT {', '.join(missing[:5])}{more}, "
                "which every run reads: grant them (see sql/readonly_role.sql)",
                temporary=False,
            )
            yield False, str(e1), e1
        else:
            extra = "" if source.has_standard_names else " (no standard-name tables: standard_name never matches)"
            proven = "is there" if source.is_sqlite else "is there and this role may SELECT it"
            yield True, f"OpenREM database {source.where}: every table and column a run reads {proven}{extra}", None
        if rules is not None and rules.uses_standard_names and not source.has_standard_names:
            e2 = ConfigError("the rules use standard_name but the OpenREM database has no standard-name tables")
            yield False, str(e2), e2
    except CtpollerError as e:
        yield False, str(e), e
    finally:
        if source is not None:
            source.dispose()


def _state_checks(settings: Settings) -> Iterator[Check]:
    state: StateStore | None = None
    try:
        state = build_state(settings)
        problem = state.access_problem()
        if problem is not None:
            e1 = StateError(f"state store {state.where}: {problem} (CTPOLLER_STATE_URL)", temporary=False)
            yield False, str(e1), e1
        elif not state.exists():
            yield True, f"state store {state.where}: not created yet (the first run creates it; this user may)", None
        else:
            watermark = state.watermark()
            where = "not started yet" if watermark is None else f"watermark at OpenREM study pk {watermark}"
            failed = state.outbox_counts().get("failed", 0)
            waiting = f"; {failed} failed notifications wait for 'ctpoller retry' or 'dismiss'" if failed else ""
            yield True, f"state store {state.where}: readable and writable by this user, {where}{waiting}", None
    except CtpollerError as e:
        yield False, str(e), e
    finally:
        if state is not None:
            state.dispose()


def status_lines(settings: Settings, *, now: datetime) -> Iterator[str]:
    """What ``ctpoller status`` prints. Reads only; OpenREM is asked only if it is configured."""
    state = build_state(settings)
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
        yield from _restore_lines(state, watermark)
        for key in ("last_run_at", "last_success_at", "last_error"):
            value = state.get_meta(key)
            if value:
                yield f"{key.replace('_', ' ')}: {value}"
        counts = state.outbox_counts()
        outbox = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        yield f"outbox: {outbox or 'empty'} (pending = waiting to be sent; failed = refused, see below)"
        failed = state.messages_with_status("failed")
        if failed:
            yield (
                f"failed: {len(failed)} notifications refused permanently wait for a person: "
                "'ctpoller retry ID' sends one again, 'ctpoller dismiss ID --reason TEXT' stops the warnings"
            )
            for message in failed:
                yield f"  {failed_line(message)}"
        tracked = state.tracked_above(watermark)
        if settings.source_url is None:
            waiting = [t for t in tracked.values() if t.status == "pending"]
            yield f"studies above the watermark: {len(tracked)} ({len(waiting)} not yet decided)"
            return
        yield from _source_status(settings, watermark, tracked, now)
    finally:
        state.dispose()


def _restore_lines(state: StateStore, watermark: int) -> Iterator[str]:
    restored, behind = state.get_meta(OPENREM_RESTORED), state.get_meta(OPENREM_BEHIND)
    if restored is not None:
        yield (
            f"STOPPED: OpenREM was restored from a backup or replaced (its newest study pk went back to {restored}, "
            f"below the watermark {watermark}); every run stops until 'ctpoller reset --yes' (see README)"
        )
    elif behind is not None:
        yield (
            f"warning: OpenREM's newest study pk went back to {behind}, below the watermark {watermark}: studies "
            "were deleted or OpenREM was restored; runs go on and stop if a new study gets a pk at or below it"
        )
    window = state.get_meta(LATE_WINDOW)
    if window:
        floor = window.split()[0]
        yield f"first run: study pks {floor}-{watermark} are watched for rows committed late (until the next run)"


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


# -- retry and dismiss ------------------------------------------------------------------------------------


def chosen_messages(
    state: StateStore, keys: Sequence[str], *, everything: bool, allowed: tuple[str, ...]
) -> list[Message]:
    """The messages named by id or Message-ID (each in an ``allowed`` status), or every failed one.

    Every key is checked before anything changes: one wrong key changes nothing (ConfigError).
    """
    if everything:
        return state.messages_with_status("failed")
    chosen: dict[int, Message] = {}
    for key in keys:
        message = state.find_message(key)
        if message is None:
            raise ConfigError(f"no notification with id or Message-ID {key!r}: see 'ctpoller status'")
        if message.status not in allowed:
            raise ConfigError(f"notification {message.id} is {message.status}, not {' or '.join(allowed)}")
        chosen[message.id] = message
    return list(chosen.values())


def retry_failed(
    settings: Settings, keys: Sequence[str], *, everything: bool, now: datetime, out: Callable[[str], None]
) -> Report | None:
    """``ctpoller retry``: queue the chosen failed messages again and deliver at once, holding the lock.

    Without keys and without ``everything`` only lists the failed messages (None: nothing done).
    """
    state = build_state(settings)
    try:
        if not state.exists():
            out("no failed notifications (the state store has not been created yet)")
            return None
        with state.lock():
            if not keys and not everything:
                _list_failed(state, out, "'ctpoller retry ID ...' or 'ctpoller retry --all' sends them again")
                return None
            chosen = chosen_messages(state, keys, everything=everything, allowed=("failed", "dismissed"))
            if not chosen:
                out("no failed notifications: nothing to retry")
                return None
            notifier = build_notifier(settings)
            if notifier is None:
                raise ConfigError("no delivery configured: set CTPOLLER_SMTP_HOST (or CTPOLLER_OUTBOX_DIR)")
            for message in chosen:
                if message.last_error and "delivered the message to the other recipients" in message.last_error:
                    out(
                        f"note: notification {message.id} reached some of its recipients before; it is sent "
                        "again to all of them, with the same Message-ID"
                    )
            queued = state.requeue([m.id for m in chosen], now)
            out(f"queued again: {queued} notifications (ids {', '.join(str(m.id) for m in chosen)})")
            report = Report()
            deliver(state, notifier, report, now=now)
            write_archive(state, _archive(settings), report)
            return report
    finally:
        state.dispose()


def dismiss_failed(
    settings: Settings,
    keys: Sequence[str],
    *,
    everything: bool,
    reason: str | None,
    now: datetime,
    out: Callable[[str], None],
) -> Report | None:
    """``ctpoller dismiss``: mark the chosen failed messages dismissed, with the reason; they stay
    in the archive and stop the warnings. Without keys and ``everything``: only lists them."""
    state = build_state(settings)
    try:
        if not state.exists():
            out("no failed notifications (the state store has not been created yet)")
            return None
        with state.lock():
            if not keys and not everything:
                _list_failed(state, out, "'ctpoller dismiss ID ... --reason TEXT' stops their warnings")
                return None
            if not reason or not reason.strip():
                raise ConfigError("dismiss needs --reason TEXT: it is kept in the archive with the notification")
            chosen = chosen_messages(state, keys, everything=everything, allowed=("failed",))
            if not chosen:
                out("no failed notifications: nothing to dismiss")
                return None
            done = state.dismiss([m.id for m in chosen], " ".join(reason.split()), now)
            out(f"dismissed: {done} notifications (ids {', '.join(str(m.id) for m in chosen)})")
            report = Report()
            write_archive(state, _archive(settings), report)
            warn_failed(state, report)
            return report
    finally:
        state.dispose()


def _list_failed(state: StateStore, out: Callable[[str], None], hint: str) -> None:
    failed = state.messages_with_status("failed")
    if not failed:
        out("no failed notifications")
        return
    out(f"{len(failed)} notifications failed permanently; nothing was changed: {hint}")
    for message in failed:
        out(f"  {failed_line(message)}")


def _archive(settings: Settings) -> XlsxArchive | None:
    return XlsxArchive(settings.archive_path) if settings.archive_path else None
