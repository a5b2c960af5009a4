"""Never miss, never twice: a refused notification waits visibly for a person; check proves each ok
and creates nothing; exit codes say who must act. The real command, a real SMTP server, PostgreSQL."""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import openpyxl
import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from ctpoller.demo.exams import GE_VCT
from ctpoller.demo.openrem import OpenremImporter
from ctpoller.store.store import StateStore
from support import pg
from support.process import BODY_CTDIVOL_RULES, CompletedRun, ctpoller, one_line
from support.smtp import Recorder, Server
from support.workbooks import year_workbook

ROLE_SQL = Path(__file__).parents[2] / "sql" / "readonly_role.sql"
WAITING = "notifications failed permanently and wait for 'ctpoller retry' or 'ctpoller dismiss'"


@pytest.fixture
def settings(tmp_path: Path) -> dict[str, str]:
    rules = tmp_path / "rules.toml"
    rules.write_text(BODY_CTDIVOL_RULES, encoding="utf-8")
    return {
        "CTPOLLER_RULES_FILE": str(rules),
        "CTPOLLER_STATE_URL": f"sqlite:///{tmp_path / 'state.sqlite3'}",
        "CTPOLLER_ARCHIVE_PATH": str(tmp_path / "archive.xlsx"),
        "CTPOLLER_METRICS_FILE": str(tmp_path / "ctpoller.prom"),
        "CTPOLLER_MAIL_FROM": "ctpoller@hospital.example",
        "CTPOLLER_SETTLE_SECONDS": "0",
    }


@pytest.fixture
def refusing_mail(serve: Callable[..., Server]) -> Server:
    """A real SMTP server whose first DATA is answered 550 (a misconfigured connector), then 250."""
    return serve(Recorder(data_replies=["550 5.7.1 relaying denied"]))


def with_smtp(settings: dict[str, str], port: int, **extra: str) -> dict[str, str]:
    return {
        **settings,
        "CTPOLLER_SMTP_HOST": "127.0.0.1",
        "CTPOLLER_SMTP_PORT": str(port),
        "CTPOLLER_SMTP_SECURITY": "none",
        **extra,
    }


def metrics(settings: dict[str, str]) -> dict[str, str]:
    text = Path(settings["CTPOLLER_METRICS_FILE"]).read_text()
    return dict(line.split(" ", 1) for line in text.splitlines() if not line.startswith("#"))


def archive_cells(settings: dict[str, str]) -> list[object]:
    sheet = openpyxl.load_workbook(year_workbook(Path(settings["CTPOLLER_ARCHIVE_PATH"]))).active
    return [cell for row in sheet.iter_rows(values_only=True) for cell in row]


def refused_once(openrem_db: str, env: dict[str, str], cwd: Path) -> CompletedRun:
    """First run, then one exam over the limit whose email the server refuses with 550."""
    assert ctpoller("run", env=env, cwd=cwd).returncode == 0
    engine = sa.create_engine(openrem_db)
    OpenremImporter(engine).import_study(GE_VCT)
    engine.dispose()
    return ctpoller("run", env=env, cwd=cwd)


@pytest.mark.postgres
@pytest.mark.smtp
def test_a_550_waits_visibly_in_every_run_until_retry_delivers_it_once_with_its_message_id(
    openrem_db, settings, refusing_mail, tmp_path
):
    env = with_smtp({**settings, "CTPOLLER_SOURCE_URL": openrem_db}, refusing_mail.port)
    refused = refused_once(openrem_db, env, tmp_path)
    assert refused.returncode == 1, refused.stderr  # the run that met the refusal: a person must act
    assert "550 5.7.1 relaying denied" in refused.stderr and WAITING in refused.stderr
    assert refusing_mail.handler.delivered == []
    state = StateStore(env["CTPOLLER_STATE_URL"])
    [failed] = state.messages_with_status("failed")
    state.dispose()

    for _ in range(2):  # later runs succeed, and say so every time, and the metric stays up
        later = ctpoller("run", env=env, cwd=tmp_path)
        assert later.returncode == 0, later.stderr
        assert f"WARNING ctpoller.jobs.deliver: 1 {WAITING}: id {failed.id} (study date " in later.stderr
        assert "550 5.7.1 relaying denied" in later.stderr
        assert metrics(settings)["ctpoller_outbox_failed"] == "1"
        assert metrics(settings)["ctpoller_last_run_exit_code"] == "0"

    status = ctpoller("status", env=env, cwd=tmp_path)
    assert f"  id {failed.id} (study date 2013-" in status.stdout and "relaying denied" in status.stdout

    listed = ctpoller("retry", env=env, cwd=tmp_path)  # no ID, no --all: lists, changes nothing
    assert listed.returncode == 0 and f"id {failed.id} " in listed.stdout and "nothing was changed" in listed.stdout
    assert refusing_mail.handler.delivered == []

    unknown = ctpoller("retry", "999", env=env, cwd=tmp_path)
    assert unknown.returncode == 2 and "no notification with id or Message-ID '999'" in one_line(unknown)

    retried = ctpoller("retry", failed.message_id, env=env, cwd=tmp_path)  # by Message-ID
    assert retried.returncode == 0, retried.stderr
    [delivered] = refusing_mail.handler.delivered
    sent = email.message_from_bytes(delivered.content, policy=email.policy.default)
    assert sent["Message-ID"] == failed.message_id
    assert "sent" in archive_cells(settings) and "failed" not in archive_cells(settings)

    again = ctpoller("retry", "--all", env=env, cwd=tmp_path)
    assert again.returncode == 0 and "nothing to retry" in again.stdout
    after = ctpoller("run", env=env, cwd=tmp_path)
    assert after.returncode == 0 and WAITING not in after.stderr
    assert metrics(settings)["ctpoller_outbox_failed"] == "0"
    assert len(refusing_mail.handler.delivered) == 1  # once


@pytest.mark.postgres
@pytest.mark.smtp
def test_dismiss_needs_a_reason_keeps_it_in_the_archive_and_stops_the_warning(
    openrem_db, settings, refusing_mail, tmp_path
):
    env = with_smtp({**settings, "CTPOLLER_SOURCE_URL": openrem_db}, refusing_mail.port)
    assert refused_once(openrem_db, env, tmp_path).returncode == 1
    no_reason = ctpoller("dismiss", "--all", env=env, cwd=tmp_path)
    assert no_reason.returncode == 2 and "--reason" in one_line(no_reason)
    dismissed = ctpoller("dismiss", "--all", "--reason", "phoned the physicist", env=env, cwd=tmp_path)
    assert dismissed.returncode == 0, dismissed.stderr
    cells = archive_cells(settings)
    assert "dismissed" in cells
    assert any(isinstance(c, str) and "phoned the physicist" in c and "relaying denied" in c for c in cells)

    later = ctpoller("run", env=env, cwd=tmp_path)
    assert later.returncode == 0 and WAITING not in later.stderr
    assert metrics(settings)["ctpoller_outbox_failed"] == "0"
    assert "1 dismissed" in ctpoller("status", env=env, cwd=tmp_path).stdout
    assert refusing_mail.handler.delivered == []  # dismissed: never sent


@pytest.mark.postgres
def test_check_on_a_fresh_configuration_creates_no_file(openrem_db, settings, tmp_path):
    env = {**settings, "CTPOLLER_SOURCE_URL": openrem_db, "CTPOLLER_OUTBOX_DIR": str(tmp_path / "outbox")}
    before = sorted(p.name for p in tmp_path.iterdir())
    result = ctpoller("check", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no state store, lock, outbox, archive
    assert "not created yet" in result.stdout and "may SELECT" in result.stdout
    assert "PROBLEM" not in result.stdout


def test_check_at_the_default_state_location_creates_no_directory_and_the_first_run_does(
    openrem_db, settings, tmp_path
):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in settings.items() if k != "CTPOLLER_STATE_URL"}
    env |= {"CTPOLLER_SOURCE_URL": openrem_db, "CTPOLLER_OUTBOX_DIR": str(tmp_path / "outbox"), "HOME": str(home)}
    env |= {"XDG_STATE_HOME": "", "STATE_DIRECTORY": ""}
    result = ctpoller("check", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "not created yet" in result.stdout
    assert list(home.iterdir()) == []
    assert ctpoller("run", env=env, cwd=tmp_path).returncode == 0
    state_dir = home / ".local" / "state" / "ctpoller"
    assert (state_dir / "ctpoller-state.sqlite3").is_file()
    assert oct(state_dir.stat().st_mode & 0o777) == "0o700"


def test_check_with_an_empty_settings_file_names_it_and_every_missing_setting(tmp_path):
    empty = tmp_path / "ctpoller.env"
    empty.write_text("# nothing yet\n", encoding="utf-8")
    env = {"CTPOLLER_STATE_URL": f"sqlite:///{tmp_path / 'state.sqlite3'}"}
    result = ctpoller("check", "--env-file", str(empty), env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert f"PROBLEM settings file {empty} sets nothing" in result.stdout
    assert "PROBLEM CTPOLLER_SOURCE_URL is not set" in result.stdout
    assert "PROBLEM CTPOLLER_RULES_FILE is not set" in result.stdout
    assert "ok      settings" not in result.stdout
    assert not (tmp_path / "state.sqlite3").exists()


@pytest.fixture
def reader_url(openrem_db):
    admin = pg.libpq_url(openrem_db)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(ROLE_SQL.read_text(encoding="utf-8"))
    yield make_url(openrem_db).set(username="ctpoller_reader").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP OWNED BY ctpoller_reader")
        conn.execute("DROP ROLE ctpoller_reader")


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("table", "column"),
    [
        ("remapp_uniqueequipmentnames", "display_name"),  # required
        ("remapp_standardnames", "standard_name"),  # optional, but read when it is there
    ],
)
def test_check_names_a_column_the_role_may_not_select(openrem_db, reader_url, settings, tmp_path, table, column):
    env = {**settings, "CTPOLLER_SOURCE_URL": reader_url, "CTPOLLER_OUTBOX_DIR": str(tmp_path / "outbox")}
    assert ctpoller("check", env=env, cwd=tmp_path).returncode == 0
    with psycopg.connect(pg.libpq_url(openrem_db), autocommit=True) as conn:
        conn.execute(f"REVOKE SELECT ({column}) ON {table} FROM ctpoller_reader")
    result = ctpoller("check", env=env, cwd=tmp_path)
    assert result.returncode == 1, result.stdout
    assert f"may not SELECT {table}.{column}," in result.stdout
    assert result.stdout.count("PROBLEM") == 1  # only the grants; every other part is proven ok


@pytest.mark.postgres
def test_an_archive_directory_that_is_missing_exits_1_after_the_emails_went_out(openrem_db, settings, tmp_path):
    archive = tmp_path / "qa-share" / "archive.xlsx"
    env = {
        **settings,
        "CTPOLLER_SOURCE_URL": openrem_db,
        "CTPOLLER_OUTBOX_DIR": str(tmp_path / "outbox"),
        "CTPOLLER_ARCHIVE_PATH": str(archive),
    }
    check = ctpoller("check", env=env, cwd=tmp_path)
    assert check.returncode == 1
    assert f"PROBLEM cannot write the archive {archive}: directory {archive.parent} does not exist" in check.stdout
    result = refused_once(openrem_db, env, tmp_path)
    assert result.returncode == 1, result.stderr
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1  # the email first
    [line] = [x for x in result.stderr.splitlines() if "ERROR" in x]
    assert str(archive.parent) in line and "CTPOLLER_ARCHIVE_PATH" in line
    archive.parent.mkdir()
    fixed = ctpoller("run", env=env, cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    assert year_workbook(archive).exists()  # nothing lost: the next run that can writes it


def _nobody_python(clean: dict[str, str]) -> tuple[str, dict[str, str]] | None:
    """An interpreter of this Python version that the user nobody may run, with ctpoller importable."""
    site = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    extra = {"PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"), *site])}
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, shutil.which(version, path="/usr/bin:/usr/local/bin")):
        if not candidate:
            continue
        probe = subprocess.run(
            ["runuser", "-u", "nobody", "--", candidate, "-c", "import ctpoller.wiring, psycopg"],
            env={**clean, **extra},
            cwd="/",
            capture_output=True,
            timeout=60,
            check=False,
        )
        if probe.returncode == 0:
            return candidate, extra
    return None


@pytest.mark.postgres
def test_an_archive_directory_this_user_may_not_write_exits_1(openrem_db, settings):
    """As nobody: root may write anywhere, so only another user shows what a service user meets."""
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs root and runuser to run ctpoller as the user nobody")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CTPOLLER_")}
    found = _nobody_python(clean)
    if found is None:
        pytest.skip(f"no python{sys.version_info.major}.{sys.version_info.minor} the user nobody may run")
    python, extra = found
    top = Path(tempfile.mkdtemp(prefix="ctpoller-nobody-"))
    try:
        os.chmod(top, 0o755)
        home, locked = top / "nobody", top / "qa"
        home.mkdir()
        shutil.chown(home, "nobody")
        locked.mkdir(mode=0o755)  # root's: nobody may not write here
        rules = top / "rules.toml"
        shutil.copy(settings["CTPOLLER_RULES_FILE"], rules)
        os.chmod(rules, 0o644)
        env = {
            **settings,
            "CTPOLLER_RULES_FILE": str(rules),
            "CTPOLLER_SOURCE_URL": openrem_db,
            "CTPOLLER_STATE_URL": f"sqlite:///{home / 'state.sqlite3'}",
            "CTPOLLER_OUTBOX_DIR": str(home / "outbox"),
            "CTPOLLER_ARCHIVE_PATH": str(locked / "archive.xlsx"),
            "CTPOLLER_METRICS_FILE": str(home / "ctpoller.prom"),
            "HOME": str(home),
            **extra,
        }

        def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["runuser", "-u", "nobody", "--", python, "-m", "ctpoller", *args],
                env={**clean, **env},
                cwd=home,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )

        check = as_nobody("check")
        assert check.returncode == 1, check.stdout + check.stderr
        assert f"PROBLEM cannot write the archive {locked / 'archive.xlsx'}: directory {locked} is not writable" in (
            check.stdout
        )
        assert as_nobody("run").returncode == 0
        engine = sa.create_engine(openrem_db)
        OpenremImporter(engine).import_study(GE_VCT)
        engine.dispose()
        result = as_nobody("run")
        assert result.returncode == 1, result.stderr
        assert len(list((home / "outbox").glob("*.eml"))) == 1  # the email first
        assert f"directory {locked} is not writable by this user" in result.stderr
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.postgres
def test_a_mail_server_that_never_answers_is_a_timeout_and_the_message_stays_queued(openrem_db, settings, tmp_path):
    with socket.socket() as silent:  # accepts the connection (the kernel does) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        env = with_smtp({**settings, "CTPOLLER_SOURCE_URL": openrem_db}, silent.getsockname()[1])
        env["CTPOLLER_SMTP_TIMEOUT"] = "1"
        result = refused_once(openrem_db, env, tmp_path)
    assert result.returncode == 75, result.stderr
    assert "timed out: no answer within 1 s while connecting" in result.stderr
    assert "closed the connection" not in result.stderr
    state = StateStore(env["CTPOLLER_STATE_URL"])
    assert state.outbox_counts() == {"pending": 1}
    state.dispose()
