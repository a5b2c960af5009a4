"""Settings: environment variables ``CTPOLLER_*``, a ``.env`` file, and systemd credentials.

Precedence, highest first: environment, ``.env`` in the working directory (or the file named by
``CTPOLLER_ENV_FILE``), files in ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``; a file is
named after the variable, e.g. ``CTPOLLER_SMTP_PASSWORD``), then the defaults below.
Every error names the variable to fix. Secrets are ``SecretStr`` and never printed.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ctpoller.core.rules.ruleset import is_address
from ctpoller.core.silence import parse_duration, parse_hours
from ctpoller.errors import ConfigError

PREFIX = "CTPOLLER_"
DEFAULT_STATE_FILE = "ctpoller-state.sqlite3"
SMTP_DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}


def default_state_url() -> str:
    """SQLite in systemd's ``$STATE_DIRECTORY``, else in the user's state directory.

    Never the working directory: runs started from different places must share one store.
    """
    directory = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if not directory:  # created (0700) by the first command that writes the store, never by loading settings
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        directory = str(Path(base) / "ctpoller")
    return f"sqlite:///{Path(directory).resolve() / DEFAULT_STATE_FILE}"


class Settings(BaseSettings):
    """Every setting of ctpoller. The README's configuration table lists the same names."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        hide_input_in_errors=True,
    )

    source_url: str | None = Field(default=None, description="OpenREM database URL (read-only)")
    source_password: SecretStr | None = Field(default=None, description="password for the OpenREM database")
    state_url: str = Field(default_factory=default_state_url, description="ctpoller's own state store")
    state_password: SecretStr | None = Field(default=None, description="password for a PostgreSQL state store")
    rules_file: Path | None = Field(default=None, description="the rules file (TOML)")
    settle_seconds: int = Field(default=120, ge=0, le=86_400)
    give_up_seconds: int = Field(default=6 * 3600, ge=60, le=30 * 86_400)
    statement_timeout_seconds: int = Field(default=60, ge=1, le=3600)
    batch_size: int = Field(default=500, ge=1, le=10_000)
    smtp_host: str | None = None
    smtp_port: int | None = Field(default=None, ge=1, le=65_535)
    smtp_security: Literal["starttls", "ssl", "none"] = "starttls"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout: float = Field(default=30.0, gt=0, le=600)
    mail_from: str | None = None
    mail_to: str = ""
    outbox_dir: Path | None = None
    archive_path: Path | None = None
    archive_mode: str = Field(default="0640", description="the archive's permission bits (octal)")
    metrics_file: Path | None = None
    openrem_url: str | None = Field(default=None, description="OpenREM's web address, for links to exams")
    timezone: str | None = Field(default=None, description="the site's IANA time zone (default: the host's)")
    silence_after: timedelta = Field(default=timedelta(hours=6), description="heartbeat: silence alarm after")
    silence_hours: str | None = Field(default=None, description="heartbeat: count silence only within these hours")
    admin_mail_to: str = Field(default="", description="who is told when OpenREM goes quiet and comes back")
    digest_to: str = Field(default="", description="digest recipients (default: the default recipients)")
    review_due_days: int = Field(default=14, ge=1, le=3650, description="digest: open notifications older than")
    report_html: Path | None = Field(default=None, description="the HTML report, rewritten by runs that changed it")

    @field_validator(
        "source_url",
        "smtp_host",
        "smtp_username",
        "mail_from",
        "rules_file",
        "outbox_dir",
        "archive_path",
        "timezone",
        "metrics_file",
        "openrem_url",
        "timezone",
        "silence_hours",
        "report_html",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("mail_from")
    @classmethod
    def _one_address(cls, value: str | None) -> str | None:
        if value is not None and not is_address(value):
            raise ValueError("must be one e-mail address such as ctpoller@hospital.example")
        return value

    @field_validator("openrem_url")
    @classmethod
    def _web_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("must be OpenREM's web address such as https://openrem.hospital.example")
        if parts.username or parts.password:
            raise ValueError("must not hold a user name or password")
        return value.rstrip("/")

    @field_validator("silence_after", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value

    @field_validator("silence_hours")
    @classmethod
    def _hours(cls, value: str | None) -> str | None:
        if value is not None:
            parse_hours(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            zone_info(value)
        return value

    @field_validator("archive_mode")
    @classmethod
    def _mode(cls, value: str) -> str:
        text = value.strip()
        if (
            not text
            or any(c not in "01234567" for c in text.removeprefix("0o"))
            or int(text.removeprefix("0o"), 8) > 0o777
        ):
            raise ValueError(f"{value!r} is not a file mode in octal such as 0640")
        if int(text.removeprefix("0o"), 8) & 0o600 != 0o600:
            raise ValueError(f"{value!r} would not let ctpoller read and write its own archive (0600 at least)")
        return text

    @field_validator("mail_to", "admin_mail_to", "digest_to")
    @classmethod
    def _addresses(cls, value: str) -> str:
        for address in split_addresses(value):
            if not is_address(address):
                raise ValueError(f"{address!r} is not an e-mail address (separate addresses with commas)")
        return value

    @model_validator(mode="after")
    def _give_up_after_settle(self) -> Settings:
        if self.give_up_seconds <= self.settle_seconds:
            raise ValueError("CTPOLLER_GIVE_UP_SECONDS must be greater than CTPOLLER_SETTLE_SECONDS")
        return self

    @property
    def recipients(self) -> tuple[str, ...]:
        return tuple(split_addresses(self.mail_to))

    @property
    def archive_file_mode(self) -> int:
        return int(self.archive_mode.removeprefix("0o"), 8)

    @property
    def smtp_port_or_default(self) -> int:
        return self.smtp_port or SMTP_DEFAULT_PORTS[self.smtp_security]


def zone_info(name: str | None) -> ZoneInfo | None:
    """The IANA time zone ``name`` (None: the host's local time); ValueError naming it when unknown."""
    if name is None:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone name such as Europe/London") from None


def split_addresses(value: str) -> list[str]:
    return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]


def env_name(field: str) -> str:
    return PREFIX + field.upper()


def load_settings(env_file: str | Path | None = None) -> Settings:
    """Build the settings or raise ConfigError naming the variable that is wrong."""
    explicit = env_file or os.environ.get(PREFIX + "ENV_FILE")
    if explicit and not Path(explicit).is_file():
        where = "--env-file" if env_file else "CTPOLLER_ENV_FILE"
        raise ConfigError(f"{where}: settings file {explicit} does not exist")
    env_file = explicit or ".env"
    secrets_dir = os.environ.get("CREDENTIALS_DIRECTORY") or None
    if secrets_dir and not Path(secrets_dir).is_dir():
        raise ConfigError(f"CREDENTIALS_DIRECTORY={secrets_dir} is not a directory")
    try:
        return Settings(_env_file=env_file, _secrets_dir=secrets_dir)
    except ValidationError as e:
        error = e.errors()[0]
        where = env_name(str(error["loc"][0])) if error["loc"] else "settings"
        message = str(error["msg"]).removeprefix("Value error, ")
        more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        raise ConfigError(f"{where}: {message}{more}") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"cannot read settings from {env_file}: {e}") from None
