"""Each rule pack of examples/packs against the rows OpenREM's own importers wrote for its CT test files."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from support import pg
from support.cycle import Harness

pytestmark = [pytest.mark.postgres, pytest.mark.smtp]

PACKS = Path(__file__).parents[2] / "examples" / "packs"

VCT = "1.3.6.1.4.1.5962.99.1.2026073515.1319176460.1479494856107.15.0"  # pk 7 "FACIAL BONES", 176.12 mGy body
PIXELMED = "1.2.840.113619.2.55.3.2831209208.960.1363108704.865"  # pk 8, "10.13 RADIOTHERAPY QA" 222.59 mGy head
TOSHIBA_DOSE_CHECK = "1.3.6.1.4.1.5962.99.1.4226553877.745998417.1511760107541.3.0"
PHILIPS_KUB = "1.3.6.1.4.1.5962.99.1.902245636.1256219246.1495550897412.3.0"  # pk 16 "Abdomen/IH_KUB_2mm"

#: What each pack finds in the real rows: (study UID, rule, metric, value, severity).
EXPECTED = {
    "aapm-dose-check.toml": {
        (VCT, "Adult torso", "ctdivol", Decimal("176.12"), "notification"),
        # the QA scan of pk 8 ("10.13 RADIOTHERAPY QA", 222.59 mGy) is excluded from "Adult head"
        (TOSHIBA_DOSE_CHECK, "Scanner Dose Check", "dose_check_ctdivol_alert", Decimal("10.6"), "notification"),
        (TOSHIBA_DOSE_CHECK, "Scanner Dose Check", "dose_check_dlp_alert", Decimal("251.2"), "notification"),
        (TOSHIBA_DOSE_CHECK, "Scanner Dose Check", "dose_check_dlp_alert", Decimal("502.4"), "notification"),
    },
    "uk-ndrl-2022.toml": {  # 1102.45 mGy·cm > 2 × 290
        (PHILIPS_KUB, "UK NDRL: KUB (stones, colic)", "dlp_total", Decimal("1102.44609"), "notification"),
    },
    "strlschv-anlage14.toml": {  # neither series has a brain protocol name: both are "other CT", 80 mGy
        (VCT, "Anlage 14 I.2a: other CT of the body, CTDIvol over 80 mGy", "ctdivol", Decimal("176.12"), "alert"),
        (PIXELMED, "Anlage 14 I.2a: other CT of the body, CTDIvol over 80 mGy", "ctdivol", Decimal("222.59"), "alert"),
    },
    "euclid.toml": {  # 1102.45 mGy·cm > 2 × 436
        (PHILIPS_KUB, "EUCLID: Abdomen, colic / abdominal pain", "dlp_total", Decimal("1102.44609"), "notification"),
    },
    "local-drl.toml": set(),  # its placeholders are chosen so that nothing fires until a site fills them in
}


@pytest.fixture
def real_openrem(pg_server):
    schema, data = pg.OPENREM_DATA / "schema_ct.sql", pg.OPENREM_DATA / "data_ct_testfiles.sql"
    with pg.throwaway_database(pg_server, "ctp_packs_") as url:
        pg.run_sql_file(url, schema)
        pg.run_sql_file(url, data)
        yield url


@pytest.mark.parametrize("pack", sorted(EXPECTED))
def test_each_pack_evaluates_the_real_openrem_rows(pack, real_openrem, tmp_path, inbox):
    rules = (PACKS / pack).read_text(encoding="utf-8")
    harness = Harness(real_openrem, f"sqlite:///{tmp_path / 's.sqlite3'}", rules, inbox.port, tmp_path)
    report = harness.backfill(since=None, email=False, dry_run=True)
    assert report.exams_evaluated == 14  # 15 rows, the two continued rows are one exam
    found = {(m.study_uid, n.rule, n.metric, n.value, n.severity) for m in report.messages for n in m.notifications}
    assert found == EXPECTED[pack]
    assert inbox.messages == []
    assert not harness.workbook.exists()
