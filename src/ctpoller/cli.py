"""The ``ctpoller`` command: parse, call a job, print its lines, map errors to exit codes (``EXIT_CODES_HELP``,
also in the README). The only module that prints or exits; the parts come from ``wiring``."""

from __future__ import annotations

import argparse
import gc
import inspect
import logging
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ctpoller.errors import (  # noqa: F401
    EXIT_CODES_HELP,
    EXIT_CONFIG,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_PERMANENT,
    EXIT_TEMPORARY,
    CtpollerError,
    LockedError,
    exit_code,
    severity,
)

if TYPE_CHECKING:
    from ctpoller.jobs.report import Report
    from ctpoller.settings import Settings
    from ctpoller.wiring import Components


class _Version(argparse.Action):
    """``--version``: the version is looked up only when asked for."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        import ctpoller

        print(f"ctpoller {ctpoller.__version__}")
        parser.exit()


log = logging.getLogger("ctpoller")


def console() -> int:
    """``ctpoller`` as a program: the libraries are imported with the cyclic garbage collector paused,
    then frozen (``gc.freeze``), so the collector never walks them (a third of an idle run, see
    bench/RESULTS.md). ``main`` leaves the collector alone: tests call it in their own process."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        import psycopg  # noqa: F401  (SQLAlchemy would import it at the first connection)

        import ctpoller.jobs.cycle
        import ctpoller.wiring  # noqa: F401  (settings, rules, OpenREM source, state store)
    except Exception:  # a broken install: main says so in one line, where a command needs it
        pass
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
    return main()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ctpoller.journal import setup_logging

    setup_logging(args.verbose)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_CONFIG
    try:
        return handler(args)
    except CtpollerError as e:
        if args.debug:
            log.exception("failed")
        print(f"ctpoller: {e}", file=sys.stderr)
        return exit_code(e)
    except KeyboardInterrupt:
        print("ctpoller: interrupted; nothing that was not recorded was sent", file=sys.stderr)
        return EXIT_TEMPORARY
    except Exception as e:  # a bug: still one line unless --debug
        if args.debug:
            raise
        bug = f"internal error: {type(e).__name__}: {_one_line(e)} (run with --debug for details)"
        print(f"ctpoller: {bug}", file=sys.stderr)
        return EXIT_PERMANENT


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="log details (DEBUG)")
    common.add_argument("--debug", action="store_true", help="show a traceback on errors")
    common.add_argument("--env-file", metavar="PATH", help="read settings from this file instead of ./.env")

    parser = argparse.ArgumentParser(
        prog="ctpoller",
        description="Notify, exactly once, when a CT exam in OpenREM exceeds its dose limit.",
        epilog=EXIT_CODES_HELP + "\nSettings come from CTPOLLER_* environment variables (see .env.example).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="show the version and exit")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], doc: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=doc.splitlines()[0],
            description=inspect.cleandoc(doc),
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog=EXIT_CODES_HELP,
        )
        sub.set_defaults(handler=handler)
        return sub

    run = command("run", cmd_run, cmd_run.__doc__ or "")
    run.add_argument("--dry-run", action="store_true", help="evaluate and print; write and send nothing")

    back = command("backfill", cmd_backfill, cmd_backfill.__doc__ or "")
    back.add_argument("--since", required=True, type=_date, metavar="YYYY-MM-DD", help="first study date to evaluate")
    back.add_argument("--no-email", action="store_true", help="record and archive what is found, send no email")
    back.add_argument("--dry-run", action="store_true", help="evaluate and print; write and send nothing")
    back.add_argument("--stats", action="store_true", help="instead of the exams: per rule, exams fired, rate, ratios")

    command("check", cmd_check, cmd_check.__doc__ or "")
    explain = command("explain", cmd_explain, cmd_explain.__doc__ or "")
    explain.add_argument("exam", metavar="EXAM", help="accession number or Study Instance UID (exit 1: not found)")
    reset = command("reset", cmd_reset, cmd_reset.__doc__ or "")
    reset.add_argument("--yes", action="store_true", help="really do it (without it, only say what would happen)")
    command("status", cmd_status, cmd_status.__doc__ or "")
    command("digest", cmd_digest, cmd_digest.__doc__ or "")
    retry = command("retry", cmd_retry, cmd_retry.__doc__ or "")
    retry.add_argument("ids", nargs="*", metavar="ID", help="a failed notification's id (see status) or Message-ID")
    retry.add_argument("--all", action="store_true", help="every failed notification")
    dismiss = command("dismiss", cmd_dismiss, cmd_dismiss.__doc__ or "")
    dismiss.add_argument("ids", nargs="*", metavar="ID", help="a failed notification's id (see status) or Message-ID")
    dismiss.add_argument("--all", action="store_true", help="every failed notification")
    dismiss.add_argument("--reason", metavar="TEXT", help="why it is not sent (kept in the archive); required")

    export = command("export", cmd_export, cmd_export.__doc__ or "")
    export.add_argument("--since", required=True, type=_date, metavar="YYYY-MM-DD", help="first day (UTC) notified")
    export.add_argument("--until", type=_date, metavar="YYYY-MM-DD", help="last day (UTC) notified (default: today)")
    export.add_argument("--format", choices=("csv", "xlsx"), default="csv", help="csv (two files) or xlsx (two sheets)")
    export.add_argument("--deidentify", action="store_true", help="leave out accession numbers, UIDs and Message-IDs")
    export.add_argument("--output", type=Path, metavar="PATH", help="where to write (default ./ctpoller-export.FORMAT)")

    demo = command("demo", cmd_demo, cmd_demo.__doc__ or "")
    demo.add_argument("--dir", type=Path, default=Path("ctpoller-demo"), help="where to write (./ctpoller-demo)")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    from ctpoller.settings import load_settings

    return load_settings(args.env_file)


# -- commands ------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    """Run one poll cycle (what the systemd timer starts).

    Reads OpenREM study rows above the watermark, waits for each to be complete and unchanged for
    CTPOLLER_SETTLE_SECONDS, evaluates the rules, records and sends the notifications and rewrites
    the archive. The first run only records where OpenREM ends: history is not notified. Then the
    heartbeat: CTPOLLER_ADMIN_MAIL_TO is told once when OpenREM goes quiet, once when it sends again.
    """
    from ctpoller.jobs.cycle import run_once

    settings = _settings(args)

    def cycle(c: Components, now: datetime) -> Report:
        parts = (c.source, c.state, c.rules, c.notifier, c.archive)
        return run_once(*parts, now=now, dry_run=args.dry_run, **c.cycle_options())

    what = "dry run" if args.dry_run else "run"
    return _journaled(settings, cycle, what, need_delivery=not args.dry_run, dry_run=args.dry_run)


def _journaled(
    settings: Settings, job: Callable[[Components, datetime], Report], what: str, *, need_delivery: bool, dry_run: bool
) -> int:
    """Run ``job`` with the parts, holding the lock, and record how it ended (for ``status`` and the
    metrics), also when it failed; a dry run records nothing."""
    from ctpoller.journal import record_failure, record_run, write_run_metrics
    from ctpoller.wiring import Components, build_state

    now, started = _now(), time.monotonic()
    report: Report | None = None
    facts: dict[str, float | int | None] = {}
    recorded = False
    try:
        with Components(settings, need_delivery=need_delivery, dry_run=dry_run) as c, c.locked(dry_run):
            try:
                report = job(c, now)
            except CtpollerError as e:
                recorded, facts = not dry_run, {} if dry_run else record_run(c.state, now, e)
                raise
            facts = {} if dry_run else record_run(c.state, now, report.problem())
        code = finish(report, what, dry_run=dry_run)
    except LockedError:
        raise  # the run holding the lock writes the metrics
    except CtpollerError as e:
        if not dry_run:
            if not recorded:
                facts = record_failure(lambda: build_state(settings), now, e)
            if settings.metrics_file is not None:
                write_run_metrics(settings.metrics_file, report, facts, exit_code(e), started)
        raise
    if settings.metrics_file is not None and not dry_run:
        write_run_metrics(settings.metrics_file, report, facts, code, started)
    return code


def cmd_backfill(args: argparse.Namespace) -> int:
    """Evaluate history on purpose: complete CT studies from --since up to the watermark.

    Already-notified exceedances are not notified again (the same ledger as run). With --no-email
    what is found is recorded and archived as "recorded, not emailed" and never sent. History is
    read in one statement (one line per study, screened against the rules; only exams that could
    exceed a limit are read in full), allowed ten times CTPOLLER_STATEMENT_TIMEOUT_SECONDS. --stats prints instead,
    per rule, trend and cumulative rule: exams fired of all exams evaluated (the rate) and value/limit ratios.
    """
    from ctpoller.jobs.backfill import backfill
    from ctpoller.jobs.deliver import warn_failed
    from ctpoller.jobs.stats import stats_lines
    from ctpoller.wiring import Components

    settings = _settings(args)
    need = not (args.dry_run or args.no_email)
    with Components(settings, need_delivery=need, dry_run=args.dry_run) as c, c.locked(args.dry_run):
        p, options = (c.source, c.state, c.rules, c.notifier, c.archive), c.cycle_options()
        options.pop("heartbeat")  # a backfill tells nothing about OpenREM's silence
        report = backfill(*p, now=_now(), since=args.since, email=not args.no_email, dry_run=args.dry_run, **options)
        if args.no_email and not args.dry_run:  # a backfill that sends warns like one that does
            warn_failed(c.state, report)
        if args.stats:
            print("\n".join(stats_lines(report, c.rules, since=args.since, would=args.dry_run)))
    return finish(report, "backfill dry run" if args.dry_run else "backfill", dry_run=args.dry_run and not args.stats)


def cmd_check(args: argparse.Namespace) -> int:
    """Check settings, rules, the OpenREM tables, columns and grants, the state store, mail and archive.

    Prints one line per check saying what was proven, or PROBLEM and what to fix; exits with the
    code a run would meet (2 settings, 1 a person must act, 75 temporary). Sends nothing and
    creates nothing: no state store, lock, archive or outbox file.
    """
    from ctpoller.jobs.check import run_checks
    from ctpoller.wiring import Parts

    worst = EXIT_OK
    for ok, line, error in run_checks(Parts(_settings(args)), args.env_file):
        print(f"{'ok     ' if ok else 'PROBLEM'} {line}")
        if error is not None:
            worst = max(worst, exit_code(error), key=severity)
    return worst


def cmd_explain(args: argparse.Namespace) -> int:
    """Show how the rules see one exam, and what ctpoller notified about it when.

    EXAM: an accession number (each exam it names is shown) or a Study Instance UID. Per rule, in precedence order:
    matched or not and why, each check (value, limit = reference × multiple, exceeded, stopped by a stop rule); the Dose
    Check, trends, cumulative rules; what was notified when. A sequential scan (OpenREM indexes neither column), so
    never on the polling path.
    """
    from ctpoller.jobs.explain import explain_lines
    from ctpoller.wiring import Parts

    print("\n".join(explain_lines(Parts(_settings(args)), args.exam, terminal=sys.stdout)))
    return EXIT_OK


def cmd_reset(args: argparse.Namespace) -> int:
    """Start again at OpenREM's current end, keeping the record of what was notified.

    For when OpenREM was restored from a backup or moved, and 'ctpoller run' stops because OpenREM's
    study pks went back below the watermark. After a restore that a run has seen, it starts where
    OpenREM stood then, so that the studies imported since are evaluated by the next run; for the
    studies the restore lost, 'ctpoller backfill --since DATE' covers the gap. Exceedances notified
    before are not notified again (they are keyed by Study Instance UID).
    """
    from ctpoller.jobs.start import start_over
    from ctpoller.wiring import build_source, build_state, timing

    settings = _settings(args)
    source, state = build_source(settings), build_state(settings)
    try:
        source.connect()
        before, after, newer = start_over(source, state, now=_now(), timing=timing(settings), dry_run=not args.yes)
        if not args.yes:
            print(
                f"would move the watermark from {before} to OpenREM study pk {after} and forget which pks were "
                f"seen, keeping what was notified ({newer}); run again with --yes to do it"
            )
            return EXIT_OK
        print(
            f"watermark moved from {before} to OpenREM study pk {after}; {newer}; "
            "for studies OpenREM lost or imported while ctpoller stopped, run 'ctpoller backfill --since YYYY-MM-DD'"
        )
        return EXIT_OK
    finally:
        source.dispose()
        state.dispose()


def cmd_status(args: argparse.Namespace) -> int:
    """Show the watermark, studies waiting to settle, the outbox and the last runs."""
    from ctpoller.jobs.status import status_lines
    from ctpoller.wiring import Parts

    print("\n".join(status_lines(Parts(_settings(args)), now=_now())))
    return EXIT_OK


def cmd_retry(args: argparse.Namespace) -> int:
    """Send failed notifications again: those named by ID (or Message-ID), or --all of them.

    A notification the mail server refused permanently (5xx) stays failed, and every run warns
    about it, until a person retries or dismisses it. retry queues it again with the same
    Message-ID and delivers at once, holding the run lock, like a run's delivery step (so each is
    sent once); it stays queued if the mail server is away. A dismissed one may be retried by ID.
    Without ID and --all: lists the failed notifications and changes nothing.
    """
    from ctpoller.jobs.retry import outbox_finish, retry_failed
    from ctpoller.wiring import Parts

    report = retry_failed(Parts(_settings(args)), args.ids, everything=args.all, now=_now(), out=print)
    return EXIT_OK if report is None else outbox_finish(report, "retry")


def cmd_dismiss(args: argparse.Namespace) -> int:
    """Stop warning about failed notifications a person has dealt with otherwise: --reason is required.

    They are marked dismissed and stay in the archive with the reason; 'ctpoller retry ID' can
    still send one. Without ID and --all: lists the failed notifications and changes nothing.
    """
    from ctpoller.jobs.retry import dismiss_failed, outbox_finish
    from ctpoller.wiring import Parts

    parts = Parts(_settings(args))
    report = dismiss_failed(parts, args.ids, everything=args.all, reason=args.reason, now=_now(), out=print)
    return EXIT_OK if report is None else outbox_finish(report, "dismiss")


def cmd_digest(args: argparse.Namespace) -> int:
    """Email the digest once per week (its own timer): new notifications since the last digest, open
    ones older than CTPOLLER_REVIEW_DUE_DAYS, per station and rule, to CTPOLLER_DIGEST_TO."""
    from ctpoller.jobs.digest import send_digest
    from ctpoller.jobs.retry import outbox_finish
    from ctpoller.wiring import Parts

    line, report = send_digest(Parts(_settings(args)), now=_now())
    print(line)
    return outbox_finish(report, "digest")


def cmd_export(args: argparse.Namespace) -> int:
    """Write the notifications notified --since..--until (UTC days) with their reviews and review history.

    csv: PATH, one row per notification, and PATH-history, one row per review change; xlsx: two sheets.
    --deidentify leaves out accession numbers, UIDs and Message-IDs (the notification key links both)."""
    from ctpoller.jobs.export import export
    from ctpoller.wiring import build_state

    state = build_state(_settings(args))
    try:
        count, changes, files = export(
            state, since=args.since, until=args.until, fmt=args.format, deidentify=args.deidentify, output=args.output
        )
    finally:
        state.dispose()
    print(f"exported {count} notifications and {changes} review changes to {', '.join(map(str, files))}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Run ctpoller end to end on a built-in OpenREM-shaped SQLite database. No server needed.

    Builds the database, replays realistic CT imports the way OpenREM writes them (including a
    re-sent report and a continued one), runs real poll cycles, writes the emails as .eml files and
    the .xlsx archive into --dir, and prints what happened.
    """
    from ctpoller.demo.run import run_demo

    if not args.verbose:
        logging.getLogger("ctpoller").setLevel(logging.WARNING)  # the demo tells its own story
    return run_demo(args.dir, out=print)


# -- helpers -------------------------------------------------------------------------------------------


def finish(report: Report, what: str, *, dry_run: bool) -> int:
    """Print what a person must see, log the summary line, and the exit code of the run's problem."""
    from ctpoller.jobs.report import report_lines

    if report.initialised or dry_run:
        for line in report_lines(report, would=dry_run):
            print(f"ctpoller: {line}" if report.initialised else line)
    if report.initialised:
        return EXIT_OK
    log.info("%s", report.summary(what))
    return EXIT_OK if (problem := report.problem()) is None else exit_code(problem)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date in the form YYYY-MM-DD") from None


def _now() -> datetime:
    return datetime.now(UTC)


def _one_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:300]
