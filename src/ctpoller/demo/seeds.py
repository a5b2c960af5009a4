"""What the demo and the tests import into OpenREM: exams and their irradiation events as OpenREM's
importers would have read them from a dose report, and the codes OpenREM derives its counts from."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, time
from decimal import Decimal

from ctpoller.demo.schema import DOSE_CHECK

PHANTOMS: Mapping[str, str] = {
    "113690": "IEC Head Dosimetry Phantom",  # 16 cm
    "113691": "IEC Body Dosimetry Phantom",  # 32 cm
}
_AXIAL = frozenset({"113804"})  # Sequenced Acquisition
_SPIRAL = frozenset({"P5-08001", "116152004", "C0860888"})
_STATIONARY = frozenset({"113806"})
_CONSTANT_ANGLE = frozenset({"113805"})  # 113807 Free Acquisition is counted in none of them
_DOSE_CHECK_COLUMNS = frozenset(DOSE_CHECK.c.keys()) - {"id", "ct_irradiation_event_data_id"}
_EQUIPMENT_KEY = (
    "manufacturer",
    "institution_name",
    "station_name",
    "institutional_department_name",
    "manufacturer_model_name",
    "device_serial_number",
    "software_versions",
    "gantry_id",
    "device_observer_uid",
)


@dataclass(frozen=True)
class SeedEvent:
    """One CT irradiation event as an RDSR reports it (CTDIvol in mGy, DLP in mGy.cm)."""

    uid: str | None
    protocol: str | None
    acquisition_type: tuple[str, str]  # (code_value, code_meaning), e.g. ("P5-08001", "Spiral Acquisition")
    ctdivol: Decimal | None
    dlp: Decimal | None
    phantom: str | None  # "113690" head, "113691" body, or None
    series_description: str | None = None
    dose_check: Mapping[str, Decimal | bool | None] | None = None  # remapp_ctdosecheckdetails columns
    alert_authorised_by: str | None = None  # remapp_personparticipant.person_name (staff, 113850) of the alert

    def __post_init__(self) -> None:
        if self.phantom is not None and self.phantom not in PHANTOMS:
            raise ValueError(f"unknown CTDIw phantom code {self.phantom!r}: use one of {sorted(PHANTOMS)}")
        unknown = set(self.dose_check or ()) - _DOSE_CHECK_COLUMNS
        if unknown:
            raise ValueError(f"not columns of remapp_ctdosecheckdetails: {sorted(unknown)}")


@dataclass(frozen=True)
class SeedStudy:
    """One RDSR's worth of a CT study, as OpenREM stores it (total_dlp is the RDSR's own total)."""

    uid: str | None
    accession: str | None
    study_date: date | None
    study_time: time | None
    description: str | None
    requested_procedure: str | None
    procedure: str | None  # procedure_code_meaning
    station_name: str | None
    institution_name: str | None
    manufacturer: str | None
    model: str | None
    display_name: str | None  # None: OpenREM's default, institution + ' ' + station
    total_dlp: Decimal | None
    patient_age: str | None  # raw DICOM AS string, e.g. '063Y'
    patient_age_decimal: Decimal | None
    patient_sex: str | None
    patient_id: str | None
    patient_name: str | None
    events: tuple[SeedEvent, ...]
    sop_instance_uid: str
    modality: str = "CT"
    study_standard_names: tuple[str, ...] = ()
    event_standard_names: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    modality_first: bool = False  # Philips SC importer: modality at the very start, no SOP UID recorded
    patient_weight: Decimal | None = None  # kg
    patient_size: Decimal | None = None  # m

    def __post_init__(self) -> None:
        bad = [i for i in self.event_standard_names if not 0 <= i < len(self.events)]
        if bad:
            raise ValueError(f"event_standard_names refers to events {bad}, study has {len(self.events)}")


def default_display_name(institution_name: str | None, station_name: str | None) -> str:
    """OpenREM's default display name for a new device."""
    if institution_name and station_name:
        return f"{institution_name} {station_name}"
    return institution_name or station_name or "Blank"


def _hash(value: str | None) -> str | None:
    return hashlib.sha256(value.encode("utf-8")).hexdigest() if value else None
