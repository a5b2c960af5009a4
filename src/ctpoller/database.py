"""What the two database adapters (``source.py``, ``state.py``) share: URLs and one-line messages."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from ctpoller.errors import ConfigError

DRIVERS = ("postgresql+psycopg", "sqlite", "sqlite+pysqlite")


def parse_url(url: str, password: str | None, *, variable: str, example: str) -> URL:
    """``url`` with the psycopg 3 driver and ``password`` set, or ConfigError naming ``variable``."""
    try:
        parsed = make_url(url)
        if parsed.port is not None and not 0 < parsed.port < 65536:  # not a number: ValueError
            raise ValueError("port out of range")
    except (ArgumentError, ValueError):
        raise ConfigError(f"{variable} is not a database URL (expected {example})") from None
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in DRIVERS:
        raise ConfigError(f"{variable}: {parsed.drivername} is not supported (use {example})")
    if password:
        parsed = parsed.set(password=password)
    return parsed


def describe(url: URL) -> str:
    """Where a database is, for messages: never the password or user."""
    if url.drivername.startswith("sqlite"):
        return str(url.database or ":memory:")
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def first_line(e: BaseException | None) -> str:
    """The first line of a driver's message, cut to 300 characters."""
    text = str(e) if e is not None else "unknown error"
    return (text.strip().splitlines() or ["unknown error"])[0][:300]
