"""The ``ctpoller`` program's start-up: libraries loaded with the cyclic GC paused, then frozen."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctpoller import cli


@pytest.fixture
def collector() -> Iterator[None]:
    """Whatever a test does to the collector is undone: enabled, nothing frozen."""
    yield
    gc.unfreeze()
    gc.enable()


def test_console_leaves_the_collector_running_with_the_libraries_frozen(
    collector: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["ctpoller", "--version"])
    gc.unfreeze()
    with pytest.raises(SystemExit) as stopped:
        cli.console()
    assert stopped.value.code == 0
    assert capsys.readouterr().out.startswith("ctpoller ")
    assert gc.isenabled(), "a long backfill must still collect its reference cycles"
    assert gc.get_freeze_count() > 0


def test_console_does_not_turn_on_a_collector_its_caller_turned_off(
    collector: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["ctpoller", "--version"])
    gc.disable()
    with pytest.raises(SystemExit):
        cli.console()
    assert not gc.isenabled()


def test_main_leaves_the_collector_alone(collector: None, capsys: pytest.CaptureFixture[str]) -> None:
    gc.unfreeze()
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_a_broken_library_install_is_one_line_from_the_command_that_needs_it(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "psycopg.py").write_text("raise ImportError('psycopg is broken here')\n", encoding="utf-8")
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nname = "Any"\ndlp_total = 1\nrecipients = ["p@h.example"]\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTPOLLER_")}
    env.update(
        PYTHONPATH=str(broken),
        CTPOLLER_SOURCE_URL="postgresql://ctpoller@127.0.0.1:1/openrem",
        CTPOLLER_STATE_URL=f"sqlite:///{tmp_path / 'state.sqlite3'}",
        CTPOLLER_RULES_FILE=str(rules),
        CTPOLLER_OUTBOX_DIR=str(tmp_path / "outbox"),
    )

    def ctpoller(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "ctpoller", *args]
        return subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)

    version = ctpoller("--version")
    assert version.returncode == 0 and version.stdout.startswith("ctpoller "), version.stderr
    run = ctpoller("run")
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "ctpoller: internal error: ImportError: psycopg is broken here (run with --debug for details)"
    ]
