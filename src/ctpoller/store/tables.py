"""ctpoller's own tables, declared here (never reflected), and the named, ordered migrations that
bring a store made by an earlier ctpoller up to date.

Tables::

    ctp_meta          key/value: schema_version, watermark, last_run_at, last_success_at, archive generations,
                      what a run found of an OpenREM restore, a first run's late window
    ctp_study         OpenREM study rows seen above (or, once decided, below) the watermark:
                      pk, uid, status pending|decided|skipped|given_up|history, fingerprint and when first
                      seen / changed; status history: rows before the first watermark with the exam (uid)
                      each belongs to, so that a report continuing one of those exams is evaluated with them
    ctp_exceedance    the ledger: highest value notified per (study uid, rule, metric, event key), indexed
                      by event key too; an exam-level value also under "events:" + a digest of the exam's
                      irradiation event UIDs (model.events_key) in place of the study uid
    ctp_message       the outbox: one email per exam per run, with its fixed Message-ID and status; kind
                      ``exam`` (its notifications are in ctp_notification), or a notice to people
                      (``silence``, ``digest``: its subject and text are stored with it, its study_uid is "")
    ctp_notification  the exceedances each message tells about (what the email and the archive show)
    ctp_station       per station: the newest study seen, the last gaps between studies, and whether its
                      silence was announced (the heartbeat)
    ctp_review_change the review record, append-only: one row per change of one review field of one
                      notification (by its key, core.review.notification_key): old, new, who, when
    ctp_archived_row  notifications adopted from an existing workbook that this store did not record
                      (a replaced store): the row's cells, so that no archived row ever disappears

    ctp_meta also holds, per archive year YYYY: archive_generation:YYYY (bumped whenever a row of that
    year changes), archive_written:YYYY (the generation last written) and archive_seen:YYYY (the
    workbook's size and mtime when ctpoller last wrote or read it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from ctpoller.core import settle

SCHEMA_VERSION = 2  # 2: the review record (an older ctpoller would rewrite the archive without it)
ADVISORY_LOCK_KEY = 0x63_74_70_6F_6C_6C  # "ctpoll"
EVENT_KEY_INDEX = "ctp_exceedance_event_key"
HISTORY = settle.HISTORY  # ctp_study status of a row remembered from before the first run (never evaluated)
#: ctp_meta keys of what a run found when OpenREM's newest study pk was below the watermark: the
#: newest pk then, while it is unknown whether studies were deleted or OpenREM was restored (behind),
#: and once a restore is proven (restored). Only ``reset`` clears them.
OPENREM_BEHIND = "openrem_behind"
OPENREM_RESTORED = "openrem_restored"
LATE_WINDOW = "late_window"  # "floor xmax started-at" while the pks below a first run's start are watched
#: ctp_meta keys of the heartbeat: the newest CT study seen ("pk iso-time"), and, while OpenREM is
#: announced silent, the time of that study (compare-and-set: announced once, recovered once)
LAST_STUDY = "last_study"
SILENCE_ANNOUNCED = "silence_announced"
#: ctp_meta keys of the digest: the last period sent (ISO week "2026-W10"), the newest notification id it told
DIGEST_PERIOD = "digest_period"
DIGEST_NOTIFICATION = "digest_notification"
EXAM = "exam"  # ctp_message.kind of a message about an exam's exceedances
SEVERITY_DEFAULT = "notification"  # ctp_notification.severity of rows recorded before ctpoller kept it

metadata = sa.MetaData()

meta_table = sa.Table(
    "ctp_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=True),
)

study_table = sa.Table(
    "ctp_study",
    metadata,
    sa.Column("pk", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("uid", sa.Text, nullable=True, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("fingerprint", sa.Text, nullable=False, default=""),
    sa.Column("first_seen_at", sa.String(40), nullable=False),
    sa.Column("first_seen_xmax", sa.BigInteger, nullable=True),
    sa.Column("changed_at", sa.String(40), nullable=False),
    sa.Column("decided_at", sa.String(40), nullable=True),
)

exceedance_table = sa.Table(
    "ctp_exceedance",
    metadata,
    sa.Column("study_uid", sa.Text, primary_key=True),
    sa.Column("rule", sa.Text, primary_key=True),
    sa.Column("metric", sa.String(64), primary_key=True),
    sa.Column("event_key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("notified_at", sa.String(40), nullable=False),
)

message_table = sa.Table(
    "ctp_message",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("message_id", sa.Text, nullable=False, unique=True),
    sa.Column("study_uid", sa.Text, nullable=False, index=True),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("recipients", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_attempt_at", sa.String(40), nullable=True),
    sa.Column("sent_at", sa.String(40), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("claimed_by", sa.String(32), nullable=True),
    sa.Column("claimed_at", sa.String(40), nullable=True),
    sa.Column("kind", sa.String(16), nullable=False, server_default=EXAM),
    sa.Column("subject", sa.Text, nullable=True),
    sa.Column("body", sa.Text, nullable=True),
)

notification_table = sa.Table(
    "ctp_notification",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("message", sa.Integer, sa.ForeignKey("ctp_message.id"), nullable=False, index=True),
    sa.Column("study_uid", sa.Text, nullable=False),
    sa.Column("rule", sa.Text, nullable=False),
    sa.Column("metric", sa.String(64), nullable=False),
    sa.Column("event_key", sa.Text, nullable=False),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("limit_value", sa.Text, nullable=False),
    sa.Column("unit", sa.String(16), nullable=False),
    sa.Column("previous_value", sa.Text, nullable=True),
    sa.Column("protocol", sa.Text, nullable=True),
    sa.Column("station_name", sa.Text, nullable=True),
    sa.Column("display_name", sa.Text, nullable=True),
    sa.Column("study_date", sa.String(10), nullable=True),
    sa.Column("study_time", sa.String(15), nullable=True),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("accession_number", sa.Text, nullable=True),
    # added by the migration "notification: what the email shows of the exam and the event"
    sa.Column("requested_procedure", sa.Text, nullable=True),
    sa.Column("age", sa.Text, nullable=True),
    sa.Column("sex", sa.Text, nullable=True),
    sa.Column("study_pk", sa.BigInteger, nullable=True),
    sa.Column("acquisition_type", sa.Text, nullable=True),
    sa.Column("phantom", sa.String(16), nullable=True),
    sa.Column("series", sa.Text, nullable=True),
    sa.Column("event_number", sa.Integer, nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    # added by the migration "notification: who authorised proceeding past a Dose Check"
    sa.Column("authorised_by", sa.Text, nullable=True),
    # added by the migration "notification: severity, the reference level a limit came from, and detail"
    sa.Column("severity", sa.String(16), nullable=False, server_default=SEVERITY_DEFAULT),
    sa.Column("reference", sa.Text, nullable=True),
    sa.Column("reference_value", sa.Text, nullable=True),
    sa.Column("multiple", sa.Text, nullable=True),
    sa.Column("detail", sa.Text, nullable=True),
)


station_table = sa.Table(
    "ctp_station",
    metadata,
    sa.Column("station", sa.Text, primary_key=True),
    sa.Column("last_pk", sa.BigInteger, nullable=False),
    sa.Column("last_at", sa.String(40), nullable=False),
    sa.Column("gaps", sa.Text, nullable=False),  # JSON list of seconds between its studies, oldest first
    sa.Column("silent_since", sa.String(40), nullable=True),  # last_at whose silence was announced
)


review_table = sa.Table(
    "ctp_review_change",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("notification_key", sa.String(64), nullable=False, index=True),
    sa.Column("field", sa.String(32), nullable=False),
    sa.Column("old_value", sa.Text, nullable=True),
    sa.Column("new_value", sa.Text, nullable=True),
    sa.Column("changed_by", sa.Text, nullable=False),
    sa.Column("changed_at", sa.String(40), nullable=False),
)

archived_row_table = sa.Table(
    "ctp_archived_row",
    metadata,
    sa.Column("notification_key", sa.String(64), primary_key=True),
    sa.Column("year", sa.Integer, nullable=False, index=True),
    sa.Column("seq", sa.Integer, nullable=False),  # the order it was adopted in (the workbook's row order)
    sa.Column("cells", sa.Text, nullable=False),
    sa.Column("adopted_at", sa.String(40), nullable=False),
)

MESSAGE_CREATED_INDEX = "ctp_message_created_at"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def from_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def stored_time(text: str) -> datetime:
    """A time ctpoller wrote into a NOT NULL column."""
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class Migration:
    """One step that brings an older store up to date: idempotent, applied in order at every start.

    ``statement`` runs as it is; ``columns`` (of ``table``, as declared above) are added where missing,
    NULL (or their declared default) in the rows already there; ``creates`` is a table made where missing.
    """

    name: str
    statement: str = ""
    table: sa.Table | None = None
    columns: tuple[str, ...] = ()
    creates: sa.Table | None = None


#: Every migration, oldest first. ``create_all`` makes new stores (and new tables) complete; these mend older ones.
MIGRATIONS = (
    Migration(
        "index the ledger by event key (irradiation event UIDs are looked up under any exam)",
        f"CREATE INDEX IF NOT EXISTS {EVENT_KEY_INDEX} ON ctp_exceedance (event_key)",
    ),
    Migration(
        "notification: what the email shows of the exam and the event",
        table=notification_table,
        columns=(
            "requested_procedure",
            "age",
            "sex",
            "study_pk",
            "acquisition_type",
            "phantom",
            "series",
            "event_number",
            "reason",
        ),
    ),
    Migration(
        "the outbox carries notices to people (heartbeat, digest) beside exam notifications",
        table=message_table,
        columns=("kind", "subject", "body"),
    ),
    Migration("keep the review record: every change of every review field, append-only", creates=review_table),
    Migration("adopt the rows of an existing archive that the store did not record", creates=archived_row_table),
    Migration(
        "index messages by creation time (the archive is written one year at a time)",
        f"CREATE INDEX IF NOT EXISTS {MESSAGE_CREATED_INDEX} ON ctp_message (created_at)",
    ),
    Migration(
        "notification: who authorised proceeding past a Dose Check",
        table=notification_table,
        columns=("authorised_by",),
    ),
    Migration(
        "notification: severity, the reference level a limit came from, and detail",
        table=notification_table,
        columns=("severity", "reference", "reference_value", "multiple", "detail"),
    ),
)
