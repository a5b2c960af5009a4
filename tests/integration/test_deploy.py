"""The systemd units in deploy/systemd are valid and keep their promises."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).parents[2] / "deploy" / "systemd"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / name)
    return parser


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_analyze_verify_accepts_the_units_without_a_warning(tmp_path: Path) -> None:
    ctpoller = Path(sys.executable).with_name("ctpoller")
    assert ctpoller.exists()
    service = (DEPLOY / "ctpoller.service").read_text().replace("/opt/ctpoller/venv/bin/ctpoller", str(ctpoller))
    (tmp_path / "ctpoller.service").write_text(service)
    shutil.copy(DEPLOY / "ctpoller.timer", tmp_path / "ctpoller.timer")
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "ctpoller.service", "ctpoller.timer"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_the_qa_group_drop_in_verifies_with_the_service_and_gives_the_group_the_archive_directory(
    tmp_path: Path,
) -> None:
    drop_in = unit("qa-group.conf")
    assert drop_in["Service"]["SupplementaryGroups"] and drop_in["Service"]["ReadWritePaths"]
    assert "Group" not in drop_in["Service"] and "User" not in drop_in["Service"]  # the user stays dynamic
    ctpoller = Path(sys.executable).with_name("ctpoller")
    service = (DEPLOY / "ctpoller.service").read_text().replace("/opt/ctpoller/venv/bin/ctpoller", str(ctpoller))
    (tmp_path / "ctpoller.service").write_text(service + "\n" + (DEPLOY / "qa-group.conf").read_text())
    shutil.copy(DEPLOY / "ctpoller.timer", tmp_path / "ctpoller.timer")
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "ctpoller.service", "ctpoller.timer"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_analyze_verify_accepts_the_digest_units_without_a_warning(tmp_path: Path) -> None:
    ctpoller = Path(sys.executable).with_name("ctpoller")
    service = (DEPLOY / "ctpoller-digest.service").read_text().replace("/opt/ctpoller/venv/bin/ctpoller", str(ctpoller))
    (tmp_path / "ctpoller-digest.service").write_text(service)
    shutil.copy(DEPLOY / "ctpoller-digest.timer", tmp_path / "ctpoller-digest.timer")
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "ctpoller-digest.service", "ctpoller-digest.timer"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr


def test_the_digest_runs_weekly_hardened_like_the_service() -> None:
    digest, service = unit("ctpoller-digest.service")["Service"], unit("ctpoller.service")["Service"]
    assert digest["ExecStart"].endswith("ctpoller digest")
    for key in ("DynamicUser", "StateDirectory", "ProtectSystem", "NoNewPrivileges", "RestrictAddressFamilies"):
        assert digest[key] == service[key], key
    assert digest["User"] == "ctpoller"  # the dynamic user of ctpoller.service: one owner of the state
    timer = unit("ctpoller-digest.timer")["Timer"]
    assert timer["OnCalendar"].startswith("Mon") and timer["Persistent"] == "true"


def test_the_service_runs_ctpoller_run_hardened_with_credentials() -> None:
    service = unit("ctpoller.service")["Service"]
    assert service["Type"] == "oneshot"
    assert service["ExecStart"].endswith("ctpoller run")
    assert service["DynamicUser"] == "yes" and service["StateDirectory"] == "ctpoller"
    assert service["ProtectSystem"] == "strict" and service["NoNewPrivileges"] == "yes"
    assert "AF_INET" in service["RestrictAddressFamilies"]
    assert service["TimeoutStartSec"]
    text = (DEPLOY / "ctpoller.service").read_text()
    assert "LoadCredential=CTPOLLER_SMTP_PASSWORD:" in text
    assert "LoadCredential=CTPOLLER_SOURCE_PASSWORD:" in text
    assert "SystemCallFilter=@system-service" in text


def test_the_timer_starts_the_service_every_minute_and_catches_up() -> None:
    timer = unit("ctpoller.timer")["Timer"]
    assert timer["OnCalendar"] == "minutely"
    assert timer["Persistent"] == "true"
    assert timer["Unit"] == "ctpoller.service"
