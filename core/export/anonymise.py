"""Removal or replacement of patient identifiers in anything exported (on by default).

UIDs are kept so results still reference the source study in PACS; the patient ID becomes a stable
pseudonym (a hash) so exports of one patient stay linkable without naming them.
"""

from __future__ import annotations

import hashlib

from pydicom.dataset import Dataset

from core.imaging.record import StudyInfo

ANONYMOUS_NAME = "ANONYMOUS"
REMOVED = (
    "PatientBirthTime", "PatientAddress", "PatientTelephoneNumbers", "OtherPatientIDs",
    "OtherPatientIDsSequence", "OtherPatientNames", "PatientMotherBirthName", "MilitaryRank", "EthnicGroup",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "PerformingPhysicianName", "OperatorsName", "PhysiciansOfRecord", "RequestingPhysician", "StationName",
    "PatientComments",
)
EMPTIED = ("PatientBirthDate", "ReferringPhysicianName", "AccessionNumber")  # type 2: present but empty


def pseudonym(patient_id: str) -> str:
    return "ANON-" + hashlib.sha256(patient_id.encode()).hexdigest()[:12] if patient_id else "ANON"


def anonymise_dataset(ds: Dataset) -> Dataset:
    """A copy of ``ds`` with direct identifiers removed, name replaced and the ID pseudonymised."""
    out = ds.copy()
    for keyword in REMOVED:
        if keyword in out:
            delattr(out, keyword)
    for keyword in EMPTIED:
        setattr(out, keyword, "")
    out.PatientName = ANONYMOUS_NAME
    out.PatientID = pseudonym(str(ds.get("PatientID", "")))
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = "Medical Image Diagnostic Assistant: identifiers removed, patient ID pseudonymised"
    return out


def anonymise_study(study: StudyInfo) -> StudyInfo:
    return StudyInfo(patient_name=ANONYMOUS_NAME, patient_id=pseudonym(study.patient_id), sex=study.sex,
                     study_date=study.study_date, study_instance_uid=study.study_instance_uid,
                     series_instance_uid=study.series_instance_uid, sop_instance_uid=study.sop_instance_uid,
                     study_description=study.study_description)
