"""Finding one exam in OpenREM by accession number or Study Instance UID, for ``ctpoller explain`` only.

OpenREM indexes neither ``study_instance_uid`` nor ``accession_number`` (see tests/data/openrem and
/work/shared/openrem/README.md: the study table has indexes on its pk and ``modality_type`` only), so a
lookup reads the whole study table: a sequential scan, once per statement. It is never on the polling
path, which pages by pk. ``Lookup.cost`` says what it cost in words, with the indexes the database really
has (a site may have added one).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa

from ctpoller.core.exam import Exam
from ctpoller.openrem.reads import Reads
from ctpoller.openrem.tables import STUDY
from ctpoller.openrem.values import text_or_none

MatchedBy = Literal["Study Instance UID", "accession number", "accession number, as OpenREM's SHA-256 hash of it"]
_COLUMNS = {"Study Instance UID": "study_instance_uid", "accession number": "accession_number"}


def openrem_hash(text: str) -> str:
    """What OpenREM stores instead of an accession number with ``accession_hashed`` on (its ``hash_id``:
    SHA-256 of the UTF-8 text, in hex), so that explain finds an exam by the number a person knows."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Lookup:
    """What a lookup found: the CT exams (each every study row of its UID, in pk order), how they were
    matched, the rows it found of other modalities, and what it cost."""

    text: str
    exams: tuple[Exam, ...]
    matched_by: tuple[MatchedBy, ...]  # per exam
    other_modalities: tuple[str, ...]  # e.g. ("MG",): rows matched that are not CT (not evaluated)
    scans: int  # sequential scans of the study table (statements without an index to use)
    study_rows: int  # the study table's size
    estimated: bool  # PostgreSQL's estimate (pg_class.reltuples), else counted
    indexed: tuple[str, ...]  # of the two columns, those an index leads with

    @property
    def cost(self) -> str:
        """One line: what the lookup read, e.g. "2 sequential scans of about 1,200,000 study rows
        (OpenREM has no index on study_instance_uid or accession_number)"."""
        size = f"{'about ' if self.estimated else ''}{self.study_rows:,} study rows"
        missing = [column for column in _COLUMNS.values() if column not in self.indexed]
        if not missing:
            return f"by index ({', '.join(self.indexed)}), in {self.scans} statement(s) on {size}"
        why = f"OpenREM has no index on {' or '.join(missing)}"
        scans = "a sequential scan" if self.scans == 1 else f"{self.scans} sequential scans"
        return f"{scans} of {size} ({why})"


def find_exams(reads: Reads, text: str) -> Lookup:
    """The exams whose Study Instance UID or accession number is ``text`` (compared as OpenREM stored it,
    surrounding spaces ignored; an accession number also as OpenREM's hash of it), read in full with
    ``Reads.study_rows``. A UID names one exam; an
    accession number may name several (one per UID). Two statements at most, each a scan of the study
    table unless indexed: the rows matched, then (for an accession number) every row of their UIDs."""
    g = reads.source.t(STUDY)
    wanted = text.strip()
    hashed = openrem_hash(wanted)
    matched = reads.conn.execute(
        sa.select(g.c.id, g.c.study_instance_uid, g.c.accession_number, g.c.modality_type)
        .where(sa.or_(g.c.study_instance_uid == wanted, g.c.accession_number.in_([wanted, hashed])))
        .order_by(g.c.id)
    ).all()
    by_uid: dict[str, MatchedBy] = {}
    other: list[str] = []
    for row in matched:
        uid, modality = text_or_none(row.study_instance_uid), (text_or_none(row.modality_type) or "").upper()
        if uid is None:
            continue
        if modality and modality != "CT":
            other.append(modality)
            continue
        how: MatchedBy = "Study Instance UID" if uid == wanted else "accession number"
        if how == "accession number" and text_or_none(row.accession_number) == hashed:
            how = "accession number, as OpenREM's SHA-256 hash of it"
        by_uid.setdefault(uid, how)
    pks = [row.id for row in matched if text_or_none(row.study_instance_uid) in by_uid]
    scans = 1
    if any(how != "Study Instance UID" for how in by_uid.values()):  # the exam's other rows, whatever their accession
        scans += 1
        pks = list(
            reads.conn.execute(
                sa.select(g.c.id).where(reads.source.in_texts(g.c.study_instance_uid, sorted(by_uid))).order_by(g.c.id)
            ).scalars()
        )
    rows = reads.study_rows(pks)
    size, estimated = _size(reads)
    exams = []
    for uid in by_uid:
        exam_rows = tuple(rows[pk] for pk in sorted(rows) if rows[pk].uid == uid)
        if exam_rows:
            exams.append(Exam(uid=uid, rows=exam_rows))
    return Lookup(
        text=wanted,
        exams=tuple(exams),
        matched_by=tuple(by_uid[exam.uid] for exam in exams),
        other_modalities=tuple(dict.fromkeys(other)),
        scans=scans,
        study_rows=size,
        estimated=estimated,
        indexed=_indexed(reads, tuple(_COLUMNS.values())),
    )


def _size(reads: Reads) -> tuple[int, bool]:
    """The study table's row count as PostgreSQL last estimated it (no scan), and True; counted (False)
    on SQLite or when the table was never analysed (a small or new database)."""
    g = reads.source.t(STUDY)
    if not reads.source.is_sqlite:
        estimate = reads.conn.execute(
            sa.text("SELECT reltuples::bigint FROM pg_class WHERE oid = CAST(:table AS regclass)"), {"table": STUDY}
        ).scalar_one_or_none()
        if estimate is not None and estimate >= 0:  # -1: never analysed
            return int(estimate), True
    return int(reads.conn.execute(sa.select(sa.func.count()).select_from(g)).scalar_one()), False


def _indexed(reads: Reads, columns: Sequence[str]) -> tuple[str, ...]:
    """Which of ``columns`` some index of the study table leads with (so a lookup by it needs no scan)."""
    if reads.source.is_sqlite:
        found = {
            str(info[2])
            for index in reads.conn.execute(sa.text(f"PRAGMA index_list('{STUDY}')")).all()
            for info in reads.conn.execute(sa.text(f"PRAGMA index_info('{index[1]}')")).all()
            if info[0] == 0
        }
    else:
        found = set(
            reads.conn.execute(
                sa.text(
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
                    "ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] WHERE i.indrelid = CAST(:table AS regclass)"
                ),
                {"table": STUDY},
            ).scalars()
        )
    return tuple(column for column in columns if column in found)
