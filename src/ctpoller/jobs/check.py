"""``ctpoller check``: one line per part, each "ok" proven, nothing written and nothing sent."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ctpoller.archive.base import XlsxArchive
from ctpoller.core.rules import RuleSet
from ctpoller.errors import ConfigError, CtpollerError, NotifyError, SourceError, StateError
from ctpoller.jobs.heartbeat import Heartbeat

if TYPE_CHECKING:
    from ctpoller.jobs.digest import Digest
from ctpoller.mail.base import Notifier
from ctpoller.openrem.patients import patient_id_coverage, patient_id_problem
from ctpoller.openrem.source import OpenremSource
from ctpoller.openrem.tables import SHOWN_TABLES
from ctpoller.settings import Settings
from ctpoller.store.store import StateStore


class Parts(Protocol):
    """The parts a job builds from the settings when it needs them (``wiring.Parts`` builds them)."""

    settings: Settings

    def rules(self) -> RuleSet: ...

    def source(self) -> OpenremSource: ...

    def state(self) -> StateStore: ...

    def notifier(self) -> Notifier | None: ...

    def archive(self) -> XlsxArchive | None: ...

    def heartbeat(self) -> Heartbeat: ...

    def digest(self) -> Digest: ...


Check = tuple[bool, str, CtpollerError | None]


def settings_file(env_file: str | None) -> Path | None:
    """The settings file ``load_settings`` reads: ``--env-file``, ``CTPOLLER_ENV_FILE``, else ./.env if any."""
    explicit = env_file or os.environ.get("CTPOLLER_ENV_FILE")
    if explicit:
        return Path(explicit)
    return Path(".env") if Path(".env").is_file() else None


def _settings_checks(parts: Parts, env_file: str | None) -> Iterator[Check]:
    """Where the settings came from, and every required one that is missing (each its own line)."""
    from dotenv import dotenv_values

    def counted(values: dict[str, str | None]) -> int:
        return sum(
            1 for k, v in values.items() if k.upper().startswith("CTPOLLER_") and k.upper() != "CTPOLLER_ENV_FILE" and v
        )

    problems: list[ConfigError] = []
    path = settings_file(env_file)
    in_environment = counted(dict(os.environ))
    where = f"{in_environment} CTPOLLER_ variables from the environment"
    if path is not None:
        in_file = counted(dotenv_values(path, encoding="utf-8"))
        if in_file == 0:
            problems.append(ConfigError(f"settings file {path} sets nothing (no CTPOLLER_ variable with a value)"))
        where = f"{in_file} CTPOLLER_ variables from {path}, {where}"
    if parts.settings.source_url is None:
        problems.append(
            ConfigError(
                "CTPOLLER_SOURCE_URL is not set: give the OpenREM database, e.g. postgresql://ctpoller@db/openrem"
            )
        )
    if parts.settings.rules_file is None:
        problems.append(ConfigError("CTPOLLER_RULES_FILE is not set: give the rules file (see examples/rules.toml)"))
    if parts.settings.smtp_host is None and parts.settings.outbox_dir is None:
        problems.append(ConfigError("no delivery configured: set CTPOLLER_SMTP_HOST (or CTPOLLER_OUTBOX_DIR)"))
    elif parts.settings.outbox_dir is None and parts.settings.mail_from is None:
        problems.append(ConfigError("CTPOLLER_MAIL_FROM is not set: the sender address is required with SMTP"))
    for problem in problems:
        yield False, str(problem), problem
    if not problems:
        smtp = "CTPOLLER_SMTP_HOST, CTPOLLER_MAIL_FROM"
        delivery = "CTPOLLER_OUTBOX_DIR" if parts.settings.outbox_dir is not None else smtp
        yield True, f"settings: {where}; CTPOLLER_SOURCE_URL, CTPOLLER_RULES_FILE and {delivery} are set", None


def run_checks(parts: Parts, env_file: str | None = None) -> Iterator[Check]:
    """Each check as (passed, one line saying what was proven, the error if it failed). Writes nothing:
    no state store, lock, archive or outbox file is created, nothing is sent."""
    yield from _settings_checks(parts, env_file)
    rules: RuleSet | None = None
    if parts.settings.rules_file is not None:
        try:
            rules = parts.rules()
            where = parts.settings.rules_file
            counts = [
                (len(rules.rules), "rules"),
                (len(rules.trends), "trends"),
                (len(rules.cumulatives), "cumulative"),
            ]
            counts.append((len(rules.routes), "routes"))
            listed = ", ".join(f"{n} {what}" for n, what in counts if n or what == "rules")
            yield True, f"rules file {where}: {listed}, each with recipients", None
            yield from ((True, line, None) for line in who_receives(rules))
            yield from ((True, line, None) for line in rules_listed(rules))
        except CtpollerError as e:
            yield False, str(e), e
    if parts.settings.source_url is not None:
        yield from _source_checks(parts, rules)
    yield from _state_checks(parts)
    if parts.settings.outbox_dir is not None or (
        parts.settings.smtp_host is not None and parts.settings.mail_from is not None
    ):
        try:
            notifier = parts.notifier()
            checker = getattr(notifier, "check", None)
            detail = checker() if checker is not None else f"{getattr(notifier, 'name', 'delivery')} ready"
            yield True, str(detail), None
        except CtpollerError as e:
            yield False, str(e), e
    if parts.settings.archive_path is not None:
        try:
            yield True, check_archive_path(parts.settings.archive_path), None
        except CtpollerError as e:
            yield False, str(e), e
        else:
            archive = parts.archive()
            if archive is not None:
                yield from archive_checks(archive)


def rules_listed(rules: RuleSet) -> list[str]:
    """One line per rule in precedence order: its limits as they are now (a reference level times its
    multiple with the effective limit and the source), priority and stop, severity."""
    from ctpoller.jobs.explain_rules import SHORT_LABELS, limits_shown, number
    from ctpoller.jobs.table import aligned, clipped

    rows = []
    for position, rule in enumerate(rules.rules, start=1):
        precedence = ", ".join([f"priority {rule.priority}"] * bool(rule.priority) + ["stop"] * rule.stop)
        rows.append(["rule", str(position), clipped(rule.name, 40), limits_shown(rule), precedence, rule.severity])
    for trend in getattr(rules, "trends", ()):  # [[trend]]: the mean of a station's last exams of one type
        label = SHORT_LABELS[trend.metric]
        mean = f"mean {label} of the last {trend.exams} exams per station > {number(trend.above)} × {number(trend.drl)}"
        armed = f", armed above {number(trend.armed_above)} ×" if trend.armed_above is not None else ""
        limit = f"{mean} = {number(trend.limit)} {trend.unit}{f' ({trend.reference})' if trend.reference else ''}"
        rows.append(["trend", "", clipped(trend.name, 40), limit + armed, "", trend.severity])
    for cumulative in getattr(rules, "cumulatives", ()):  # [[cumulative]]: one patient's exams within a period
        limits = [f"DLP total > {number(cumulative.dlp_total)} mGy·cm"] * (cumulative.dlp_total is not None)
        limits += [f"more than {cumulative.exams} exams"] * (cumulative.exams is not None)
        within = f"one patient within {cumulative.days} days: {' or '.join(limits)}"
        rows.append(["cumulative", "", clipped(cumulative.name, 40), within, "", cumulative.severity])
    if not any(row[4] for row in rows):  # no priority or stop anywhere: no empty column
        rows = [row[:4] + row[5:] for row in rows]
    return aligned(rows, right=(1,))


def who_receives(rules: RuleSet) -> list[str]:
    """Who receives what, one line per route, the defaults, each rule and the Dose Check."""

    def listed(addresses: tuple[str, ...]) -> str:
        return ", ".join(addresses) or "nobody"

    lines = [
        f"recipients: route '{route.name}': {route.shown()} -> {listed(route.recipients)}" for route in rules.routes
    ]
    others = "exams no route matches" if rules.routes else "every exam"
    lines.append(f"recipients: [defaults] ({others}) -> {listed(rules.default_recipients)}")
    base = "the route's recipients or the defaults" if rules.routes else "the defaults"
    named = [(f"rule '{rule.name}'", rule.recipients) for rule in rules.rules]
    if rules.dose_check.notify:
        named.append(("[dose_check]", rules.dose_check.recipients))
    lines.extend(f"recipients: {name} -> {base}{', plus ' + ', '.join(own) if own else ''}" for name, own in named)
    return lines


def _source_checks(parts: Parts, rules: RuleSet | None) -> Iterator[Check]:
    source: OpenremSource | None = None
    try:
        source = parts.source()
        source.connect()
        missing = source.missing_privileges()
        if missing:
            more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
            e1 = SourceError(
                f"OpenREM database {source.where}: this role may not SELECT {', '.join(missing[:5])}{more}, "
                "which every run reads: grant them (see sql/readonly_role.sql)",
                temporary=False,
            )
            yield False, str(e1), e1
        else:
            extra = "" if source.has_standard_names else " (no standard-name tables: standard_name never matches)"
            unread = [f"{t}.{c}" for t, c in sorted(source.unshown)] + [t for t in SHOWN_TABLES if not source.has(t)]
            if unread:  # read only where granted: a run goes on without them, the emails leave them out
                extra += f" (not readable, so the emails leave out {', '.join(unread)}: see sql/readonly_role.sql)"
            proven = "is there" if source.is_sqlite else "is there and this role may SELECT it"
            yield True, f"OpenREM database {source.where}: every table and column a run reads {proven}{extra}", None
        if rules is not None and (problem := source.criteria_problem(rules)):
            yield False, problem, ConfigError(problem)
        if rules is not None and rules.cumulatives:
            yield _patient_ids(source)
        if rules is not None and rules.uses_standard_names and not source.has_standard_names:
            e2 = ConfigError("the rules use standard_name but the OpenREM database has no standard-name tables")
            yield False, str(e2), e2
    except CtpollerError as e:
        yield False, str(e), e
    finally:
        if source is not None:
            source.dispose()


def _patient_ids(source: OpenremSource) -> Check:
    """Whether a ``[[cumulative]]`` can group anything: the role reads the patient IDs, and OpenREM
    stores them (its default stores none)."""
    problem = patient_id_problem(source)
    if problem:
        return False, problem, ConfigError(problem)
    with source.reading("counting the patient IDs OpenREM stores") as reads:
        with_id, studies = patient_id_coverage(reads)
    counted = f"{with_id} of the last {studies} CT studies in OpenREM {source.where} have a patient ID"
    if studies and not with_id:
        e = ConfigError(f"{counted}: the [[cumulative]] rules find nothing (OpenREM stores no patient IDs by default)")
        return False, str(e), e
    return True, f"{counted}; [[cumulative]] rules group those (by a keyed hash, never shown)", None


def _state_checks(parts: Parts) -> Iterator[Check]:
    state: StateStore | None = None
    try:
        state = parts.state()
        problem = state.access_problem()
        if problem is not None:
            e1 = StateError(f"state store {state.where}: {problem} (CTPOLLER_STATE_URL)", temporary=False)
            yield False, str(e1), e1
        elif not state.exists():
            yield True, f"state store {state.where}: not created yet (the first run creates it; this user may)", None
        else:
            watermark = state.watermark()
            where = "not started yet" if watermark is None else f"watermark at OpenREM study pk {watermark}"
            failed = state.outbox_counts().get("failed", 0)
            waiting = f"; {failed} failed notifications wait for 'ctpoller retry' or 'dismiss'" if failed else ""
            yield True, f"state store {state.where}: readable and writable by this user, {where}{waiting}", None
    except CtpollerError as e:
        yield False, str(e), e
    finally:
        if state is not None:
            state.dispose()


def check_archive_path(path: Path) -> str:
    """For ``check``: what was proven about the archive path, or the error a run would meet.

    A path that cannot be a file is a setting to fix (ConfigError, exit 2); a directory that is
    missing or that this user may not write into needs a person (exit 1), as in a run. The file
    itself is replaced by a rename, so only the directory must be writable.
    """
    if path.is_dir():
        raise ConfigError(f"CTPOLLER_ARCHIVE_PATH: {path} is a directory; give the path of the .xlsx file")
    if path.exists() and not path.is_file():
        raise ConfigError(f"CTPOLLER_ARCHIVE_PATH: {path} is not a regular file")
    directory = path.parent
    if not directory.is_dir():
        raise NotifyError(
            f"cannot write the archive {path}: directory {directory} does not exist: check CTPOLLER_ARCHIVE_PATH",
            permanent=False,
            scope="settings",
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise NotifyError(
            f"cannot write the archive {path}: directory {directory} is not writable by this user: "
            "check CTPOLLER_ARCHIVE_PATH",
            permanent=False,
            scope="settings",
        )
    state = "replaced by each run that changes it" if path.exists() else "not written yet"
    return f"archive {path}: directory {directory} exists and this user may write there ({state})"


def archive_checks(archive: XlsxArchive) -> Iterator[Check]:
    """Each workbook of the archive (one per year, and the single workbook of an earlier ctpoller):
    open in an office program (a run reads it but does not replace it: temporary), unreadable (kept
    untouched until a person repairs or moves it: exit 1, as in a run), or read back in full."""
    from ctpoller.archive.readback import WorkbookUnreadable

    files = [(f"the workbook of {year}", archive.file(year)) for year in sorted(archive.years_on_disk())]
    if archive.path.exists():
        files.insert(0, ("an earlier ctpoller's single workbook, split per year by the next run", archive.path))
    for what, path in files:
        lock = archive.lock_file(path)
        if lock is not None:
            e1 = NotifyError(
                f"archive {path} ({what}) is open in an office program (lock file {lock.name}): runs read it "
                "but do not replace it until it is closed",
                permanent=False,
            )
            yield False, str(e1), e1
            continue
        try:
            rows = len(archive.read(path).rows)
        except WorkbookUnreadable as e:
            e2 = NotifyError(
                f"archive {path} ({what}) cannot be read ({e}): runs keep it untouched; repair it or move it away",
                permanent=False,
                scope="settings",
            )
            yield False, str(e2), e2
        except OSError as e:
            e3 = NotifyError(f"archive {path} ({what}) cannot be read: {e.strerror or e}", permanent=False)
            yield False, str(e3), e3
        else:
            yield True, f"archive {path} ({what}): read back in full, {rows} rows, not open in an office program", None
