"""Writes each message as an ``.eml`` file into a directory (an outbox for another mailer, or a record).

Files are written atomically: a temporary file in the same directory, flushed and fsynced, then
renamed over the target and the directory fsynced. A message's file name comes from its Message-ID
alone, so sending the same message again replaces its file instead of adding a second one.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from ctpoller.core.model import Message
from ctpoller.errors import NotifyError
from ctpoller.files import atomic_write
from ctpoller.mail.notice import render
from ctpoller.mail.render import PLAIN, Look

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]+")
_READABLE_MAX = 80


def eml_name(message_id: str) -> str:
    """The file name for ``message_id``: a readable part and a hash, so distinct ids never collide.

    ``"<20240305.7@ctpoller.example>"`` → ``"20240305.7@ctpoller.example-<16 hex digits>.eml"``.
    """
    digest = hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    readable = _UNSAFE.sub("_", message_id.strip().strip("<>"))[:_READABLE_MAX].strip("._-")
    return f"{readable}-{digest}.eml" if readable else f"{digest}.eml"


class EmlDirectoryNotifier:
    """Writes ``<directory>/<name from the Message-ID>.eml``; the directory is created when needed."""

    name = "outbox"

    def __init__(self, directory: Path, *, mail_from: str, look: Look = PLAIN) -> None:
        self.directory = Path(directory)
        self.mail_from = mail_from
        self.look = look

    def __repr__(self) -> str:
        return f"EmlDirectoryNotifier({str(self.directory)!r})"

    def path_for(self, message: Message) -> Path:
        return self.directory / eml_name(message.message_id)

    def send(self, message: Message) -> None:
        """Write the message's file; return once it is durably in place, else raise ``NotifyError``."""
        if not message.recipients:
            raise NotifyError("no recipients: set CTPOLLER_MAIL_TO or recipients in the rules file", permanent=True)
        data = render(message, mail_from=self.mail_from, look=self.look).as_bytes()  # its WIRE policy
        path = self.path_for(message)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda file: file.write(data))
        except OSError as error:
            reason = error.strerror or error.__class__.__name__
            raise NotifyError(f"cannot write {path} ({reason}): check CTPOLLER_OUTBOX_DIR", permanent=False) from error

    def check(self) -> str:
        """Prove that this user may write the directory, or create it; create nothing."""
        directory = self.directory
        if directory.exists() and not directory.is_dir():
            raise NotifyError(f"CTPOLLER_OUTBOX_DIR: {directory} is not a directory", permanent=False, scope="settings")
        if directory.is_dir():
            if os.access(directory, os.W_OK | os.X_OK):
                return f"outbox directory {directory} exists and is writable by this user"
            raise NotifyError(
                f"outbox directory {directory} is not writable by this user: check CTPOLLER_OUTBOX_DIR",
                permanent=False,
                scope="settings",
            )
        parent = directory.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
            return f"outbox directory {directory} does not exist yet; the first email creates it ({parent} is writable)"
        raise NotifyError(
            f"outbox directory {directory} does not exist and {parent} is not writable by this user: "
            "check CTPOLLER_OUTBOX_DIR",
            permanent=False,
            scope="settings",
        )

    def close(self) -> None:
        """Nothing to close."""
