"""What was notified: the messages recorded with their notifications, and the ledger of the highest
value notified per exceedance."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from ctpoller.core.model import ArchiveRow, Ledger, MessageStatus, Notification
from ctpoller.store.base import StoreBase, chunks, meta_value
from ctpoller.store.tables import exceedance_table, from_iso, iso, message_table, notification_table, stored_time

log = logging.getLogger(__name__)


@dataclass
class NewMessage:
    """A message decided in this cycle, not yet in the store."""

    message_id: str
    study_uid: str
    recipients: tuple[str, ...]
    notifications: tuple[Notification, ...]
    status: MessageStatus = "pending"
    events_key: str | None = None  # model.events_key of the exam: exam-level news is recorded under it too


class Notifications(StoreBase):
    """``ctp_message`` rows as they are recorded, ``ctp_notification`` and ``ctp_exceedance``."""

    def ledger(self, exam_keys: Iterable[str], event_keys: Iterable[str] = ()) -> Ledger:
        """What was notified before: the ledger rows of these exams (Study Instance UIDs or
        ``core.model.events_key``s) and of these irradiation event UIDs under any exam.

        Rule names are compared by ``core.model.rule_identity``, whatever case a row was written in, so
        a rule whose name only changed case finds what it notified before.
        """
        result = Ledger()
        t = exceedance_table
        with self._tx("reading the ledger") as conn:
            for column, keys in ((t.c.study_uid, exam_keys), (t.c.event_key, event_keys)):
                for chunk in chunks(sorted(set(keys)), 500):
                    for row in conn.execute(sa.select(t).where(column.in_(chunk))):
                        result.add(row.study_uid, row.rule, row.metric, row.event_key, Decimal(row.value))
        return result

    def _insert_messages(self, conn: Connection, messages: Sequence[NewMessage], now: datetime) -> None:
        """Record messages, their notifications and the ledger: a few statements for any number."""
        recorded: set[str] = set()
        for chunk in chunks([m.message_id for m in messages], 500):
            recorded.update(
                conn.execute(
                    sa.select(message_table.c.message_id).where(message_table.c.message_id.in_(chunk))
                ).scalars()
            )
        fresh: dict[str, NewMessage] = {}
        for message in messages:
            if message.message_id in recorded or message.message_id in fresh:
                log.warning("message %s was recorded before; not recording it twice", message.message_id)
                continue
            fresh[message.message_id] = message
        if not fresh:
            return
        when = iso(now)
        conn.execute(
            sa.insert(message_table),
            [
                dict(
                    message_id=m.message_id,
                    study_uid=m.study_uid,
                    created_at=when,
                    recipients=json.dumps(list(m.recipients)),
                    status=m.status,
                    attempts=0,
                )
                for m in fresh.values()
            ],
        )
        ids: dict[str, int] = {}
        for chunk in chunks(list(fresh), 500):
            query = sa.select(message_table.c.message_id, message_table.c.id).where(
                message_table.c.message_id.in_(chunk)
            )
            ids.update((message_id, pk) for message_id, pk in conn.execute(query))
        notifications = [(ids[m.message_id], n) for m in fresh.values() for n in m.notifications]
        if not notifications:
            return
        conn.execute(
            sa.insert(notification_table), [dict(message=pk, **_notification_row(n)) for pk, n in notifications]
        )
        ledger: dict[tuple[str, str, str, str], str] = {}  # the last value of a key wins, as if written one by one
        for m in fresh.values():
            for n in m.notifications:
                ledger[(n.study_uid, n.rule, n.metric, n.event_key)] = str(n.value)
                if m.events_key is not None and not n.event_key:  # the exam by its events, too
                    ledger[(m.events_key, n.rule, n.metric, "")] = str(n.value)
        insert = (sqlite.insert if self.is_sqlite else postgresql.insert)(exceedance_table)
        conn.execute(
            insert.on_conflict_do_update(
                index_elements=[exceedance_table.c[k] for k in ("study_uid", "rule", "metric", "event_key")],
                set_={"value": insert.excluded.value, "notified_at": insert.excluded.notified_at},
            ),
            [
                dict(study_uid=uid, rule=rule, metric=metric, event_key=key, value=value, notified_at=when)
                for (uid, rule, metric, key), value in ledger.items()
            ],
        )

    def archive_rows(
        self, since: datetime | None = None, until: datetime | None = None, study_uids: Sequence[str] | None = None
    ) -> Iterator[ArchiveRow]:
        """Every notification recorded (in ``[since, until)``, of ``study_uids``, when given), oldest first,
        streamed. ``study_uids`` is for a few studies (one query)."""
        query = notification_query()
        if since is not None:
            query = query.where(message_table.c.created_at >= iso(since))
        if until is not None:
            query = query.where(message_table.c.created_at < iso(until))
        if study_uids is not None:
            query = query.where(notification_table.c.study_uid.in_(list(study_uids)))
        try:
            with self.engine.connect() as conn:
                for row in conn.execution_options(yield_per=1000).execute(query):
                    yield archive_row(row)
        except DBAPIError as e:
            raise self._failed("reading the archive", e, temporary=True) from e

    def archive_due(self) -> bool:
        with self._tx("reading the archive state") as conn:
            generation = meta_value(conn, "archive_generation")
            written = meta_value(conn, "archive_written_generation")
        return generation is not None and generation != written

    def archive_written(self, generation: str | None) -> None:
        self.set_meta({"archive_written_generation": generation})


def _notification_row(n: Notification) -> dict[str, Any]:
    return dict(
        study_uid=n.study_uid,
        rule=n.rule,
        metric=n.metric,
        event_key=n.event_key,
        value=str(n.value),
        limit_value=str(n.limit),
        unit=n.unit,
        previous_value=_text(n.previous_value),
        protocol=n.protocol,
        station_name=n.station_name,
        display_name=n.display_name,
        study_date=n.study_date.isoformat() if n.study_date else None,
        study_time=n.study_time.isoformat() if n.study_time else None,
        description=n.description,
        accession_number=n.accession_number,
        requested_procedure=n.requested_procedure,
        age=n.age,
        sex=n.sex,
        study_pk=n.study_pk,
        acquisition_type=n.acquisition_type,
        phantom=n.phantom,
        series=n.series,
        event_number=n.event_number,
        reason=n.reason,
        authorised_by=n.authorised_by,
        severity=n.severity,
        reference=n.reference,
        reference_value=_text(n.reference_value),
        multiple=_text(n.multiple),
        detail=n.detail,
    )


def _notification(row: Any) -> Notification:
    return Notification(
        study_uid=row.study_uid,
        rule=row.rule,
        metric=row.metric,
        event_key=row.event_key,
        value=Decimal(row.value),
        limit=Decimal(row.limit_value),
        unit=row.unit,
        previous_value=_decimal(row.previous_value),
        protocol=row.protocol,
        station_name=row.station_name,
        display_name=row.display_name,
        study_date=date.fromisoformat(row.study_date) if row.study_date else None,
        study_time=time.fromisoformat(row.study_time) if row.study_time else None,
        description=row.description,
        accession_number=row.accession_number,
        requested_procedure=row.requested_procedure,
        age=row.age,
        sex=row.sex,
        study_pk=row.study_pk,
        acquisition_type=row.acquisition_type,
        phantom=row.phantom,
        series=row.series,
        event_number=row.event_number,
        reason=row.reason,
        authorised_by=row.authorised_by,
        severity="alert" if row.severity == "alert" else "notification",
        reference=row.reference,
        reference_value=_decimal(row.reference_value),
        multiple=_decimal(row.multiple),
        detail=row.detail,
    )


def _text(value: Decimal | None) -> str | None:
    return str(value) if value is not None else None


def _decimal(text: str | None) -> Decimal | None:
    return Decimal(text) if text is not None else None


def notification_query() -> sa.Select[Any]:
    """Each notification with its message's delivery state, oldest first (rows for ``archive_row``)."""
    return (
        sa.select(
            notification_table,
            message_table.c.created_at,
            message_table.c.status.label("msg_status"),
            message_table.c.message_id,
            message_table.c.sent_at,
            message_table.c.last_error,
            message_table.c.recipients,
        )
        .join(message_table, message_table.c.id == notification_table.c.message)
        .order_by(notification_table.c.id)
    )


def archive_row(row: Any) -> ArchiveRow:
    return ArchiveRow(
        notification=_notification(row),
        created_at=stored_time(row.created_at),
        status=row.msg_status,
        message_id=row.message_id,
        sent_at=from_iso(row.sent_at),
        error=row.last_error,
        recipients=tuple(json.loads(row.recipients)),
    )
