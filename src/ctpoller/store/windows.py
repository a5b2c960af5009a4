"""The windows ``[[trend]]`` and ``[[cumulative]]`` fold exams into, their episodes, and the key of the
patient IDs' keyed hash.

A window is read per (watch, group) where the watch is the trend's or cumulative's rule identity and
the group a station or a patient's keyed hash (never a patient ID). What a cycle changed is written
by ``StateStore.commit_cycle`` in the cycle's one transaction (``WindowWrite``), so a crash never
applies half a window: an exam is never counted twice and no update is lost.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ctpoller.core.rules.window import Counted, Window
from ctpoller.store.base import StoreBase, chunks, meta_value, put_meta
from ctpoller.store.tables import episode_table, window_exam_table

#: ctp_meta key of the random key (hex) of the patient IDs' keyed hash.
PATIENT_KEY_SECRET = "patient_key_secret"

WindowKey = tuple[str, str]  # (watch, group)


@dataclass
class WindowWrite:
    """What a cycle changed in the windows: exams put in (or replaced) and taken out, episodes started
    (watch, metric, group, the exam that started it) and ended."""

    put: list[tuple[str, str, Counted]] = field(default_factory=list)
    drop: list[tuple[str, str, str]] = field(default_factory=list)  # (watch, group, study uid)
    started: list[tuple[str, str, str, str]] = field(default_factory=list)
    ended: list[tuple[str, str, str]] = field(default_factory=list)  # (watch, metric, group)
    expire: list[tuple[str, str]] = field(default_factory=list)  # (cumulative, the first order key kept)

    @property
    def empty(self) -> bool:
        return not (self.put or self.drop or self.started or self.ended or self.expire)


class Windows(StoreBase):
    """``ctp_window_exam`` and ``ctp_episode``: read per window; written with the cycle."""

    def windows(self, keys: Iterable[WindowKey]) -> dict[WindowKey, Window]:
        """The windows of these (watch, group) keys, an empty window where none is kept."""
        wanted = sorted(set(keys))
        exams: dict[WindowKey, list[Counted]] = {key: [] for key in wanted}
        episodes: dict[WindowKey, dict[str, str]] = {key: {} for key in wanted}
        by_watch: dict[str, list[str]] = {}
        for watch, group in wanted:
            by_watch.setdefault(watch, []).append(group)
        w, e = window_exam_table, episode_table
        with self._tx("reading trend and cumulative windows") as conn:
            for watch, groups in by_watch.items():
                for chunk in chunks(groups, 500):
                    for row in conn.execute(
                        sa.select(w.c.grp, w.c.study_uid, w.c.order_key, w.c.value).where(
                            w.c.watch == watch, w.c.grp.in_(chunk)
                        )
                    ):
                        value = Decimal(row.value) if row.value is not None else None
                        exams[(watch, row.grp)].append(Counted(row.study_uid, row.order_key, value))
                    for grp, metric, started_by in conn.execute(
                        sa.select(e.c.grp, e.c.metric, e.c.started_by).where(e.c.watch == watch, e.c.grp.in_(chunk))
                    ):
                        episodes[(watch, grp)][metric] = started_by
        return {key: Window(tuple(sorted(exams[key], key=lambda c: (c.order, c.uid))), episodes[key]) for key in wanted}

    def windows_holding(self, uids: Iterable[str]) -> set[WindowKey]:
        """The (watch, group) keys of the windows that count any of these exams (by the uid index):
        an exam re-sent with another station, patient or value leaves them or changes there."""
        found: set[WindowKey] = set()
        w = window_exam_table
        with self._tx("reading trend and cumulative windows") as conn:
            for chunk in chunks(sorted(set(uids)), 500):
                rows = conn.execute(sa.select(w.c.watch, w.c.grp).where(w.c.study_uid.in_(chunk)).distinct())
                found.update((row.watch, row.grp) for row in rows)
        return found

    def patient_secret(self, *, create: bool) -> bytes | None:
        """The random key of the patient IDs' keyed hash; made (once, whoever runs first) when
        ``create`` and none is kept yet, else None."""
        with self._tx("reading the patient key") as conn:
            value = meta_value(conn, PATIENT_KEY_SECRET)
            if value is None and create:
                put_meta(conn, PATIENT_KEY_SECRET, secrets.token_hex(32))
                value = meta_value(conn, PATIENT_KEY_SECRET)
        return bytes.fromhex(value) if value else None

    def _write_windows(self, conn: Connection, write: WindowWrite) -> None:
        """Apply a cycle's window changes (in the cycle's transaction), row by row by primary key, so
        that the cost follows the changes, never the rows kept."""
        w, e = window_exam_table, episode_table
        gone = [*write.drop, *((watch, group, counted.uid) for watch, group, counted in write.put)]
        if gone:
            conn.execute(
                sa.delete(w).where(
                    w.c.watch == sa.bindparam("w"), w.c.grp == sa.bindparam("g"), w.c.study_uid == sa.bindparam("u")
                ),
                [{"w": watch, "g": group, "u": uid} for watch, group, uid in gone],
            )
        if write.put:
            conn.execute(
                sa.insert(w),
                [
                    {"watch": watch, "grp": group, "study_uid": c.uid, "order_key": c.order, "value": _text(c.value)}
                    for watch, group, c in write.put
                ],
            )
        ended = [*write.ended, *((watch, metric, group) for watch, metric, group, _ in write.started)]
        if ended:
            conn.execute(
                sa.delete(e).where(
                    e.c.watch == sa.bindparam("w"), e.c.metric == sa.bindparam("m"), e.c.grp == sa.bindparam("g")
                ),
                [{"w": watch, "m": metric, "g": group} for watch, metric, group in ended],
            )
        for watch, first in write.expire:  # by the (watch, order_key) index: only what expires is read
            conn.execute(sa.delete(w).where(w.c.watch == watch, w.c.order_key < first))
        if write.started:
            conn.execute(
                sa.insert(e),
                [{"watch": w_, "metric": m, "grp": g, "started_by": uid} for w_, m, g, uid in write.started],
            )


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)
