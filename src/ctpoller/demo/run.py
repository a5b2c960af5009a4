"""``ctpoller demo``: the whole product on a built-in OpenREM-shaped SQLite database, no server needed.

The imports are replayed the way OpenREM writes them (one autocommit at a time, a re-sent cumulative
report deleting and re-inserting the study, a continued report adding a second row with the same
Study Instance UID), and real poll cycles run through ``run_once``, the code path of
``ctpoller run``. Time is simulated so the settle time passes at once; nothing else is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from ctpoller.archive.base import year_file
from ctpoller.demo import exams
from ctpoller.demo.openrem import OpenremImporter, SeedStudy, create_schema
from ctpoller.jobs.cycle import run_once
from ctpoller.jobs.report import Report, report_lines
from ctpoller.settings import Settings
from ctpoller.wiring import Components

DEMO_RULES = """\
# The rules of the demo. The real thing reads CTPOLLER_RULES_FILE; see examples/rules.toml.
[defaults]
recipients = ["physics@hospital.example"]

[[rule]]
name = "Adult head CTDIvol (AAPM)"
phantom = "head"
ctdivol = 80
recipients = ["neuro-physics@hospital.example"]

[[rule]]
name = "Adult body CTDIvol (AAPM)"
phantom = "body"
ctdivol = 50

[[rule]]
name = "Thorax exam DLP"
study = { any = ["thorax", "chest"] }
dlp_total = 75

[[rule]]
name = "Any exam DLP"
dlp_total = 1000

[dose_check]
notify = true
"""

SETTLE = timedelta(seconds=120)
FILES = (
    "openrem-demo.sqlite3",
    "ctpoller-state.sqlite3",
    "ctpoller-state.sqlite3.lock",
    "rules.toml",
    "ctpoller-notifications.xlsx",
)


def run_demo(directory: Path, *, out: Callable[[str], None] = print) -> int:
    directory = directory.resolve()
    _clean(directory)
    source_file = directory / "openrem-demo.sqlite3"
    rules_file = directory / "rules.toml"
    rules_file.write_text(DEMO_RULES, encoding="utf-8")
    outbox = directory / "outbox"
    archive = directory / "ctpoller-notifications.xlsx"
    report_html = directory / "ctpoller-report.html"

    writer = sa.create_engine(f"sqlite:///{source_file}")
    create_schema(writer)
    openrem = OpenremImporter(writer)
    clock = datetime.now(UTC).replace(microsecond=0)
    settings = Settings(
        _env_file=None,
        source_url=f"sqlite:///{source_file}",
        state_url=f"sqlite:///{directory / 'ctpoller-state.sqlite3'}",
        rules_file=rules_file,
        outbox_dir=outbox,
        archive_path=archive,
        report_html=report_html,
        mail_from="ctpoller@hospital.example",
        settle_seconds=int(SETTLE.total_seconds()),
    )

    def cycle(after: timedelta, title: str) -> Report:
        nonlocal clock
        clock += after
        with Components(settings, need_delivery=True) as c, c.locked(dry_run=False):
            c.source.connect()
            report = run_once(
                c.source,
                c.state,
                c.rules,
                c.notifier,
                c.archive,
                now=clock,
                timing=c.timing,
                mail_domain=c.mail_domain,
                report_html=c.report_html,
            )
        _tell(out, title, report)
        return report

    out(f"ctpoller demo: an OpenREM-shaped database with CT exams modelled on OpenREM's test files, in {directory}")
    out("")
    for study in (exams.GE_OPTIMA, exams.SPECTRUM_DYNAMICS, exams.TOSHIBA_MULTIVALSD, exams.GE_VCT):
        openrem.import_study(study)
    cycle(timedelta(0), "1. First run on a database with 4 exams of history")

    pks = [openrem.import_study(s) for s in (exams.GE_PIXELMED, exams.SIEMENS_FLASH_QA)]
    partial = _start(openrem, exams.PHILIPS_SC, stop_before="remapp_patientstudymoduleattr")
    cycle(
        timedelta(seconds=10),
        f"2. Three new exams arrive (pks {pks[0]}, {pks[1]}, {openrem.last_study_pk}); "
        "one import is still being written",
    )
    for _ in partial:
        pass
    cycle(SETTLE + timedelta(seconds=5), "3. Two minutes later: the complete exams have settled")
    cycle(SETTLE + timedelta(seconds=5), "4. The last import finished and has settled")
    cycle(timedelta(minutes=10), "5. Ten minutes later, nothing new: nothing is sent twice")

    multi_1, multi_2, multi_3 = exams.MULTI_SERIES
    pk = openrem.import_study(multi_1)
    cycle(timedelta(seconds=5), "6. A thorax exam arrives with its first dose report (7.46 mGy·cm)")
    cycle(SETTLE + timedelta(seconds=5), "   ... settled: under every limit")
    pk = openrem.resend_cumulative(pk, multi_2)
    cycle(timedelta(seconds=5), f"7. The scanner re-sends a cumulative report: OpenREM deletes the study, new pk {pk}")
    cycle(SETTLE + timedelta(seconds=5), "   ... settled: 77.27 mGy·cm is over the thorax limit")
    pk = openrem.resend_cumulative(pk, multi_3)
    cycle(timedelta(seconds=5), f"8. Another cumulative re-send, new pk {pk}")
    cycle(SETTLE + timedelta(seconds=5), "   ... settled: the total rose, so an update is sent")

    openrem.import_study(exams.CONTINUED_1)
    openrem.import_study(exams.CONTINUED_2)
    openrem.import_study(exams.TOSHIBA_DOSECHECK)
    cycle(
        timedelta(seconds=5), "9. A continued report (two rows, one Study Instance UID) and a scanner Dose Check alert"
    )
    cycle(SETTLE + timedelta(seconds=5), "   ... settled: the continued report is one exam")

    emails = sorted(outbox.glob("*.eml"))
    out("")
    out(f"Written in {directory}:")
    out(f"  {len(emails)} emails as .eml files in {outbox} (open them with any mail client)")
    out(f"  the QA archive {year_file(archive, clock.year)} (one workbook per year, one row per notification)")
    out(f"  the HTML report {report_html} (open it in a browser)")
    out(f"  the OpenREM-shaped database {source_file}, ctpoller's state {directory / 'ctpoller-state.sqlite3'}")
    out(f"  the rules used: {rules_file}")
    out("Next: point CTPOLLER_SOURCE_URL at your OpenREM database and run 'ctpoller check' (see README.md).")
    writer.dispose()
    return 0


def _start(openrem: OpenremImporter, study: SeedStudy, *, stop_before: str) -> Iterator[str]:
    """Begin an import and stop just before the first write that mentions ``stop_before``."""
    steps = openrem.import_steps(study)
    pending: list[str] = []
    for label in steps:
        if stop_before in label:
            pending.append(label)
            break

    def rest() -> Iterator[str]:
        yield from pending
        yield from steps

    return rest()


def _tell(out: Callable[[str], None], title: str, report: Report) -> None:
    out(title)
    for line in report_lines(report, would=False):
        out(f"   {line}")
    if not report.initialised:
        out(f"   ({report.summary('cycle')})")


def _clean(directory: Path) -> None:
    """Remove what an earlier demo wrote there, and nothing else."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        for path in (directory / name, directory / f"{name}-wal", directory / f"{name}-shm"):
            path.unlink(missing_ok=True)
    for workbook in directory.glob("ctpoller-notifications-[0-9][0-9][0-9][0-9].xlsx"):  # one per year
        workbook.unlink()
    outbox = directory / "outbox"
    if outbox.is_dir():
        for eml in outbox.glob("*.eml"):
            eml.unlink()
