"""Real headless Chromium (Debian's ``chromium`` package) for tests of the HTML report, and a PNG reader.

Without Chromium a browser test fails under CI (or ``CTPOLLER_REQUIRE_CHROMIUM=1``; ``.ci/run``
installs the package and sets it) and skips elsewhere, saying why.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

REQUIRE_VARIABLE = "CTPOLLER_REQUIRE_CHROMIUM"
#: No network, no first-run or background traffic, a throwaway profile; --no-sandbox: tests may run as root.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def chromium_required() -> bool:
    ci = os.environ.get("CI", "").strip().lower()
    return (ci not in ("", "false", "0")) or os.environ.get(REQUIRE_VARIABLE, "").strip() == "1"


def chromium() -> str:
    """The Chromium binary, or a failure (under CI) or skip (elsewhere) saying how to get one."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    reason = "no chromium on PATH: install Debian's package (apt-get install -y chromium; .ci/run does)"
    if chromium_required():
        pytest.fail(f"{reason} ({REQUIRE_VARIABLE}=1 or CI is set)")
    pytest.skip(reason)


def run(page: Path, profile: Path, *extra: str) -> str:
    """Load ``page`` in headless Chromium with ``extra`` flags; its stdout."""
    command = [chromium(), *FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr[-2000:]}"
    return done.stdout


def dump_dom(page: Path, profile: Path) -> str:
    """The page's DOM after its scripts ran, as HTML."""
    return run(page, profile, "--dump-dom")


def screenshot(page: Path, profile: Path, png: Path, size: str = "1280,900") -> bytes:
    run(page, profile, f"--screenshot={png}", f"--window-size={size}")
    return png.read_bytes()


def png_grey(data: bytes) -> tuple[int, int, list[int]]:
    """Width, height and the grey level (0-255) of every pixel of an 8-bit RGB/RGBA PNG (stdlib only)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, idat, header = 8, b"", b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        chunk = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
        position += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, f"unexpected PNG: depth {depth}, colour {colour}"
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompress(idat)
    previous = bytearray(stride)
    grey: list[int] = []
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up = previous[x]
            corner = previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                guess = left + up - corner
                pa, pb, pc = abs(guess - left), abs(guess - up), abs(guess - corner)
                nearest = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[x] = (line[x] + nearest) & 0xFF
        grey.extend((line[x] * 299 + line[x + 1] * 587 + line[x + 2] * 114) // 1000 for x in range(0, stride, channels))
        previous = line
    return width, height, grey
