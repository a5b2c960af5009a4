"""THE one place that turns settings into parts: the OpenREM source, the state store, the rules, the
notifier, the archive and the timing. The CLI, the demo, the benchmark and the tests build through it."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ctpoller.archive.base import XlsxArchive
from ctpoller.archive.html import HtmlReport
from ctpoller.core.rules import RuleSet, parse_rules
from ctpoller.core.settle import Timing
from ctpoller.errors import ConfigError
from ctpoller.mail.base import Notifier
from ctpoller.mail.render import Look
from ctpoller.openrem.source import OpenremSource
from ctpoller.settings import Settings, zone_info
from ctpoller.store.store import StateStore

if TYPE_CHECKING:
    from datetime import tzinfo

    from ctpoller.jobs.digest import Digest
    from ctpoller.jobs.heartbeat import Heartbeat


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


def mail_look(settings: Settings) -> Look:
    """How the emails show links and times: ``CTPOLLER_OPENREM_URL`` and ``CTPOLLER_TIMEZONE``."""
    return Look(openrem_url=settings.openrem_url, zone=zone_info(settings.timezone))


def build_notifier(settings: Settings) -> Notifier | None:
    if settings.outbox_dir is not None:
        from ctpoller.mail.eml import EmlDirectoryNotifier

        return EmlDirectoryNotifier(
            settings.outbox_dir, mail_from=settings.mail_from or "ctpoller@localhost", look=mail_look(settings)
        )
    if settings.smtp_host is not None:
        if settings.mail_from is None:
            raise ConfigError("CTPOLLER_MAIL_FROM is not set: the sender address of the emails is required with SMTP")
        from ctpoller.mail.smtp import SmtpNotifier

        return SmtpNotifier(
            settings.smtp_host,
            settings.smtp_port_or_default,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            timeout=settings.smtp_timeout,
            mail_from=settings.mail_from,
            look=mail_look(settings),
        )
    return None


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


def build_archive(settings: Settings) -> XlsxArchive | None:
    if not settings.archive_path:
        return None
    zone, name = site_timezone(settings)
    return XlsxArchive(settings.archive_path, zone=zone, zone_name=name, mode=settings.archive_file_mode)


def site_timezone(settings: Settings) -> tuple[tzinfo, str]:
    """``CTPOLLER_TIMEZONE``, else the host's zone (``TZ``, then /etc/localtime), else the host's
    current UTC offset, named "local"."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    names = [settings.timezone] if settings.timezone else []
    names.append(os.environ.get("TZ", "").lstrip(":"))
    with contextlib.suppress(OSError):
        target = os.readlink("/etc/localtime")
        if "zoneinfo/" in target:
            names.append(target.split("zoneinfo/", 1)[1])
    for name in names:
        if name:
            with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
                return ZoneInfo(name), name
    local = datetime.now().astimezone().tzinfo
    return (local or UTC), "local"


def site_zone(settings: Settings) -> tzinfo:
    """CTPOLLER_TIMEZONE, else the host's zone (``TZ``, else /etc/localtime), else the host's UTC offset now."""
    import zoneinfo
    from datetime import datetime

    names = [settings.timezone, os.environ.get("TZ", "").removeprefix(":")]
    with contextlib.suppress(OSError):
        names.append(str(Path("/etc/localtime").resolve()).partition("/zoneinfo/")[2])
    for name in names:
        if name:
            with contextlib.suppress(zoneinfo.ZoneInfoNotFoundError, ValueError):
                return zoneinfo.ZoneInfo(name)
    return datetime.now().astimezone().tzinfo or zoneinfo.ZoneInfo("UTC")


def heartbeat(settings: Settings) -> Heartbeat:
    """When silence counts (CTPOLLER_SILENCE_AFTER, _HOURS, CTPOLLER_TIMEZONE) and who is told."""
    from ctpoller.core.silence import Policy, parse_hours
    from ctpoller.jobs.heartbeat import Heartbeat
    from ctpoller.settings import split_addresses

    hours = parse_hours(settings.silence_hours) if settings.silence_hours else None
    policy = Policy(after=settings.silence_after, zone=site_zone(settings), hours=hours)
    return Heartbeat(policy, tuple(split_addresses(settings.admin_mail_to)), mail_domain(settings))


def build_report_html(settings: Settings) -> HtmlReport | None:
    return HtmlReport(settings.report_html) if settings.report_html else None


class Parts:
    """Each part built from the settings when a job asks for it (``check``, ``status``, ``retry``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def rules(self) -> RuleSet:
        return load_rules(self.settings)

    def source(self) -> OpenremSource:
        return build_source(self.settings)

    def state(self) -> StateStore:
        return build_state(self.settings)

    def notifier(self) -> Notifier | None:
        return build_notifier(self.settings)

    def archive(self) -> XlsxArchive | None:
        return build_archive(self.settings)

    def heartbeat(self) -> Heartbeat:
        return heartbeat(self.settings)

    def digest(self) -> Digest:
        """The digest's settings: CTPOLLER_DIGEST_TO, else the rules file's default recipients and CTPOLLER_MAIL_TO."""
        from ctpoller.jobs.digest import Digest
        from ctpoller.settings import split_addresses

        s = self.settings
        recipients = tuple(split_addresses(s.digest_to)) or self.rules().default_recipients
        due = timedelta(days=s.review_due_days)
        report = str(s.report_html) if s.report_html else None
        return Digest(recipients, due, site_zone(s), report, mail_domain(s))


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
        self.archive = build_archive(settings)
        self.report_html = build_report_html(settings)
        self.mail_domain = mail_domain(settings)
        self.heartbeat = heartbeat(settings)
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

    def cycle_options(self) -> dict[str, Any]:
        """What a poll cycle takes besides its parts, from the settings."""
        return dict(
            timing=self.timing, mail_domain=self.mail_domain, heartbeat=self.heartbeat, report_html=self.report_html
        )

    @contextlib.contextmanager
    def locked(self, dry_run: bool) -> Iterator[None]:
        if dry_run:
            yield
            return
        with self.state.lock():
            yield


def _secret(value: object) -> str | None:
    getter = getattr(value, "get_secret_value", None)
    return getter() if getter is not None else None
