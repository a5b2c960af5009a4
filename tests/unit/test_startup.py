"""The ``ctpoller`` program's start-up: libraries loaded with the cyclic GC paused, then frozen."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

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
    assert {"psycopg", "sqlalchemy", "pydantic_settings", "ctpoller.wiring"} <= set(sys.modules)


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
