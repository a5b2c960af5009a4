"""The one small interface every notifier implements."""

from __future__ import annotations

from typing import Protocol

from ctpoller.core.model import Message


class Notifier(Protocol):
    """Delivers one message at a time.

    ``send`` returns only once the message was accepted (SMTP: the server's 250 to DATA; files: the
    file is durably in place). It raises ``ctpoller.errors.NotifyError`` otherwise, with
    ``permanent=True`` when trying again cannot help (5xx, every recipient refused). It may keep a
    connection open between calls; ``close`` ends it and never raises.
    """

    name: str

    def send(self, message: Message) -> None: ...

    def close(self) -> None: ...
