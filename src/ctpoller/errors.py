"""The one exception tree of ctpoller.

::

    CtpollerError                  every error ctpoller raises on purpose; str(e) is one line for a person
    ├── ConfigError                settings, rules file, command line (exit 2)
    ├── SourceError                the OpenREM database
    │     (temporary=True: unreachable, timeout, replica conflict -> retried next run, exit 75;
    │      temporary=False: schema mismatch, wrong database -> a person must act, exit 1)
    ├── StateError                 ctpoller's own state store (temporary or not, as above)
    ├── LockedError                another ctpoller run holds the lock (exit 3)
    └── NotifyError                a notification could not be delivered
          (permanent=False: 4xx, connection refused, timeout -> retried next run;
           permanent=True: 5xx, refused recipient -> marked failed, reported;
           scope "message": only this message, the next one is tried; "server": the server is
           unreachable for now; "settings": a person must fix the mail settings, exit 1)

Adapters catch driver exceptions (psycopg, sqlite3, smtplib, OSError) at their boundary and raise one
of these ``from`` the original, so nothing above them ever handles a driver exception. Messages never
hold a password, a full URL with credentials, or a patient identifier.
"""

from __future__ import annotations

from typing import Literal


class CtpollerError(Exception):
    """Base class. ``str(error)`` is a complete one-line message for the user."""

    temporary: bool = False


class ConfigError(CtpollerError):
    """Bad settings, rules file or command line. Nothing was read or written."""


class SourceError(CtpollerError):
    """The OpenREM database could not be read as expected."""

    def __init__(self, message: str, *, temporary: bool) -> None:
        super().__init__(message)
        self.temporary = temporary


class StateError(CtpollerError):
    """ctpoller's own state store failed."""

    def __init__(self, message: str, *, temporary: bool) -> None:
        super().__init__(message)
        self.temporary = temporary


class LockedError(CtpollerError):
    """Another ctpoller run holds the lock on this state store."""

    temporary = True


NotifyScope = Literal["message", "server", "settings"]


class NotifyError(CtpollerError):
    """A message could not be delivered.

    ``permanent``: trying this message again cannot help. ``scope``: what the failure concerns, so
    the caller knows whether to go on with the next message (``message``) or stop (``server``,
    ``settings``; the latter needs a person).
    """

    def __init__(self, message: str, *, permanent: bool, scope: NotifyScope = "server") -> None:
        super().__init__(message)
        self.permanent = permanent
        self.scope: NotifyScope = "message" if permanent else scope
        self.temporary = not permanent and scope != "settings"


# -- exit codes: every command's (also in the README and --help), and which error gets which ------------

EXIT_OK = 0
EXIT_PERMANENT = 1
EXIT_CONFIG = 2
EXIT_LOCKED = 3
EXIT_TEMPORARY = 75

EXIT_CODES_HELP = """exit codes:
  0   success (exceedances found is still success)
  1   permanent failure: a person must act
  2   configuration error: nothing was done
  3   another ctpoller run holds the lock
  75  temporary failure: the next run retries
"""


def exit_code(error: CtpollerError) -> int:
    if isinstance(error, ConfigError):
        return EXIT_CONFIG
    if isinstance(error, LockedError):
        return EXIT_LOCKED
    return EXIT_TEMPORARY if error.temporary else EXIT_PERMANENT


def severity(code: int) -> int:
    return {EXIT_OK: 0, EXIT_TEMPORARY: 1, EXIT_LOCKED: 1, EXIT_PERMANENT: 2, EXIT_CONFIG: 3}.get(code, 2)
