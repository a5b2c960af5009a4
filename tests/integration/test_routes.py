"""``[[route]]`` end to end: each site's physicist gets only their scanners' exams, through a real SMTP
server; the default recipients only the exams of a station no route names; ``check`` says who gets what."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from ctpoller.demo.exams import GE_OPTIMA, GE_PIXELMED, GE_VCT
from support.cycle import SETTLE, Harness
from support.process import ctpoller
from support.smtp import parse

RULES = """
[defaults]
recipients = ["physics@hospital.example"]

[[route]]
name = "North site"
station = "vctscanner"
recipients = ["north@hospital.example"]

[[route]]
name = "South site"
station = { any = ["geoptima", "South CT"] }
recipients = ["south@hospital.example"]

[[rule]]
name = "Any exam"
dlp_total = 1

[[rule]]
name = "Head CTDIvol"
phantom = "head"
ctdivol = 1
recipients = ["neuro@hospital.example"]
"""


@pytest.mark.postgres
@pytest.mark.smtp
def test_two_stations_exams_go_to_two_site_physicists_and_the_defaults_get_only_the_unrouted_one(
    openrem_db, tmp_path, inbox, openrem
):
    harness = Harness(openrem_db, f"sqlite:///{tmp_path / 'state.sqlite3'}", RULES, inbox.port, tmp_path)
    assert harness.cycle().initialised
    for study in (GE_VCT, GE_OPTIMA, GE_PIXELMED):
        openrem.import_study(study)
    harness.cycle(after=timedelta(seconds=1))
    report = harness.cycle(after=SETTLE + timedelta(seconds=1))
    assert report.messages and len(inbox.delivered) == 3
    by_station: dict[str, set[str]] = {}
    for delivered in inbox.delivered:
        message = parse(delivered.content)
        station = next(s for s in ("VCTScanner", "geoptima", "rt16") if s in str(message["Subject"]))
        assert {a.strip() for a in str(message["To"]).split(",")} == set(delivered.rcpt_tos)
        by_station[station] = set(delivered.rcpt_tos)
    head = {"neuro@hospital.example"}
    assert by_station["VCTScanner"] - head == {"north@hospital.example"}
    assert by_station["geoptima"] - head == {"south@hospital.example"}
    assert by_station["rt16"] - head == {"physics@hospital.example"}


def test_check_lists_each_route_the_defaults_and_each_rule_with_its_recipients(tmp_path: Path):
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES, encoding="utf-8")
    env = {
        "CTPOLLER_RULES_FILE": str(rules),
        "CTPOLLER_STATE_URL": f"sqlite:///{tmp_path / 'state.sqlite3'}",
        "CTPOLLER_OUTBOX_DIR": str(tmp_path / "outbox"),
        "CTPOLLER_MAIL_FROM": "ctpoller@hospital.example",
        "CTPOLLER_MAIL_TO": "lead@hospital.example",
    }
    result = ctpoller("check", env=env, cwd=tmp_path)
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"ok      rules file {rules}: 2 rules, 2 routes"))
    assert lines[start + 1 : start + 6] == [
        "ok      recipients: route 'North site': station \"vctscanner\" -> north@hospital.example",
        'ok      recipients: route \'South site\': station { any = ["geoptima", "south ct"] } '
        "-> south@hospital.example",
        "ok      recipients: [defaults] (exams no route matches) -> physics@hospital.example, lead@hospital.example",
        "ok      recipients: rule 'Any exam' -> the route's recipients or the defaults",
        "ok      recipients: rule 'Head CTDIvol' -> the route's recipients or the defaults, "
        "plus neuro@hospital.example",
    ]
