"""OpenREM's patient IDs, read only for ``[[cumulative]]`` and turned at once into a keyed hash.

``remapp_patientmoduleattr.patient_id`` is read only when the rules have a ``[[cumulative]]``, and
each value becomes ``patient_key`` (HMAC-SHA256 under a random key kept in the state store) in the
loop that reads it: the ID itself is never returned, stored, logged, mailed or archived. The
recommended read-only role may not read the column (``sql/readonly_role.sql``): a cumulative rule
then needs ``GRANT SELECT (patient_id) ON remapp_patientmoduleattr``, and run and check say so.

OpenREM stores no patient ID by default (and may store a SHA-256 of it, which groups as well):
without IDs cumulative rules find nothing, which ``patient_id_coverage`` lets ``check`` tell.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

import sqlalchemy as sa

from ctpoller.openrem.reads import Reads
from ctpoller.openrem.source import OpenremSource
from ctpoller.openrem.tables import PATIENT, STUDY

COLUMN = "patient_id"


def patient_id_problem(source: OpenremSource) -> str | None:
    """Why this role cannot read the patient IDs a ``[[cumulative]]`` needs (one line), or None."""
    source.connect()
    table = source.t(PATIENT)
    if COLUMN not in table.c:
        return f"OpenREM database {source.where}: column {PATIENT}.{COLUMN} is missing"
    if source.is_sqlite:
        return None
    with source.session("checking this role's privileges") as conn:
        may = conn.execute(
            sa.text("SELECT has_column_privilege(:t, :c, 'SELECT')"), {"t": PATIENT, "c": COLUMN}
        ).scalar_one()
    if may:
        return None
    return (
        f"OpenREM database {source.where}: this role may not SELECT {PATIENT}.{COLUMN}, which a [[cumulative]] "
        f"needs to group a patient's exams (grant it: GRANT SELECT ({COLUMN}) ON {PATIENT} TO <role>; "
        "ctpoller keeps only a keyed hash), or remove the [[cumulative]] tables from the rules file"
    )


def patient_key(patient_id: object, secret: bytes) -> str | None:
    """The keyed hash of one patient ID (None for a missing or blank one)."""
    if not isinstance(patient_id, str) or not patient_id.strip():
        return None
    return hmac.new(secret, patient_id.strip().encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def patient_keys(reads: Reads, pks: Sequence[int], secret: bytes) -> dict[int, str]:
    """{study pk: keyed hash of its patient ID} for the study rows that have an ID (the first patient
    row of each, as OpenREM writes one)."""
    pm = reads.source.t(PATIENT)
    found: dict[int, str] = {}
    wanted = sorted(set(pks))
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = reads.conn.execute(
            sa.select(pm.c.general_study_module_attributes_id, pm.c[COLUMN])
            .where(reads.source.in_values(pm.c.general_study_module_attributes_id, chunk))
            .order_by(pm.c.id)
        )
        for pk, patient_id in rows:
            key = patient_key(patient_id, secret)
            if key is not None and pk not in found:
                found[pk] = key
    return found


def patient_id_coverage(reads: Reads, last: int = 1000) -> tuple[int, int]:
    """(CT studies with a patient ID, CT studies) among the last ``last`` CT study rows, for ``check``."""
    g, pm = reads.source.t(STUDY), reads.source.t(PATIENT)
    recent = sa.select(g.c.id).where(g.c.modality_type == "CT").order_by(g.c.id.desc()).limit(last).subquery("recent")
    has_id = sa.exists().where(
        pm.c.general_study_module_attributes_id == recent.c.id,
        sa.func.length(sa.func.trim(pm.c[COLUMN])) > 0,
    )
    row = reads.conn.execute(sa.select(sa.func.count(), sa.func.count().filter(has_id)).select_from(recent)).one()
    return int(row[1]), int(row[0])
