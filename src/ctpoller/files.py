"""The one way ctpoller replaces a file: atomically and durably (the archive, the .eml files, the metrics)."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: Path, write: Callable[[BinaryIO], object], *, mode: int | None = None) -> None:
    """Replace ``path`` with what ``write`` writes, all or nothing, durably.

    ``write`` gets a binary file opened on a temporary file next to ``path``. On any failure the
    temporary file is removed, ``path`` is left as it was and the exception propagates. ``mode``: the
    file's permission bits; else an existing file's are kept, and a new file is readable by its owner only.
    """
    directory = path.parent
    fd, temporary_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    temporary = Path(temporary_name)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        if mode is not None:
            os.chmod(temporary, mode)
        else:
            with contextlib.suppress(FileNotFoundError):
                old = path.stat()
                if stat.S_ISREG(old.st_mode):
                    os.chmod(temporary, stat.S_IMODE(old.st_mode))
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    fsync_directory(directory)


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
