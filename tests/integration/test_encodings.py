"""OpenREM on a database of any encoding: SQL_ASCII (OpenREM runs on it) holds whatever bytes it was
given, and ctpoller reads them without failing, showing a byte that is not UTF-8 as U+FFFD."""

from __future__ import annotations

import email
import email.policy
import uuid
from collections.abc import Iterator
from pathlib import Path

import openpyxl
import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from ctpoller.demo.exams import GE_OPTIMA, GE_VCT
from ctpoller.demo.openrem import OpenremImporter
from support import pg
from support.process import ctpoller
from support.workbooks import year_workbook

pytestmark = [pytest.mark.postgres]

RULES = (
    '[defaults]\nrecipients = ["physics@hospital.example"]\n[[rule]]\nname = "Body"\nphantom = "body"\nctdivol = 50\n'
)
LATIN1_E = "\\xE9"  # 'é' in Latin-1: one byte that is not UTF-8


def sql_ascii_database(server: pg.PgServer, prefix: str) -> Iterator[str]:
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg.libpq_url(server.admin_url), autocommit=True) as admin:
        admin.execute(
            f"CREATE DATABASE \"{name}\" WITH ENCODING 'SQL_ASCII' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'"
        )
    url = make_url(server.admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        server.drop_database(url)


@pytest.fixture
def sql_ascii_openrem(pg_server: pg.PgServer) -> Iterator[str]:
    """An OpenREM database created with ENCODING 'SQL_ASCII'; yields its postgresql+psycopg:// URL."""
    for url in sql_ascii_database(pg_server, "ctp_ascii_"):
        with psycopg.connect(pg.libpq_url(url), client_encoding="UTF8") as conn:
            for statement in pg.split_sql(pg.SUBSET_SQL.read_text(encoding="utf-8")):
                conn.execute(statement)
        yield url


@pytest.fixture
def sql_ascii_state(pg_server: pg.PgServer) -> Iterator[str]:
    yield from sql_ascii_database(pg_server, "ctp_ascii_state_")


def import_with_latin1_text(url: str) -> None:
    """GE_VCT as a Latin-1 client would leave it: its station, description and protocols hold 0xE9."""
    engine = sa.create_engine(url, connect_args={"client_encoding": "UTF8"})
    try:
        pk = OpenremImporter(engine).import_study(GE_VCT)
    finally:
        engine.dispose()
    with psycopg.connect(pg.libpq_url(url), autocommit=True) as conn:
        assert conn.execute("SHOW server_encoding").fetchone() == (b"SQL_ASCII",)
        conn.execute(
            f"UPDATE remapp_generalequipmentmoduleattr SET station_name = E'CT caf{LATIN1_E}' "
            "WHERE general_study_module_attributes_id = %s",
            (pk,),
        )
        conn.execute(
            f"UPDATE remapp_generalstudymoduleattr SET study_description = E'Fa{LATIN1_E}ial bones' WHERE id = %s",
            (pk,),
        )
        conn.execute(
            f"UPDATE remapp_ctirradiationeventdata SET acquisition_protocol = E'Thorax d{LATIN1_E}tail' "
            "WHERE ct_radiation_dose_id IN (SELECT id FROM remapp_ctradiationdose "
            "WHERE general_study_module_attributes_id = %s)",
            (pk,),
        )


def no_internal_error(result) -> None:
    assert "internal error" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("state", ["sqlite", "postgresql"])
def test_every_command_reads_a_sql_ascii_openrem_with_bytes_that_are_not_utf8(
    sql_ascii_openrem, sql_ascii_state, state, tmp_path: Path
):
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES, encoding="utf-8")
    env = {
        "CTPOLLER_SOURCE_URL": sql_ascii_openrem,
        "CTPOLLER_RULES_FILE": str(rules),
        "CTPOLLER_STATE_URL": f"sqlite:///{tmp_path / 'state.sqlite3'}" if state == "sqlite" else sql_ascii_state,
        "CTPOLLER_OUTBOX_DIR": str(tmp_path / "outbox"),
        "CTPOLLER_ARCHIVE_PATH": str(tmp_path / "archive.xlsx"),
        "CTPOLLER_MAIL_FROM": "ctpoller@hospital.example",
        "CTPOLLER_SETTLE_SECONDS": "0",
    }
    engine = sa.create_engine(sql_ascii_openrem, connect_args={"client_encoding": "UTF8"})
    OpenremImporter(engine).import_study(GE_OPTIMA)
    engine.dispose()

    no_internal_error(ctpoller("check", env=env, cwd=tmp_path))
    first = ctpoller("run", env=env, cwd=tmp_path)
    no_internal_error(first)
    assert "first run" in first.stdout

    import_with_latin1_text(sql_ascii_openrem)
    no_internal_error(ctpoller("run", env=env, cwd=tmp_path))
    sent = ctpoller("run", env=env, cwd=tmp_path)
    no_internal_error(sent)
    emails = sorted((tmp_path / "outbox").glob("*.eml"))
    assert len(emails) == 1, sent.stderr
    message = email.message_from_bytes(emails[0].read_bytes(), policy=email.policy.default)
    text = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "CT caf\ufffd" in text and "Thorax d\ufffdtail" in text
    cells = {
        c
        for row in openpyxl.load_workbook(year_workbook(tmp_path / "archive.xlsx")).active.iter_rows(values_only=True)
        for c in row
    }
    assert "CT caf\ufffd" in cells

    no_internal_error(ctpoller("status", env=env, cwd=tmp_path))
    dry = ctpoller("backfill", "--since", "2000-01-01", "--dry-run", env=env, cwd=tmp_path)
    no_internal_error(dry)
    again = ctpoller("run", env=env, cwd=tmp_path)
    no_internal_error(again)
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1  # nothing twice
