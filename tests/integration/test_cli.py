"""The real ``ctpoller`` command, as the systemd timer and a physicist run it."""

from __future__ import annotations

import fcntl
from pathlib import Path

import openpyxl
import pytest
import sqlalchemy as sa

from ctpoller import __version__
from ctpoller.demo.exams import CONTINUED_1, CONTINUED_2, GE_OPTIMA, GE_VCT, SIEMENS_FLASH_QA
from ctpoller.demo.openrem import OpenremImporter
from ctpoller.store.store import StateStore
from support.ports import free_port
from support.process import BODY_CTDIVOL_RULES, ctpoller, one_line
from support.smtp import Recorder, start_server
from support.workbooks import year_workbook


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(BODY_CTDIVOL_RULES, encoding="utf-8")
    return path


@pytest.fixture
def env(tmp_path: Path, rules_file: Path) -> dict[str, str]:
    return {
        "CTPOLLER_RULES_FILE": str(rules_file),
        "CTPOLLER_STATE_URL": f"sqlite:///{tmp_path / 'state.sqlite3'}",
        "CTPOLLER_OUTBOX_DIR": str(tmp_path / "outbox"),
        "CTPOLLER_ARCHIVE_PATH": str(tmp_path / "archive.xlsx"),
        "CTPOLLER_MAIL_FROM": "ctpoller@hospital.example",
        "CTPOLLER_SETTLE_SECONDS": "0",
    }


def test_version_matches_the_package(tmp_path):
    result = ctpoller("--version", env={}, cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"ctpoller {__version__}"


def test_help_lists_every_command_and_the_exit_codes(tmp_path):
    result = ctpoller("--help", env={}, cwd=tmp_path)
    assert result.returncode == 0
    for word in ("run", "backfill", "check", "status", "demo", "75", "temporary"):
        assert word in result.stdout
    for command in ("run", "backfill", "check", "status", "demo"):
        assert ctpoller(command, "--help", env={}, cwd=tmp_path).returncode == 0


def test_demo_needs_no_server_and_writes_emails_and_archive(tmp_path):
    result = ctpoller("demo", "--dir", str(tmp_path / "demo"), env={}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    emails = list((tmp_path / "demo" / "outbox").glob("*.eml"))
    assert len(emails) >= 5
    workbook = year_workbook(tmp_path / "demo" / "ctpoller-notifications.xlsx")
    rows = list(openpyxl.load_workbook(workbook).active.iter_rows())
    assert len(rows) > len(emails)
    assert "rose from" in result.stdout
    again = ctpoller("demo", "--dir", str(tmp_path / "demo"), env={}, cwd=tmp_path)
    assert again.returncode == 0 and len(list((tmp_path / "demo" / "outbox").glob("*.eml"))) == len(emails)


@pytest.mark.postgres
def test_run_notifies_once_and_writes_the_archive(openrem_db, env, tmp_path):
    env = {**env, "CTPOLLER_SOURCE_URL": openrem_db}
    engine = sa.create_engine(openrem_db)
    openrem = OpenremImporter(engine)
    openrem.import_study(GE_OPTIMA)
    first = ctpoller("run", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "first run" in first.stdout
    openrem.import_study(GE_VCT)
    openrem.import_study(SIEMENS_FLASH_QA)
    engine.dispose()

    dry = ctpoller("run", "--dry-run", env=env, cwd=tmp_path)
    assert dry.returncode == 0 and "would notify physics@hospital.example" in dry.stdout
    assert not (tmp_path / "outbox").exists()

    second = ctpoller("run", env=env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "run ok:" in second.stderr and "2 emails sent" in second.stderr
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 2
    assert openpyxl.load_workbook(year_workbook(tmp_path / "archive.xlsx")).active.max_row == 3

    third = ctpoller("run", env=env, cwd=tmp_path)
    assert third.returncode == 0 and "0 emails sent" in third.stderr
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 2

    status = ctpoller("status", env=env, cwd=tmp_path)
    assert status.returncode == 0 and "watermark: OpenREM study pk" in status.stdout


@pytest.mark.postgres
def test_backfill_without_email_records_history(openrem_db, env, tmp_path):
    env = {**env, "CTPOLLER_SOURCE_URL": openrem_db}
    engine = sa.create_engine(openrem_db)
    OpenremImporter(engine).import_study(GE_VCT)
    engine.dispose()
    result = ctpoller("backfill", "--since", "2000-01-01", "--no-email", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "outbox").exists()
    cells = [
        c
        for row in openpyxl.load_workbook(year_workbook(tmp_path / "archive.xlsx")).active.iter_rows(values_only=True)
        for c in row
    ]
    assert "recorded, not emailed" in cells


@pytest.mark.postgres
def test_check_reports_each_part_on_its_own_line(openrem_db, env, tmp_path):
    result = ctpoller("check", env={**env, "CTPOLLER_SOURCE_URL": openrem_db}, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok ") >= 4
    broken = ctpoller(
        "check",
        env={**env, "CTPOLLER_SOURCE_URL": openrem_db, "CTPOLLER_RULES_FILE": "/nonexistent.toml"},
        cwd=tmp_path,
    )
    assert broken.returncode == 2
    assert "PROBLEM rules file /nonexistent.toml does not exist" in broken.stdout
    (tmp_path / "qa").mkdir()
    a_directory = ctpoller(
        "check",
        env={**env, "CTPOLLER_SOURCE_URL": openrem_db, "CTPOLLER_ARCHIVE_PATH": str(tmp_path / "qa")},
        cwd=tmp_path,
    )
    assert a_directory.returncode == 2
    assert f"PROBLEM CTPOLLER_ARCHIVE_PATH: {tmp_path / 'qa'} is a directory" in a_directory.stdout


@pytest.mark.postgres
def test_dry_run_before_the_first_run_creates_nothing(openrem_db, env, tmp_path):
    result = ctpoller("run", "--dry-run", env={**env, "CTPOLLER_SOURCE_URL": openrem_db}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "would start after OpenREM study pk 0" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rules.toml"]


def test_a_bad_rules_file_exits_2_naming_file_rule_and_key(env, tmp_path, rules_file):
    rules_file.write_text('[[rule]]\nname = "Head"\nctdivol = "sixty"\n', encoding="utf-8")
    result = ctpoller("run", env={**env, "CTPOLLER_SOURCE_URL": "postgresql://x@127.0.0.1:1/db"}, cwd=tmp_path)
    assert result.returncode == 2
    line = one_line(result)
    assert str(rules_file) in line and "'Head'" in line and "ctdivol" in line


def test_a_bad_setting_exits_2_naming_the_variable(env, tmp_path):
    result = ctpoller("run", env={**env, "CTPOLLER_SETTLE_SECONDS": "soon"}, cwd=tmp_path)
    assert result.returncode == 2
    assert one_line(result).startswith("ctpoller: CTPOLLER_SETTLE_SECONDS")


def test_missing_source_url_exits_2_naming_the_variable(env, tmp_path):
    result = ctpoller("run", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "CTPOLLER_SOURCE_URL is not set" in one_line(result)


def test_unreachable_source_is_temporary_and_never_shows_the_password(env, tmp_path):
    url = f"postgresql://ctpoller:s3cret-pw@127.0.0.1:{free_port()}/openrem"
    result = ctpoller("run", env={**env, "CTPOLLER_SOURCE_URL": url}, cwd=tmp_path)
    assert result.returncode == 75
    line = one_line(result)
    assert "127.0.0.1" in line and "CTPOLLER_SOURCE_URL" in line
    assert "s3cret-pw" not in result.stderr + result.stdout


@pytest.mark.postgres
def test_a_second_run_while_one_holds_the_lock_exits_3(openrem_db, env, tmp_path):
    env = {**env, "CTPOLLER_SOURCE_URL": openrem_db}
    assert ctpoller("run", env=env, cwd=tmp_path).returncode == 0
    with open(tmp_path / "state.sqlite3.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = ctpoller("run", env=env, cwd=tmp_path)
    assert result.returncode == 3
    assert "another ctpoller run holds the lock" in one_line(result)


@pytest.mark.postgres
@pytest.mark.smtp
def test_a_run_killed_while_sending_loses_nothing_and_sends_once_later(openrem_db, env, tmp_path, processes):
    inbox = Recorder(hang=15)  # DATA gets no reply while it hangs (until ctpoller is gone)
    server = start_server(inbox)
    port = server.port
    try:
        env = {
            **env,
            "CTPOLLER_SOURCE_URL": openrem_db,
            "CTPOLLER_SMTP_HOST": "127.0.0.1",
            "CTPOLLER_SMTP_PORT": str(port),
            "CTPOLLER_SMTP_SECURITY": "none",
            "CTPOLLER_SMTP_TIMEOUT": "60",
        }
        del env["CTPOLLER_OUTBOX_DIR"]
        assert ctpoller("run", env=env, cwd=tmp_path).returncode == 0
        engine = sa.create_engine(openrem_db)
        OpenremImporter(engine).import_study(GE_VCT)
        engine.dispose()

        running = processes.start("run", env=env, cwd=tmp_path)
        assert inbox.data_arrived.wait(60), "ctpoller never reached DATA"
        processes.kill(running)  # SIGKILL: after the decision was committed, before the server accepted the message

        state = StateStore(env["CTPOLLER_STATE_URL"])
        try:
            assert state.outbox_counts() == {"sending": 1}  # claimed by the run that died, not sent
            assert state.integrity_check() == "ok"
        finally:
            state.dispose()
        inbox.hang = 0
        after = ctpoller("run", env=env, cwd=tmp_path)
        assert after.returncode == 0, after.stderr
        assert "1 emails sent" in after.stderr
        assert ctpoller("run", env=env, cwd=tmp_path).returncode == 0
        assert len(inbox.messages) == 1
    finally:
        server.stop()


@pytest.mark.postgres
def test_each_run_writes_prometheus_metrics_atomically(openrem_db, env, tmp_path):
    metrics = tmp_path / "ctpoller.prom"
    env = {**env, "CTPOLLER_SOURCE_URL": openrem_db, "CTPOLLER_METRICS_FILE": str(metrics)}
    assert ctpoller("run", env=env, cwd=tmp_path).returncode == 0
    engine = sa.create_engine(openrem_db)
    OpenremImporter(engine).import_study(GE_VCT)
    engine.dispose()
    assert ctpoller("run", env=env, cwd=tmp_path).returncode == 0
    values = dict(line.split(" ", 1) for line in metrics.read_text().splitlines() if not line.startswith("#"))
    assert values["ctpoller_last_run_success"] == "1"
    assert values["ctpoller_notifications_sent"] == "1"
    assert values["ctpoller_outbox_backlog"] == "0"
    assert float(values["ctpoller_last_success_timestamp_seconds"]) > 1.7e9
    assert "ctpoller_source_lag_seconds" not in values  # a primary, not a standby

    down = ctpoller(
        "run", env={**env, "CTPOLLER_SOURCE_URL": f"postgresql://x@127.0.0.1:{free_port()}/o"}, cwd=tmp_path
    )
    assert down.returncode == 75
    after = dict(line.split(" ", 1) for line in metrics.read_text().splitlines() if not line.startswith("#"))
    assert after["ctpoller_last_run_success"] == "0" and after["ctpoller_last_run_exit_code"] == "75"
    assert after["ctpoller_last_success_timestamp_seconds"] == values["ctpoller_last_success_timestamp_seconds"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ctpoller.prom")] == []


@pytest.mark.postgres
def test_logs_of_failing_runs_hold_no_patient_data_secrets_or_urls(openrem_db, env, tmp_path):
    from ctpoller.demo.exams import SEED_STUDIES

    engine = sa.create_engine(openrem_db)
    importer = OpenremImporter(engine)
    assert ctpoller("run", env={**env, "CTPOLLER_SOURCE_URL": openrem_db}, cwd=tmp_path).returncode == 0
    for study in SEED_STUDIES:
        importer.import_study(study)
    engine.dispose()
    password = "pw-Zq81-never-shown"
    runs = [
        (
            "run",
            "-v",
            {
                "CTPOLLER_SMTP_HOST": "127.0.0.1",
                "CTPOLLER_SMTP_PORT": str(free_port()),
                "CTPOLLER_SMTP_SECURITY": "none",
                "CTPOLLER_SMTP_PASSWORD": password,
            },
        ),
        ("run", "-v", {"CTPOLLER_SOURCE_URL": f"postgresql://ctpoller:{password}@127.0.0.1:{free_port()}/openrem"}),
        ("run", "-v", {"CTPOLLER_STATE_URL": f"postgresql://state:{password}@127.0.0.1:{free_port()}/state"}),
        (
            "check",
            "-v",
            {
                "CTPOLLER_SMTP_HOST": "127.0.0.1",
                "CTPOLLER_SMTP_PORT": str(free_port()),
                "CTPOLLER_SMTP_USERNAME": "u",
                "CTPOLLER_SMTP_PASSWORD": password,
            },
        ),
    ]
    secrets = {password} | {s.patient_name for s in SEED_STUDIES if s.patient_name}
    secrets |= {s.patient_id for s in SEED_STUDIES if s.patient_id}
    outputs = []
    for command, flag, extra in runs:
        base = {**env, "CTPOLLER_SOURCE_URL": openrem_db}
        base.pop("CTPOLLER_OUTBOX_DIR") if "CTPOLLER_SMTP_HOST" in extra else None
        result = ctpoller(command, flag, env={**base, **extra}, cwd=tmp_path)
        assert result.returncode != 0, result.stdout + result.stderr
        outputs.append(result.stdout + result.stderr)
    for output in outputs:
        for secret in secrets:
            assert secret not in output
        assert "postgresql://" not in output and "Traceback" not in output


@pytest.mark.postgres
def test_two_hosts_sharing_a_postgresql_state_store_never_both_send(openrem_db, state_pg_url, env, tmp_path, processes):
    env = {**env, "CTPOLLER_SOURCE_URL": openrem_db, "CTPOLLER_STATE_URL": state_pg_url}
    assert ctpoller("run", env=env, cwd=tmp_path).returncode == 0
    engine = sa.create_engine(openrem_db)
    importer = OpenremImporter(engine)
    codes: list[int] = []
    for study in (GE_VCT, SIEMENS_FLASH_QA, GE_OPTIMA):
        importer.import_study(study)
        both = [processes.start("run", env=env, cwd=tmp_path) for _ in range(2)]
        for process in both:
            process.communicate(timeout=120)
            codes.append(process.returncode)
    engine.dispose()
    assert set(codes) <= {0, 3}, codes
    assert ctpoller("run", env=env, cwd=tmp_path).returncode == 0
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 2  # GE VCT and the Flash QA, once each


@pytest.mark.postgres
def test_reset_after_a_restore_then_backfill_notifies_only_what_is_new(openrem_db, env, tmp_path):
    env = {**env, "CTPOLLER_SOURCE_URL": openrem_db}
    engine = sa.create_engine(openrem_db)
    openrem = OpenremImporter(engine)
    assert ctpoller("run", env=env, cwd=tmp_path).returncode == 0
    for study in (GE_OPTIMA, GE_VCT, SIEMENS_FLASH_QA):
        openrem.import_study(study)
    assert ctpoller("run", env=env, cwd=tmp_path).returncode == 0  # settle 0: VCT and Flash QA notified
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 2
    openrem.delete_study(3)
    openrem.delete_study(2)
    with engine.begin() as conn:  # OpenREM restored from a backup that held only the first study
        conn.execute(sa.text("ALTER SEQUENCE remapp_generalstudymoduleattr_id_seq RESTART WITH 2"))
    openrem.import_study(GE_VCT)  # re-imported after the restore: pk 2, below the watermark 3
    engine.dispose()

    stopped = ctpoller("run", env=env, cwd=tmp_path)
    assert stopped.returncode == 1
    assert "ctpoller reset" in one_line(stopped)
    dry = ctpoller("reset", env=env, cwd=tmp_path)
    assert dry.returncode == 0 and "--yes" in dry.stdout
    assert ctpoller("reset", "--yes", env=env, cwd=tmp_path).returncode == 0
    back = ctpoller("backfill", "--since", "2000-01-01", env=env, cwd=tmp_path)
    assert back.returncode == 0, back.stderr
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 2  # the VCT exam is not notified again
    assert ctpoller("run", env=env, cwd=tmp_path).returncode == 0


@pytest.mark.postgres
def test_after_a_reset_a_continued_report_still_counts_the_exam_begun_before_it(openrem_db, env, tmp_path, rules_file):
    rules_file.write_text(
        '[[rule]]\nname = "Exam DLP"\ndlp_total = 100\nrecipients = ["physics@hospital.example"]\n', encoding="utf-8"
    )
    env = {**env, "CTPOLLER_SOURCE_URL": openrem_db}
    engine = sa.create_engine(openrem_db)
    openrem = OpenremImporter(engine)
    assert ctpoller("run", env=env, cwd=tmp_path).returncode == 0
    openrem.import_study(CONTINUED_1)
    assert ctpoller("run", env=env, cwd=tmp_path).returncode == 0  # 60.17 alone: under the limit
    assert ctpoller("reset", "--yes", env=env, cwd=tmp_path).returncode == 0
    openrem.import_study(CONTINUED_2)
    engine.dispose()
    assert ctpoller("run", env=env, cwd=tmp_path).returncode == 0
    [email] = (tmp_path / "outbox").glob("*.eml")
    assert "116.61" in email.read_text(encoding="utf-8")  # 60.17 + 56.44: the whole exam


@pytest.mark.postgres
@pytest.mark.smtp
def test_queued_notifications_are_delivered_even_while_openrem_is_down(openrem_db, env, tmp_path, inbox):
    env = {
        **env,
        "CTPOLLER_SOURCE_URL": openrem_db,
        "CTPOLLER_SMTP_HOST": "127.0.0.1",
        "CTPOLLER_SMTP_PORT": str(free_port()),
        "CTPOLLER_SMTP_SECURITY": "none",
    }
    del env["CTPOLLER_OUTBOX_DIR"]
    assert ctpoller("run", env=env, cwd=tmp_path).returncode == 0
    engine = sa.create_engine(openrem_db)
    OpenremImporter(engine).import_study(GE_VCT)
    engine.dispose()
    assert ctpoller("run", env=env, cwd=tmp_path).returncode == 75  # mail server down: queued
    down = {
        **env,
        "CTPOLLER_SMTP_PORT": str(inbox.port),
        "CTPOLLER_SOURCE_URL": f"postgresql://x@127.0.0.1:{free_port()}/o",
    }
    result = ctpoller("run", env=down, cwd=tmp_path)
    assert result.returncode == 75 and "127.0.0.1" in result.stderr
    assert len(inbox.messages) == 1


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CTPOLLER_SOURCE_URL", "notaurl"),
        ("CTPOLLER_SOURCE_URL", "mysql://u@h/db"),
        ("CTPOLLER_SOURCE_URL", "postgresql://u@h:notaport/db"),
        ("CTPOLLER_STATE_URL", "sqlite+nosuch:///x"),
        ("CTPOLLER_STATE_URL", "postgresql://u@h:abc/db"),
    ],
)
def test_a_bad_url_exits_2_naming_the_variable(env, tmp_path, variable, value):
    env = {"CTPOLLER_SOURCE_URL": "postgresql://u@127.0.0.1:1/db", **env, variable: value}
    result = ctpoller("run", env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert variable in one_line(result)


def test_a_missing_env_file_is_a_configuration_error(tmp_path):
    result = ctpoller("run", "--env-file", str(tmp_path / "nope.env"), env={}, cwd=tmp_path)
    assert result.returncode == 2
    assert "nope.env does not exist" in one_line(result)


@pytest.mark.postgres
def test_under_systemd_log_lines_carry_no_timestamp_of_their_own(openrem_db, env, tmp_path):
    env = {**env, "CTPOLLER_SOURCE_URL": openrem_db}
    assert ctpoller("run", env=env, cwd=tmp_path).returncode == 0
    plain = ctpoller("run", env=env, cwd=tmp_path)
    assert plain.stderr[:2] == "20"  # a timestamp when run by hand
    journal = ctpoller("run", env={**env, "JOURNAL_STREAM": "8:12345"}, cwd=tmp_path)
    assert journal.returncode == 0
    [line] = journal.stderr.splitlines()
    assert line.startswith("INFO ctpoller: run ok:")
