"""Seed exams for ``ctpoller demo`` and the tests: data only.

Modelled on the 15 CT studies that OpenREM 1.0 stores after importing its own CT test files (descriptions,
protocols, per-event CTDIvol/DLP, phantoms, dose-check rows, device names and totals as OpenREM stored
them), with made-up UIDs, accession numbers and patients. Patient names and IDs are obviously fake: they
exist only so that tests can prove ctpoller never shows them.

``SEED_STUDIES`` is the database as OpenREM leaves it (the Multi study in its final, 3-event version).
``MULTI_SERIES`` replays the cumulative re-sends: import ``[0]``, then ``resend_cumulative`` with ``[1]``
and ``[2]``. Units: CTDIvol mGy, DLP mGy.cm, age years, weight kg, size m.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, time
from decimal import Decimal as D
from types import MappingProxyType
from typing import TypeAlias

from ctpoller.demo.openrem import SeedEvent, SeedStudy

__all__ = ["MULTI_SERIES", "SEED_STUDIES", "as_another_exam", "stored_again"]

_ROOT = "1.2.826.0.1.3680043.10.1234"  # made-up UIDs: <root>.<study>, .<study>.1.<n> SOP, .<study>.2.<n> event

CONSTANT_ANGLE = ("113805", "Constant Angle Acquisition")
SPIRAL = ("P5-08001", "Spiral Acquisition")
STATIONARY = ("113806", "Stationary Acquisition")
SEQUENCED = ("113804", "Sequenced Acquisition")
FREE = ("113807", "Free Acquisition")
HEAD = "113690"
BODY = "113691"

# NEMA XR-25 dose check as Siemens (and others) report it: a 1000 mGy CTDIvol alert, nothing else.
DoseCheck: TypeAlias = MappingProxyType[str, D | bool | None]

_ALERT_1000: DoseCheck = MappingProxyType(
    {
        "dlp_alert_value_configured": False,
        "ctdivol_alert_value_configured": True,
        "ctdivol_alert_value": D("1000.00000000"),
        "dlp_notification_value_configured": False,
        "ctdivol_notification_value_configured": False,
    }
)

CONTINUED_1 = SeedStudy(
    uid=f"{_ROOT}.1",
    accession="DEMO0000000001",
    study_date=date(2018, 4, 27),
    study_time=time(10, 10, 34, 682000),
    description="Thorax^Thorax_NON_CON (Adult)",
    requested_procedure=None,
    procedure=None,
    station_name="CONTINUED",
    institution_name="OpenREM",
    manufacturer="SIEMENS",
    model="SOMATOM Definition Flash",
    display_name="OpenREM CONTINUED",
    total_dlp=D("60.17000000"),
    patient_age="100Y",
    patient_age_decimal=D("100.000"),
    patient_sex="O",
    patient_id="DEMO01",
    patient_name="DEMO^PATIENT01",
    events=(
        SeedEvent(f"{_ROOT}.1.2.1", "Topogram", CONSTANT_ANGLE, D("0.14"), D("5.05"), BODY, None, _ALERT_1000),
        SeedEvent(f"{_ROOT}.1.2.2", "Thorax", SPIRAL, D("2.03"), D("55.12"), BODY, None, _ALERT_1000),
    ),
    sop_instance_uid=f"{_ROOT}.1.1.1",
)

# A second RDSR for the same study with other events: OpenREM stores a second row with the same UID.
CONTINUED_2 = SeedStudy(
    uid=f"{_ROOT}.1",
    accession="DEMO0000000001",
    study_date=date(2018, 4, 27),
    study_time=time(10, 10, 34, 682000),
    description="Thorax^Thorax_NON_CON (Adult)",
    requested_procedure=None,
    procedure=None,
    station_name="CONTINUED",
    institution_name="OpenREM",
    manufacturer="SIEMENS",
    model="SOMATOM Definition Flash",
    display_name="OpenREM CONTINUED",
    total_dlp=D("56.44000000"),
    patient_age="100Y",
    patient_age_decimal=D("100.000"),
    patient_sex="O",
    patient_id="DEMO01",
    patient_name="DEMO^PATIENT01",
    events=(
        SeedEvent(f"{_ROOT}.1.2.3", "Topogram", CONSTANT_ANGLE, D("0.14"), D("4.62"), BODY, None, _ALERT_1000),
        SeedEvent(f"{_ROOT}.1.2.4", "Thorax", SPIRAL, D("2.22"), D("51.82"), BODY, None, _ALERT_1000),
    ),
    sop_instance_uid=f"{_ROOT}.1.1.2",
)

_MULTI_EVENTS = (
    SeedEvent(f"{_ROOT}.2.2.1", "Topogram", CONSTANT_ANGLE, D("0.15"), D("7.46"), BODY, None, _ALERT_1000),
    SeedEvent(f"{_ROOT}.2.2.2", "4DCT", SPIRAL, D("8.13"), D("69.81"), BODY, None, _ALERT_1000),
    SeedEvent(f"{_ROOT}.2.2.3", "4DCT", SPIRAL, D("7.02"), D("158.82"), BODY, None, _ALERT_1000),
)

# Cumulative RDSRs: each version repeats the events of the one before and adds one.
MULTI_1 = SeedStudy(
    uid=f"{_ROOT}.2",
    accession="DEMO0000000002",
    study_date=date(2018, 1, 5),
    study_time=time(17, 17, 12, 641000),
    description="Thorax^RTP_4DCT_Thorax_C (Adult)",
    requested_procedure=None,
    procedure=None,
    station_name="CTAWP12345",
    institution_name="OpenREM Clinic",
    manufacturer="SIEMENS",
    model="SOMATOM Confidence",
    display_name="OpenREM Clinic CTAWP12345",
    total_dlp=D("7.46000000"),
    patient_age="060Y",
    patient_age_decimal=D("60.000"),
    patient_sex="M",
    patient_id="DEMO02",
    patient_name="DEMO^PATIENT02",
    events=_MULTI_EVENTS[:1],
    sop_instance_uid=f"{_ROOT}.2.1.1",
)
MULTI_2 = SeedStudy(
    uid=f"{_ROOT}.2",
    accession="DEMO0000000002",
    study_date=date(2018, 1, 5),
    study_time=time(17, 17, 12, 641000),
    description="Thorax^RTP_4DCT_Thorax_C (Adult)",
    requested_procedure=None,
    procedure=None,
    station_name="CTAWP12345",
    institution_name="OpenREM Clinic",
    manufacturer="SIEMENS",
    model="SOMATOM Confidence",
    display_name="OpenREM Clinic CTAWP12345",
    total_dlp=D("77.27000000"),
    patient_age="060Y",
    patient_age_decimal=D("60.000"),
    patient_sex="M",
    patient_id="DEMO02",
    patient_name="DEMO^PATIENT02",
    events=_MULTI_EVENTS[:2],
    sop_instance_uid=f"{_ROOT}.2.1.2",
)
MULTI_3 = SeedStudy(
    uid=f"{_ROOT}.2",
    accession="DEMO0000000002",
    study_date=date(2018, 1, 5),
    study_time=time(17, 17, 12, 641000),
    description="Thorax^RTP_4DCT_Thorax_C (Adult)",
    requested_procedure=None,
    procedure=None,
    station_name="CTAWP12345",
    institution_name="OpenREM Clinic",
    manufacturer="SIEMENS",
    model="SOMATOM Confidence",
    display_name="OpenREM Clinic CTAWP12345",
    total_dlp=D("236.09000000"),
    patient_age="060Y",
    patient_age_decimal=D("60.000"),
    patient_sex="M",
    patient_id="DEMO02",
    patient_name="DEMO^PATIENT02",
    events=_MULTI_EVENTS,
    sop_instance_uid=f"{_ROOT}.2.1.3",
)

# GE enhanced SR: no protocol on any event; localisers without CTDIvol, DLP or phantom.
GE_OPTIMA = SeedStudy(
    uid=f"{_ROOT}.3",
    accession="0012345.DEMO0003",
    study_date=date(2006, 8, 23),
    study_time=time(11, 40, 14),
    description="Colonography",
    requested_procedure=None,
    procedure=None,
    station_name="geoptima",
    institution_name="An Optima Hospital",
    manufacturer="GE Medical Systems",
    model="Optima CT660",
    display_name="An Optima Hospital geoptima",
    total_dlp=D("415.82000000"),
    patient_age=None,
    patient_age_decimal=D("49.400"),
    patient_sex=None,
    patient_id="DEMO03",
    patient_name="DEMO^PATIENT03",
    events=(
        SeedEvent(f"{_ROOT}.3.2.1", None, CONSTANT_ANGLE, None, None, None),
        SeedEvent(f"{_ROOT}.3.2.2", None, CONSTANT_ANGLE, None, None, None),
        SeedEvent(f"{_ROOT}.3.2.3", None, SPIRAL, D("3.23"), D("155.97"), BODY),
        SeedEvent(f"{_ROOT}.3.2.4", None, CONSTANT_ANGLE, None, None, None),
        SeedEvent(f"{_ROOT}.3.2.5", None, CONSTANT_ANGLE, None, None, None),
        SeedEvent(f"{_ROOT}.3.2.6", None, SPIRAL, D("5.30"), D("259.85"), BODY),
    ),
    sop_instance_uid=f"{_ROOT}.3.1.1",
    patient_weight=D("78.20000000"),
    patient_size=D("1.64000000"),
)

GE_VCT = SeedStudy(
    uid=f"{_ROOT}.4",
    accession="DEMO0000000004",
    study_date=date(2013, 2, 28),
    study_time=time(11, 37, 31),
    description="FACIAL BONES",
    requested_procedure="FACIAL BONES",
    procedure=None,
    station_name="VCTScanner",
    institution_name="A VCT Hospital",
    manufacturer="GE Medical Systems",
    model="LightSpeed VCT",
    display_name="A VCT Hospital VCTScanner",
    total_dlp=D("2002.39000000"),
    patient_age="89Y",
    patient_age_decimal=D("89.800"),
    patient_sex="F",
    patient_id="DEMO04",
    patient_name="DEMO^PATIENT04",
    events=(
        SeedEvent(f"{_ROOT}.4.2.1", None, CONSTANT_ANGLE, None, None, None),
        SeedEvent(f"{_ROOT}.4.2.2", None, CONSTANT_ANGLE, None, None, None),
        SeedEvent(f"{_ROOT}.4.2.3", None, CONSTANT_ANGLE, None, None, None),
        SeedEvent(f"{_ROOT}.4.2.4", None, CONSTANT_ANGLE, None, None, None),
        SeedEvent(f"{_ROOT}.4.2.5", None, STATIONARY, D("32.83"), D("16.41"), BODY),
        SeedEvent(f"{_ROOT}.4.2.6", None, SPIRAL, D("8.74"), D("429.19"), BODY),
        SeedEvent(f"{_ROOT}.4.2.7", None, SPIRAL, D("4.93"), D("246.69"), BODY),
        SeedEvent(f"{_ROOT}.4.2.8", None, CONSTANT_ANGLE, None, None, None),
        SeedEvent(f"{_ROOT}.4.2.9", None, CONSTANT_ANGLE, None, None, None),
        SeedEvent(f"{_ROOT}.4.2.10", None, CONSTANT_ANGLE, None, None, None),
        SeedEvent(f"{_ROOT}.4.2.11", None, CONSTANT_ANGLE, None, None, None),
        SeedEvent(f"{_ROOT}.4.2.12", None, STATIONARY, D("6.23"), D("3.12"), HEAD),
        SeedEvent(f"{_ROOT}.4.2.13", None, SEQUENCED, D("22.26"), D("890.26"), HEAD),
        SeedEvent(f"{_ROOT}.4.2.14", None, CONSTANT_ANGLE, None, None, None),
        SeedEvent(f"{_ROOT}.4.2.15", None, CONSTANT_ANGLE, None, None, None),
        SeedEvent(f"{_ROOT}.4.2.16", None, CONSTANT_ANGLE, None, None, None),
        SeedEvent(f"{_ROOT}.4.2.17", None, CONSTANT_ANGLE, None, None, None),
        SeedEvent(f"{_ROOT}.4.2.18", None, CONSTANT_ANGLE, None, None, None),
        SeedEvent(f"{_ROOT}.4.2.19", None, CONSTANT_ANGLE, None, None, None),
        SeedEvent(f"{_ROOT}.4.2.20", None, CONSTANT_ANGLE, None, None, None),
        SeedEvent(f"{_ROOT}.4.2.21", None, CONSTANT_ANGLE, None, None, None),
        SeedEvent(f"{_ROOT}.4.2.22", None, STATIONARY, D("5.84"), D("2.92"), BODY),
        SeedEvent(f"{_ROOT}.4.2.23", None, STATIONARY, D("176.12"), D("352.24"), BODY),
        SeedEvent(f"{_ROOT}.4.2.24", None, SEQUENCED, D("29.31"), D("14.66"), BODY),
        SeedEvent(f"{_ROOT}.4.2.25", None, SEQUENCED, D("29.31"), D("14.66"), BODY),
        SeedEvent(f"{_ROOT}.4.2.26", None, SEQUENCED, D("31.66"), D("15.83"), BODY),
        SeedEvent(f"{_ROOT}.4.2.27", None, SEQUENCED, D("32.83"), D("16.41"), BODY),
    ),
    sop_instance_uid=f"{_ROOT}.4.1.1",
)

# The highest event CTDIvol of the set (222.59 mGy, head phantom); no accession, no description.
GE_PIXELMED = SeedStudy(
    uid=f"{_ROOT}.5",
    accession=None,
    study_date=date(2013, 3, 13),
    study_time=time(8, 58, 44),
    description=None,
    requested_procedure=None,
    procedure=None,
    station_name="rt16",
    institution_name="OpenREM centre médical",
    manufacturer="GE MEDICAL SYSTEMS",
    model="LightSpeed RT16",
    display_name="OpenREM centre médical rt16",
    total_dlp=D("586.34000000"),
    patient_age="100Y",
    patient_age_decimal=D("100.000"),
    patient_sex="F",
    patient_id="DEMO05",
    patient_name="DEMO^PATIENT05",
    events=(
        SeedEvent(f"{_ROOT}.5.2.1", None, SPIRAL, D("60.41"), D("475.04"), HEAD),
        SeedEvent(f"{_ROOT}.5.2.2", "10.13 RADIOTHERAPY QA", STATIONARY, D("222.59"), D("111.30"), HEAD),
    ),
    sop_instance_uid=f"{_ROOT}.5.1.1",
)

PHILIPS_BIGBORE = SeedStudy(
    uid=f"{_ROOT}.6",
    accession=None,
    study_date=date(2019, 6, 12),
    study_time=time(16, 32, 10, 666000),
    description="4DCT",
    requested_procedure=None,
    procedure=None,
    station_name="HOST-ABCD1234",
    institution_name="OpenREM Cancer Centre",
    manufacturer="Philips",
    model="Brilliance Big Bore",
    display_name="OpenREM Cancer Centre HOST-ABCD1234",
    total_dlp=D("541.10000000"),
    patient_age=None,
    patient_age_decimal=None,
    patient_sex="M",
    patient_id="DEMO06",
    patient_name="DEMO^PATIENT06",
    events=(
        SeedEvent(
            f"{_ROOT}.6.2.1",
            "4DCT /PHYSICS",
            SPIRAL,
            D("23.70"),
            D("541.10"),
            BODY,
            dose_check=MappingProxyType(
                {
                    "dlp_alert_value_configured": False,
                    "ctdivol_alert_value_configured": True,
                    "ctdivol_alert_value": D("1000.00000000"),
                    "dlp_notification_value_configured": False,
                    "ctdivol_notification_value_configured": True,
                    "ctdivol_notification_value": D("60.0000"),
                }
            ),
        ),
    ),
    sop_instance_uid=f"{_ROOT}.6.1.1",
)

SIEMENS_FLASH_QA = SeedStudy(
    uid=f"{_ROOT}.7",
    accession="DEMO00000007",
    study_date=date(2013, 6, 11),
    study_time=time(14, 4, 19, 468000),
    description="Specials^PhysicsTesting (Adult)",
    requested_procedure=None,
    procedure=None,
    station_name="CTAWP91919",
    institution_name="Gnats Bottom Hospital",
    manufacturer="SIEMENS",
    model="SOMATOM Definition Flash",
    display_name="Gnats Bottom Hospital CTAWP91919",
    total_dlp=D("1590.00000000"),
    patient_age="100Y",
    patient_age_decimal=D("100.000"),
    patient_sex="O",
    patient_id="DEMO07",
    patient_name="DEMO^PATIENT07",
    events=(
        SeedEvent(f"{_ROOT}.7.2.1", "DE_laser align", STATIONARY, D("15.45"), D("29.67"), BODY),
        SeedEvent(f"{_ROOT}.7.2.2", "DS axial std", STATIONARY, D("21.95"), D("84.28"), BODY),
        SeedEvent(f"{_ROOT}.7.2.3", "DS 50mAs", STATIONARY, D("5.52"), D("21.18"), BODY),
        SeedEvent(f"{_ROOT}.7.2.4", "DS 140kV", STATIONARY, D("33.83"), D("129.89"), BODY),
        SeedEvent(f"{_ROOT}.7.2.5", "DS 100kV", STATIONARY, D("13.17"), D("50.58"), BODY),
        SeedEvent(f"{_ROOT}.7.2.6", "DS 80kV", STATIONARY, D("6.26"), D("24.05"), BODY),
        SeedEvent(f"{_ROOT}.7.2.7", "DS axial std", STATIONARY, D("17.10"), D("65.68"), BODY),
        SeedEvent(f"{_ROOT}.7.2.8", "DS_helical", SPIRAL, D("65.47"), D("815.33"), BODY),
        SeedEvent(f"{_ROOT}.7.2.9", "DS_hel p 0.23", SPIRAL, D("29.67"), D("369.34"), BODY),
    ),
    sop_instance_uid=f"{_ROOT}.7.1.1",
    patient_weight=D("75.00000000"),
)

# The first protocol is mojibake, stored exactly as the RDSR sent it.
SIEMENS_FLASH_TAP = SeedStudy(
    uid=f"{_ROOT}.8",
    accession="DEMOACC00008",
    study_date=date(1997, 1, 1),
    study_time=time(0, 0),
    description="Thorax^TAP (Adult)",
    requested_procedure="CT Thorax abdomen and pelvis with contrast",
    procedure="CT Thorax abdomen and pelvis with contrast",
    station_name="CTAWP00001",
    institution_name="Hospital Number One Trust",
    manufacturer="SIEMENS",
    model="SOMATOM Definition Flash",
    display_name="Hospital Number One Trust CTAWP00001",
    total_dlp=D("724.52000000"),
    patient_age="067Y",
    patient_age_decimal=D("67.600"),
    patient_sex="M",
    patient_id="DEMO08",
    patient_name="DEMO^PATIENT08",
    events=(
        SeedEvent(f"{_ROOT}.8.2.1", "testÃ¦Ã¸Ã¥", CONSTANT_ANGLE, D("0.14"), D("11.51"), BODY),
        SeedEvent(f"{_ROOT}.8.2.2", "PreMonitoring", STATIONARY, D("1.20"), D("1.20"), BODY),
        SeedEvent(f"{_ROOT}.8.2.3", "Monitoring", STATIONARY, D("3.61"), D("3.61"), BODY),
        SeedEvent(f"{_ROOT}.8.2.4", "TAP", SPIRAL, D("9.91"), D("708.20"), BODY),
    ),
    sop_instance_uid=f"{_ROOT}.8.1.1",
    patient_weight=D("87.00000000"),
    patient_size=D("1.86000000"),
)

# Notification forward estimates only; 'Free Acquisition' events; total_dlp is not the sum of events.
SPECTRUM_DYNAMICS = SeedStudy(
    uid=f"{_ROOT}.9",
    accession="DEMOSPECTRUM9",
    study_date=date(2020, 10, 13),
    study_time=time(15, 36, 21),
    description="Other",
    requested_procedure=None,
    procedure="Other",
    station_name="SD_CT",
    institution_name="NM SPECT Clinic",
    manufacturer="Spectrum Dynamics",
    model="HCT1685-SD",
    display_name="NM SPECT Clinic SD_CT",
    total_dlp=D("187.33900000"),
    patient_age=None,
    patient_age_decimal=D("45.800"),
    patient_sex="M",
    patient_id="DEMO09",
    patient_name="DEMO^PATIENT09",
    events=(
        SeedEvent(f"{_ROOT}.9.2.1", "Daily QA", CONSTANT_ANGLE, None, None, None),
        SeedEvent(
            f"{_ROOT}.9.2.2",
            "Daily QA",
            STATIONARY,
            D("10.7753"),
            D("21.5506"),
            BODY,
            dose_check=MappingProxyType(
                {
                    "dlp_alert_value_configured": False,
                    "accumulated_dlp_forward_estimate": D("21.64000000"),
                    "dlp_notification_value_configured": False,
                    "dlp_forward_estimate": D("21.6400"),
                    "ctdivol_forward_estimate": D("10.8200"),
                }
            ),
        ),
        SeedEvent(
            f"{_ROOT}.9.2.3",
            "Daily QA",
            STATIONARY,
            D("12.7189"),
            D("25.4378"),
            BODY,
            dose_check=MappingProxyType(
                {
                    "dlp_alert_value_configured": False,
                    "accumulated_dlp_forward_estimate": D("47.08580000"),
                    "dlp_notification_value_configured": False,
                    "dlp_forward_estimate": D("25.5352"),
                    "ctdivol_forward_estimate": D("12.7676"),
                }
            ),
        ),
        SeedEvent(
            f"{_ROOT}.9.2.4",
            "Daily QA",
            FREE,
            D("14.3344"),
            D("68.8053"),
            BODY,
            dose_check=MappingProxyType(
                {
                    "dlp_alert_value_configured": False,
                    "accumulated_dlp_forward_estimate": D("172.42100000"),
                    "dlp_notification_value_configured": False,
                    "dlp_forward_estimate": D("125.4330"),
                    "ctdivol_forward_estimate": D("13.8600"),
                }
            ),
        ),
        SeedEvent(
            f"{_ROOT}.9.2.5",
            "Daily QA",
            FREE,
            D("16.2604"),
            D("71.5456"),
            BODY,
            dose_check=MappingProxyType(
                {
                    "dlp_alert_value_configured": False,
                    "accumulated_dlp_forward_estimate": D("243.09100000"),
                    "dlp_notification_value_configured": False,
                    "dlp_forward_estimate": D("127.2970"),
                    "ctdivol_forward_estimate": D("16.2162"),
                }
            ),
        ),
    ),
    sop_instance_uid=f"{_ROOT}.9.1.1",
)

# No protocol on any event, no description.
TOSHIBA_PIXELMED = SeedStudy(
    uid=f"{_ROOT}.10",
    accession="DEMO4935",
    study_date=date(2016, 12, 6),
    study_time=time(16, 46, 7),
    description=None,
    requested_procedure=None,
    procedure=None,
    station_name="CTTOSHIBA1",
    institution_name="Oxbridge County Hospital",
    manufacturer="TOSHIBA",
    model="Aquilion",
    display_name="Oxbridge County Hospital CTTOSHIBA1",
    total_dlp=D("349.70000000"),
    patient_age="042Y",
    patient_age_decimal=D("42.900"),
    patient_sex="M",
    patient_id="DEMO10",
    patient_name="DEMO^PATIENT10",
    events=(
        SeedEvent(f"{_ROOT}.10.2.1", None, CONSTANT_ANGLE, None, None, None),
        SeedEvent(f"{_ROOT}.10.2.2", None, SPIRAL, D("25.40"), D("208.50"), BODY),
        SeedEvent(f"{_ROOT}.10.2.3", None, SPIRAL, D("24.70"), D("141.20"), BODY),
    ),
    sop_instance_uid=f"{_ROOT}.10.1.1",
    patient_weight=D("75.00000000"),
)

# The scanner's own dose check: DLP 100 / CTDIvol 10 alerts, exceeded by the forward estimates.
# Its accession number is the Multi study's, although the Study Instance UID differs.
_TOSHIBA_ALERTS: dict[str, D | bool | None] = {
    "dlp_alert_value_configured": True,
    "ctdivol_alert_value_configured": True,
    "dlp_alert_value": D("100.00000000"),
    "ctdivol_alert_value": D("10.00000000"),
    "dlp_notification_value_configured": False,
    "ctdivol_notification_value_configured": False,
}
#: Who authorised proceeding past the Toshiba's Dose Check alerts: a role, never a person's name.
_AUTHORISED_BY = "Radiographer on duty"
TOSHIBA_DOSECHECK = SeedStudy(
    uid=f"{_ROOT}.11",
    accession="DEMO0000000002",
    study_date=date(2017, 11, 15),
    study_time=time(7, 51, 27),
    description=None,
    requested_procedure=None,
    procedure=None,
    station_name="ToshibaDoseChk",
    institution_name="OpenREM Clinic",
    manufacturer="TOSHIBA",
    model="Aquilion Precision",
    display_name="OpenREM Clinic ToshibaDoseChk",
    total_dlp=D("502.40000000"),
    patient_age=None,
    patient_age_decimal=D("94.100"),
    patient_sex="M",
    patient_id="DEMO11",
    patient_name="DEMO^PATIENT11",
    events=(
        SeedEvent(
            f"{_ROOT}.11.2.1",
            "Abdomen Routine ZC (NR)",
            SPIRAL,
            D("5.30"),
            D("251.20"),
            BODY,
            dose_check=MappingProxyType({**_TOSHIBA_ALERTS, "accumulated_dlp_forward_estimate": D("251.20000000")}),
            alert_authorised_by=_AUTHORISED_BY,
        ),
        SeedEvent(
            f"{_ROOT}.11.2.2",
            "Abdomen Routine ZC (NR)",
            SPIRAL,
            D("5.30"),
            D("251.20"),
            BODY,
            dose_check=MappingProxyType(
                {
                    **_TOSHIBA_ALERTS,
                    "accumulated_dlp_forward_estimate": D("502.40000000"),
                    "accumulated_ctdivol_forward_estimate": D("10.60000000"),
                }
            ),
            alert_authorised_by=_AUTHORISED_BY,
        ),
    ),
    sop_instance_uid=f"{_ROOT}.11.1.1",
)

TOSHIBA_MULTIVALSD = SeedStudy(
    uid=f"{_ROOT}.12",
    accession="DEMO0000000012",
    study_date=date(2018, 1, 5),
    study_time=time(11, 1, 45),
    description="CT Chest With Contrast",
    requested_procedure=None,
    procedure=None,
    station_name="AquilionOne",
    institution_name="OpenREM View Hospital",
    manufacturer="TOSHIBA",
    model="Aquilion ONE",
    display_name="OpenREM View Hospital AquilionOne",
    total_dlp=D("136.90000000"),
    patient_age=None,
    patient_age_decimal=None,
    patient_sex=None,
    patient_id="DEMO12",
    patient_name="DEMO^PATIENT12",
    events=(
        SeedEvent(f"{_ROOT}.12.2.1", "Neck+CAP+C (SureStart)", CONSTANT_ANGLE, None, None, None),
        SeedEvent(f"{_ROOT}.12.2.2", "Neck+CAP+C (SureStart)", CONSTANT_ANGLE, None, None, None),
        SeedEvent(
            f"{_ROOT}.12.2.3",
            "100sec Neck & Chest +C (vHP)",
            SPIRAL,
            D("3.20"),
            D("136.90"),
            BODY,
            None,
            _ALERT_1000,
        ),
    ),
    sop_instance_uid=f"{_ROOT}.12.1.1",
)

# Philips secondary capture (dose screen): modality written first, no SOP UID recorded, no phantom,
# a surview stored with CTDIvol and DLP 0E-8, no institution (display name = station name).
PHILIPS_SC = SeedStudy(
    uid=f"{_ROOT}.13",
    accession=None,
    study_date=date(2017, 5, 16),
    study_time=time(0, 0),
    description="Abdomen/IH_KUB_2mm",
    requested_procedure=None,
    procedure=None,
    station_name="PHILIPS-E71E3F0",
    institution_name=None,
    manufacturer="Philips",
    model="Brilliance 16P",
    display_name="PHILIPS-E71E3F0",
    total_dlp=D("1102.44609000"),
    patient_age=None,
    patient_age_decimal=None,
    patient_sex=None,
    patient_id="DEMO13",
    patient_name="DEMO^PATIENT13",
    events=(
        SeedEvent(f"{_ROOT}.13.2.1", None, CONSTANT_ANGLE, D("0E-8"), D("0E-8"), None),
        SeedEvent(f"{_ROOT}.13.2.2", "PRE KIDNEYS", SPIRAL, D("7.20097872"), D("196.01"), None),
        SeedEvent(f"{_ROOT}.13.2.3", "30S KIDNEYS", SPIRAL, D("11.32941264"), D("248.585973"), None),
        SeedEvent(f"{_ROOT}.13.2.4", "100S C/A/P", SPIRAL, D("9.31568251"), D("657.85012"), None),
    ),
    sop_instance_uid=f"{_ROOT}.13.1.1",
    modality_first=True,
)

# PET/CT stored as modality 'CT'; anonymiser placeholders; a nonsense decimal age from DOB 9999-01-01.
NM_CT_SIEMENS = SeedStudy(
    uid=f"{_ROOT}.14",
    accession="REMOVED",
    study_date=date(2022, 2, 24),
    study_time=time(11, 50, 25, 472000),
    description="PET/CT Ganzkoerper FDG",
    requested_procedure="PET/CT Ganzkoerper FDG",
    procedure="PET/CT Ganzkoerper FDG",
    station_name="REMOVED",
    institution_name="REMOVED",
    manufacturer="SIEMENS",
    model="Biograph64_Vision 600",
    display_name="REMOVED REMOVED",
    total_dlp=D("667.72000000"),
    patient_age="063Y",
    patient_age_decimal=D("-7976.700"),
    patient_sex="M",
    patient_id="DEMO14",
    patient_name="DEMO^PATIENT14",
    events=(
        SeedEvent(f"{_ROOT}.14.2.1", "Topogram", CONSTANT_ANGLE, D("0.04"), D("6.58"), BODY, None, _ALERT_1000),
        SeedEvent(f"{_ROOT}.14.2.2", "AC_CT_Body", SPIRAL, D("4.59"), D("661.14"), BODY, None, _ALERT_1000),
    ),
    sop_instance_uid=f"{_ROOT}.14.1.1",
    patient_weight=D("110.00000000"),
    patient_size=D("1.78000000"),
)

MULTI_SERIES: tuple[SeedStudy, SeedStudy, SeedStudy] = (MULTI_1, MULTI_2, MULTI_3)

SEED_STUDIES: tuple[SeedStudy, ...] = (
    CONTINUED_1,
    CONTINUED_2,
    MULTI_3,
    GE_OPTIMA,
    GE_VCT,
    GE_PIXELMED,
    PHILIPS_BIGBORE,
    SIEMENS_FLASH_QA,
    SIEMENS_FLASH_TAP,
    SPECTRUM_DYNAMICS,
    TOSHIBA_PIXELMED,
    TOSHIBA_DOSECHECK,
    TOSHIBA_MULTIVALSD,
    PHILIPS_SC,
    NM_CT_SIEMENS,
)


def as_another_exam(study: SeedStudy, uid: str) -> SeedStudy:
    """``study`` as a different exam under Study Instance UID ``uid``: its SOP instance UID and its
    irradiation event UIDs are new too (the same event UIDs would be the same irradiations)."""
    events = tuple(replace(e, uid=f"{uid}.2.{n}" if e.uid else None) for n, e in enumerate(study.events, 1))
    return replace(study, uid=uid, sop_instance_uid=f"{uid}.1.1", events=events)


def stored_again(study: SeedStudy, uid: str) -> SeedStudy:
    """The same dose report (the same irradiation events) stored under another Study Instance UID,
    as when a PACS changed the UID and query-retrieve brought the report in again."""
    return replace(study, uid=uid, sop_instance_uid=f"{uid}.1.1")
