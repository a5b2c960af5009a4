"""Whatever OpenREM holds, ctpoller never crashes: NULL everywhere, NaN, infinities and huge numbers,
negative doses, control characters, right-to-left text, 10,000-character protocols, text that a
spreadsheet would run as a formula, duplicate irradiation event UIDs, a study that never completes.
The emails parse, the archive never holds a formula, and a second run sends nothing again."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
import sqlalchemy as sa

from ctpoller.demo.exams import BODY, GE_VCT, SIEMENS_FLASH_QA, SPIRAL
from ctpoller.demo.openrem import SeedEvent
from support.process import RULES, base_env, ctpoller
from support.smtp import body, parse, study_uids
from support.workbooks import year_workbook

from .harness import COLUMN, archive_cells, archive_rows, initialise_state, sql, state_view

pytestmark = [pytest.mark.reliability, pytest.mark.postgres, pytest.mark.smtp]

ROOT = "1.2.826.0.1.3680043.10.666"
FORMULAS = ('=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", "@SUM(A1)", "-2+3", "=1+1")
LONG_PROTOCOL = "Thorax " + "P" * 10_000
INJECTION = "Thorax\r\nBcc: evil@example.org\r\n\x1b[31m"
RTL = "\u202eledoM\u202c شبكة שלום"
HEADERS = {"Subject", "From", "To", "Date", "Message-ID", "Auto-Submitted", "MIME-Version", "Content-Type"}

#: Formula-like text, control characters, right-to-left and very long text in every text OpenREM gives us.
TEXTS = dataclasses.replace(
    SIEMENS_FLASH_QA,
    uid=f"{ROOT}.1",
    accession=FORMULAS[1],
    description=FORMULAS[0],
    requested_procedure=FORMULAS[2],
    procedure=FORMULAS[3],
    station_name="ST\x01\x07\x7f",
    display_name=f"{RTL} {FORMULAS[2]}",
    total_dlp=D("1110"),
    events=(
        SeedEvent(f"{ROOT}.1.2.1", LONG_PROTOCOL, SPIRAL, D("65.5"), D("900"), BODY, FORMULAS[4]),
        SeedEvent(f"{ROOT}.1.2.2", INJECTION, SPIRAL, D("70"), D("200"), BODY),
        SeedEvent(f"=cmd|{ROOT}.1.2.3", RTL, SPIRAL, D("51"), D("10"), BODY),
    ),
)

#: Numbers a spreadsheet, a float or a comparison could choke on (the columns are made unconstrained).
NUMBERS = dataclasses.replace(
    GE_VCT,
    uid=f"{ROOT}.2",
    total_dlp=D("NaN"),
    events=(
        SeedEvent(f"{ROOT}.2.2.1", "nan", SPIRAL, D("NaN"), D("NaN"), BODY),
        SeedEvent(f"{ROOT}.2.2.2", "inf", SPIRAL, D("Infinity"), D("-Infinity"), BODY),
        SeedEvent(f"{ROOT}.2.2.3", "huge", SPIRAL, D("1E+15"), D("1E+15"), BODY),
        SeedEvent(f"{ROOT}.2.2.4", "negative", SPIRAL, D("-5"), D("-1000"), BODY),
        SeedEvent(f"{ROOT}.2.2.5", "zero", SPIRAL, D("0"), D("0"), BODY),
        SeedEvent(
            f"{ROOT}.2.2.6",
            "dose check NaN",
            SPIRAL,
            D("60"),
            D("10"),
            BODY,
            dose_check={
                "ctdivol_notification_value_configured": True,
                "ctdivol_notification_value": D("NaN"),
                "ctdivol_forward_estimate": D("NaN"),
                "ctdivol_alert_value_configured": None,
                "ctdivol_alert_value": D("Infinity"),
                "accumulated_ctdivol_forward_estimate": D("1E+15"),
            },
        ),
    ),
)

#: The same irradiation event UID twice in one report, and again in a continued report of the same exam.
DUPLICATES_1 = dataclasses.replace(
    SIEMENS_FLASH_QA,
    uid=f"{ROOT}.3",
    total_dlp=D("100"),
    events=(
        SeedEvent(f"{ROOT}.3.2.1", "first", SPIRAL, D("55"), D("50"), BODY),
        SeedEvent(f"{ROOT}.3.2.1", "again", SPIRAL, D("90"), D("50"), BODY),
    ),
)
DUPLICATES_2 = dataclasses.replace(
    DUPLICATES_1,
    sop_instance_uid=f"{ROOT}.3.1.2",
    total_dlp=D("60"),
    events=(SeedEvent(f"{ROOT}.3.2.1", "continued", SPIRAL, D("120"), D("60"), BODY),),
)


def unconstrained_numbers(url: str) -> None:
    """Let the dose columns hold what PostgreSQL's numeric allows: infinities and any magnitude."""
    sql(
        url,
        "ALTER TABLE remapp_ctirradiationeventdata ALTER COLUMN mean_ctdivol TYPE numeric, "
        "ALTER COLUMN dlp TYPE numeric",
        "ALTER TABLE remapp_generalstudymoduleattr ALTER COLUMN total_dlp TYPE numeric",
        "ALTER TABLE remapp_ctdosecheckdetails ALTER COLUMN ctdivol_notification_value TYPE numeric, "
        "ALTER COLUMN ctdivol_forward_estimate TYPE numeric, ALTER COLUMN ctdivol_alert_value TYPE numeric, "
        "ALTER COLUMN accumulated_ctdivol_forward_estimate TYPE numeric",
    )


def insert_null_study(url: str, *, uid: str | None, events: int) -> int:
    """A study row with nothing but modality CT (and a UID if given), a patient row, and all-NULL events."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            pk = conn.execute(
                sa.text(
                    "INSERT INTO remapp_generalstudymoduleattr (accession_hashed, modality_type, study_instance_uid) "
                    "VALUES (false, 'CT', :uid) RETURNING id"
                ),
                {"uid": uid},
            ).scalar_one()
            conn.execute(
                sa.text(
                    "INSERT INTO remapp_patientmoduleattr (name_hashed, id_hashed, general_study_module_attributes_id) "
                    "VALUES (false, false, :pk)"
                ),
                {"pk": pk},
            )
            conn.execute(
                sa.text("INSERT INTO remapp_patientstudymoduleattr (general_study_module_attributes_id) VALUES (:pk)"),
                {"pk": pk},
            )
            if events:
                dose = conn.execute(
                    sa.text(
                        "INSERT INTO remapp_ctradiationdose (general_study_module_attributes_id) "
                        "VALUES (:pk) RETURNING id"
                    ),
                    {"pk": pk},
                ).scalar_one()
                for _ in range(events):
                    conn.execute(
                        sa.text("INSERT INTO remapp_ctirradiationeventdata (ct_radiation_dose_id) VALUES (:dose)"),
                        {"dose": dose},
                    )
            return int(pk)
    finally:
        engine.dispose()


def test_hostile_openrem_rows_never_crash_a_run_and_never_reach_the_archive_as_formulas(
    openrem_db, openrem, mail, tmp_path
):
    (tmp_path / "rules.toml").write_text(RULES + "\n[dose_check]\nnotify = true\n", encoding="utf-8")
    env = base_env(tmp_path, source_url=openrem_db, smtp_port=mail.port)
    initialise_state(env["CTPOLLER_STATE_URL"])
    unconstrained_numbers(openrem_db)
    insert_null_study(openrem_db, uid=None, events=0)  # never completes: no Study Instance UID
    openrem.import_study(TEXTS)
    openrem.import_study(NUMBERS)
    insert_null_study(openrem_db, uid=f"{ROOT}.4", events=3)  # complete, every event column NULL
    openrem.import_study(DUPLICATES_1)
    openrem.import_study(DUPLICATES_2)

    first = ctpoller("run", env=env, cwd=tmp_path)
    first.assert_ok()
    again = ctpoller("run", env=env, cwd=tmp_path)
    again.assert_ok()

    emails = {}
    for delivered in mail.handler.delivered:
        message = parse(delivered.content)
        assert set(message.keys()) <= HEADERS, f"unexpected headers: {set(message.keys()) - HEADERS}"
        assert "\n" not in str(message["Subject"]) and "\r" not in str(message["Subject"])
        text = body(message)
        assert message.get_body(("html",)) is not None
        uid = next(line.split(": ", 1)[1] for line in text.splitlines() if "Study Instance UID:" in line)
        assert uid not in emails, f"two emails for {uid}"
        emails[uid] = text
    assert set(emails) == {TEXTS.uid, NUMBERS.uid, DUPLICATES_1.uid}
    assert "1000000000000000" in emails[NUMBERS.uid]
    for text in emails.values():
        values = [line for line in text.splitlines() if line.strip().startswith(("Value:", "Limit:"))]
        assert not any(word in line for line in values for word in ("NaN", "Infinity", "∞", "not a number"))
    assert FORMULAS[0] in emails[TEXTS.uid] and "P" * 10_000 in emails[TEXTS.uid].replace("\n", "")

    cells = list(archive_cells(year_workbook(tmp_path / "archive.xlsx")))
    assert not [cell.coordinate for cell in cells if cell.data_type == "f"], "a formula cell in the archive"
    texts = [cell.value for cell in cells if isinstance(cell.value, str)]
    formula_like = [
        cell for cell in cells if isinstance(cell.value, str) and cell.value.startswith(("=", "+", "-", "@"))
    ]
    assert all(cell.data_type == "s" and cell.quotePrefix for cell in formula_like), "formula-like text not quoted"
    assert FORMULAS[0] in texts and FORMULAS[1] in texts  # the value as OpenREM holds it
    assert any(t.startswith(LONG_PROTOCOL[:100]) and len(t) == len(LONG_PROTOCOL) for t in texts)
    rows = archive_rows(year_workbook(tmp_path / "archive.xlsx"))
    assert {row[COLUMN["status"]] for row in rows} == {"sent"}
    assert state_view(env["CTPOLLER_STATE_URL"]).integrity == "ok"


def test_study_that_never_completes_holds_nothing_back_and_is_given_up_with_a_warning(
    openrem_db, openrem, mail, tmp_path
):
    env = base_env(tmp_path, source_url=openrem_db, smtp_port=mail.port)
    env["CTPOLLER_GIVE_UP_SECONDS"] = "60"
    initialise_state(env["CTPOLLER_STATE_URL"])
    stuck = insert_null_study(openrem_db, uid=None, events=0)  # no UID, no events: can only be given up
    half = openrem.import_steps(dataclasses.replace(SIEMENS_FLASH_QA, uid=f"{ROOT}.5"))
    for label in half:
        if "remapp_patientstudymoduleattr" in label:
            break  # the patient rows never come: evaluated as it stands when given up
    half_pk = openrem.last_study_pk
    later = openrem.import_study(GE_VCT)

    first = ctpoller("run", env=env, cwd=tmp_path)
    first.assert_ok()
    assert len(mail.handler.delivered) == 1, "a later complete study is notified at once"
    assert state_view(env["CTPOLLER_STATE_URL"]).watermark == 0, "the watermark waits below the stuck rows"

    # Time passes: the two stuck rows were first seen longer ago than CTPOLLER_GIVE_UP_SECONDS.
    long_ago = (datetime.now(UTC) - timedelta(minutes=5)).isoformat(timespec="microseconds")
    sql(
        f"sqlite:///{tmp_path / 'state.sqlite3'}",
        "UPDATE ctp_study SET first_seen_at = :t, changed_at = :t WHERE pk IN (:a, :b)",
        t=long_ago,
        a=stuck,
        b=half_pk,
    )
    given_up = ctpoller("run", env=env, cwd=tmp_path)
    given_up.assert_ok()

    warnings = [line for line in given_up.lines if " WARNING " in line]
    assert any(f"pk {stuck}" in line and "given up" in line for line in warnings), given_up.stderr
    assert any(f"pk {half_pk}" in line and "as it stands" in line for line in warnings), given_up.stderr
    assert state_view(env["CTPOLLER_STATE_URL"]).watermark == later, "the watermark moves past them"
    uids = study_uids(mail.handler.delivered)
    assert len(uids) == 2 and f"{ROOT}.5" in uids, "the half-written exam is evaluated once"
    ctpoller("run", env=env, cwd=tmp_path).assert_ok()
    assert len(mail.handler.delivered) == 2


@pytest.mark.parametrize(("column", "value"), [("study_date", "infinity"), ("study_time", "24:00:00")])
def test_a_date_python_cannot_hold_does_not_stop_every_other_exam_from_being_notified(
    column, value, openrem_db, openrem, mail, tmp_path
):
    env = base_env(tmp_path, source_url=openrem_db, smtp_port=mail.port)
    initialise_state(env["CTPOLLER_STATE_URL"])
    poisoned = openrem.import_study(GE_VCT)
    sql(openrem_db, f"UPDATE remapp_generalstudymoduleattr SET {column} = :v WHERE id = :pk", v=value, pk=poisoned)
    openrem.import_study(SIEMENS_FLASH_QA)

    ctpoller("run", env=env, cwd=tmp_path).assert_ok()
    assert len(mail.handler.delivered) == 2


def test_a_german_study_description_reaches_the_mail_server_with_every_space_in_the_subject(
    openrem_db, openrem, mail, tmp_path
):
    description = "Kopf ÜBERSICHT ÄÖÜ äöü ß Nachuntersuchung Schädelbasis Felsenbein"
    env = base_env(tmp_path, source_url=openrem_db, smtp_port=mail.port)
    initialise_state(env["CTPOLLER_STATE_URL"])
    openrem.import_study(dataclasses.replace(SIEMENS_FLASH_QA, description=description, display_name="Süd"))

    ctpoller("run", env=env, cwd=tmp_path).assert_ok()

    [delivered] = mail.handler.delivered
    received = " ".join(str(parse(delivered.content)["Subject"]).split())
    assert received.startswith("CT dose up to ")
    assert received.endswith(f" limit (2 exceedances): {description} at Süd (CTAWP91919), 2013-06-11")
