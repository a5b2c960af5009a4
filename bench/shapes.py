"""What the generated OpenREM data looks like: its exam types, stations and context codes.

The shape follows what OpenREM stores (see the OpenREM facts in ../shared/openrem/README.md beside the repository):

* 8 stations of 5 vendors (``remapp_generalequipmentmoduleattr`` + a shared
  ``remapp_uniqueequipmentnames`` row each). GE ESR and some Toshiba reports have no protocol
  (NULL ``acquisition_protocol``); GE/Toshiba localisers have NULL CTDIvol/DLP/phantom, Siemens
  topograms about 0.14 mGy, Philips surviews 0.
* 21 exam types, each with its protocol, phantom, lognormal CTDIvol (median, sigma) and a
  lognormal scan length giving the DLP; 1-2 localisers plus 1-6 scans, about 3.6 events per study.
  About 2 % of exams exceed a limit of ``examples/rules.toml`` (the AAPM values).
* ``remapp_contextid`` rows keyed by code value: acquisition types (113805, P5-08001, 113804,
  113806), phantoms (113690 head, 113691 body), target regions.
* about 0.5 % "continued" reports: a second study row with the same Study Instance UID.
* complete studies: modality ``CT``, patient rows (age, weight, sex; a few unknown ages), totals,
  event counts, ``remapp_ctradiationdose`` + ``remapp_ctaccumulateddosedata``.
* ``remapp_ctdosecheckdetails`` rows for about 5 % of the events of three stations: Siemens-like
  alert values (CTDIvol 1000, never exceeded) and Philips-like notification values (80/50 mGy).
* study dates: 400 studies a day, ending at END_DATE, so 90 days hold about 36,000 studies at any size.

rowsql.py turns these into SQL; generate.py runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

END_DATE = date(2026, 2, 27)
STUDIES_PER_DAY = 400
CONTINUED_FRACTION = 0.005
DOSE_CHECK_FRACTION = 0.05

CONTEXT_CODES = (
    # code_value, code_meaning, cid_table
    ("113805", "Constant Angle Acquisition", "CID 10013"),
    ("P5-08001", "Spiral Acquisition", "CID 10013"),
    ("113804", "Sequenced Acquisition", "CID 10013"),
    ("113806", "Stationary Acquisition", "CID 10013"),
    ("113807", "Free Acquisition", "CID 10013"),
    ("113691", "IEC Body Dosimetry Phantom", "CID 4052"),
    ("113690", "IEC Head Dosimetry Phantom", "CID 4052"),
    ("T-D1100", "Head", "CID 4030"),
    ("T-D1600", "Neck", "CID 4030"),
    ("T-D3000", "Chest", "CID 4030"),
    ("T-D4000", "Abdomen", "CID 4030"),
    ("T-D0010", "Entire body", "CID 4030"),
    ("T-32000", "Heart", "CID 4030"),
    ("T-11503", "Lumbar spine", "CID 4030"),
    ("T-D0300", "Extremity", "CID 4030"),
)


@dataclass(frozen=True)
class ExamType:
    description: str
    protocol: str
    requested: str
    phantom: str  # "head" | "body"
    ctdivol_median: float  # mGy
    ctdivol_sigma: float  # of ln(CTDIvol)
    length_cm: float  # median scan length: DLP = CTDIvol x length
    weight: float  # share of exams, %
    paediatric: bool
    acquisition: str  # code value of the scan events' acquisition type
    region: str  # code value of the target region


EXAM_TYPES = (
    ExamType("Head Routine", "Head Routine", "CT Head", "head", 46, 0.25, 16, 16, False, "P5-08001", "T-D1100"),
    ExamType("Head Trauma", "HEAD TRAUMA", "CT Head", "head", 50, 0.25, 18, 4, False, "P5-08001", "T-D1100"),
    ExamType("CT Sinuses", "Sinus Low Dose", "CT Sinuses", "head", 12, 0.35, 10, 2, False, "P5-08001", "T-D1100"),
    ExamType("CT Neck", "Neck +C", "CT Neck", "body", 12, 0.40, 25, 3, False, "P5-08001", "T-D1600"),
    ExamType("CT Chest", "Chest Routine", "CT Chest", "body", 9, 0.45, 35, 14, False, "P5-08001", "T-D3000"),
    ExamType("CT Chest HRCT", "Chest HRCT", "CT Chest", "body", 6, 0.45, 32, 3, False, "113804", "T-D3000"),
    ExamType(
        "CT Chest Low Dose", "Lung Screening LD", "CT Chest", "body", 2.5, 0.45, 35, 3, False, "P5-08001", "T-D3000"
    ),
    ExamType("CT Pulmonary Angiogram", "CTPA", "CTPA", "body", 10, 0.45, 35, 5, False, "P5-08001", "T-D3000"),
    ExamType(
        "CT Abdomen Pelvis", "Abdomen Pelvis +C", "CT Abdomen", "body", 12, 0.45, 45, 16, False, "P5-08001", "T-D4000"
    ),
    ExamType(
        "CT Chest Abdomen Pelvis",
        "Thorax Abd Pelvis",
        "CT Chest abdomen and pelvis",
        "body",
        11,
        0.45,
        35,
        10,
        False,
        "P5-08001",
        "T-D0010",
    ),
    ExamType("CT KUB", "KUB Low Dose", "CT KUB", "body", 4, 0.40, 40, 3, False, "P5-08001", "T-D4000"),
    ExamType("CT Liver", "Liver 3 Phase", "CT Liver", "body", 13, 0.45, 25, 2, False, "P5-08001", "T-D4000"),
    ExamType(
        "CT Coronary Angiogram",
        "Cardiac CTA Retro",
        "CT Coronary",
        "body",
        35,
        0.50,
        14,
        1.5,
        False,
        "P5-08001",
        "T-32000",
    ),
    ExamType(
        "CT Calcium Score", "Calcium Score", "CT Calcium Score", "body", 3, 0.40, 14, 1, False, "113804", "T-32000"
    ),
    ExamType(
        "CT Coronary Prospective",
        "Cardiac Prosp Seq",
        "CT Coronary",
        "body",
        15,
        0.50,
        14,
        1,
        False,
        "113804",
        "T-32000",
    ),
    ExamType(
        "CT Brain Perfusion", "Perfusion Brain", "CT Perfusion", "head", 220, 0.30, 8, 0.5, False, "113806", "T-D1100"
    ),
    ExamType("CT Lumbar Spine", "Spine Lumbar", "CT Spine", "body", 18, 0.40, 20, 3, False, "P5-08001", "T-11503"),
    ExamType("CT Extremity", "Extremity", "CT Extremity", "body", 6, 0.50, 30, 3, False, "P5-08001", "T-D0300"),
    ExamType("Paed Head", "Ped Head", "CT Head paediatric", "head", 25, 0.35, 14, 2.5, True, "P5-08001", "T-D1100"),
    ExamType(
        "Paed Chest Abdomen", "Ped Body", "CT Body paediatric", "body", 4, 0.45, 30, 1.5, True, "P5-08001", "T-D0010"
    ),
    ExamType("CT Angiogram Aorta", "Angio Aorta", "CT Aorta", "body", 12, 0.45, 60, 3, False, "P5-08001", "T-D0010"),
)


@dataclass(frozen=True)
class Station:
    manufacturer: str
    model: str
    institution: str
    station_name: str
    software: str
    serial: str
    weight: float  # share of exams, %
    localiser_protocol: str | None  # None: GE/Toshiba localisers have no protocol
    localiser_ctdivol: float | None  # None: NULL CTDIvol/DLP/phantom on localisers
    no_protocol: float  # share of scan events stored without a protocol (GE ESR, ToshibaPixelMed)
    dose_check: str | None  # "alert" (Siemens-like), "notify" (Philips-like) or None
    modulation: str | None
    uid_root: str


STATIONS = (
    Station(
        "SIEMENS",
        "SOMATOM Definition Flash",
        "General Hospital",
        "CTAWP10001",
        "syngo CT VA48A",
        "73001",
        20,
        "Topogram",
        0.14,
        0.0,
        "alert",
        "XYZ_EC",
        "1.3.12.2.1107.5.1.4.73001",
    ),
    Station(
        "SIEMENS",
        "SOMATOM Force",
        "General Hospital",
        "CTAWP10002",
        "syngo CT VB20A",
        "75002",
        15,
        "Topogram",
        0.14,
        0.0,
        "alert",
        "XYZ_EC",
        "1.3.12.2.1107.5.1.4.75002",
    ),
    Station(
        "GE MEDICAL SYSTEMS",
        "Revolution CT",
        "General Hospital",
        "GECT1",
        "revo_ct_22",
        "GE7001",
        15,
        None,
        None,
        0.8,
        None,
        None,
        "1.2.840.113619.2.55.3.7001",
    ),
    Station(
        "GE MEDICAL SYSTEMS",
        "Optima CT660",
        "Community Hospital",
        "geoptima",
        "gmp_vct.45",
        "GE7002",
        10,
        None,
        None,
        0.8,
        None,
        None,
        "1.2.840.113619.2.55.3.7002",
    ),
    Station(
        "Philips",
        "Brilliance 64",
        "Community Hospital",
        "HOST-12345",
        "4.1.6",
        "PH4001",
        10,
        "Surview",
        0.0,
        0.0,
        "notify",
        "DOM",
        "1.3.46.670589.33.1.4001",
    ),
    Station(
        "TOSHIBA",
        "Aquilion ONE",
        "University Hospital",
        "CTTOSHIBA1",
        "V6.00",
        "TS1001",
        12,
        None,
        None,
        0.5,
        None,
        "SD",
        "1.2.392.200036.9116.2.6.1001",
    ),
    Station(
        "Canon Medical Systems",
        "Aquilion Prime SP",
        "University Hospital",
        "AquilionPrime",
        "V10.0",
        "TS1002",
        10,
        None,
        None,
        0.1,
        "alert",
        "SD",
        "1.2.392.200036.9116.2.6.1002",
    ),
    Station(
        "SIEMENS",
        "SOMATOM go.Top",
        "Outpatient Imaging Centre",
        "CTAWP10003",
        "syngo CT VA30A",
        "76003",
        8,
        "Topogram",
        0.14,
        0.0,
        None,
        "XYZ_EC",
        "1.3.12.2.1107.5.1.4.76003",
    ),
)
