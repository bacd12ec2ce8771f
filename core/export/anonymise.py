"""De-identification of everything exported (on by default), after DICOM PS3.15 Annex E.

The Basic Application Level Confidentiality Profile (Table E.1-1) is applied with the Retain UIDs
Option, so results still reference the source study in PACS: identifying attributes are removed (X)
or emptied when the IOD requires them (Z), recursively inside sequences, any person name (VR PN) the
lists miss is emptied wherever it is, private attributes are removed, and the data set says so (Patient
Identity Removed, De-identification Method and its code sequence). The patient ID becomes a keyed
pseudonym: HMAC-SHA256 of the ID under a random key kept only on this machine
(``<app home>/pseudonym.key``, 0600), so exports of one patient stay linkable
here but the ID cannot be recovered by hashing candidate IDs (numeric MRNs included).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import os
import secrets
from pathlib import Path

import numpy as np
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from core.app_paths import app_home
from core.errors import DiagnosticError
from core.imaging.record import ImageRecord, Modality, StudyInfo
from core.imaging.scan_area import capture_scan_area

ANONYMOUS_NAME = "ANONYMOUS"

# Type 2 attributes the SEG / SC IODs require present: emptied (Z).
EMPTIED = (
    "PatientBirthDate", "PatientSex", "ReferringPhysicianName", "AccessionNumber", "StudyDate", "StudyTime",
    "StudyID", "ContentCreatorName", "VerifyingObserverIdentificationCodeSequence",
)
# Removed (X) per Table E.1-1 (and the attributes whose X/Z/D choice is X when not required).
REMOVED = (
    "AcquisitionComments", "AcquisitionContextSequence", "AcquisitionDate", "AcquisitionDateTime",
    "AcquisitionDeviceProcessingDescription", "AcquisitionTime", "ActualHumanPerformersSequence",
    "AdditionalPatientHistory", "AdmissionID", "AdmittingDate", "AdmittingDiagnosesCodeSequence",
    "AdmittingDiagnosesDescription", "AdmittingTime", "Allergies", "Arbitrary", "AuthorObserverSequence",
    "BranchOfService", "CommentsOnThePerformedProcedureStep", "ConfidentialityConstraintOnPatientDataDescription",
    "ConsultingPhysicianName", "ConsultingPhysicianIdentificationSequence", "ContentSequence",
    "ContributionDescription", "CountryOfResidence", "CurrentPatientLocation", "CurveDate", "CurveTime",
    "CustodialOrganizationSequence", "DataSetTrailingPadding", "DerivationDescription", "DetectorID",
    "DeviceSerialNumber", "DistributionAddress", "DistributionName", "EthnicGroup", "FrameComments", "GantryID",
    "GeneratorID", "HumanPerformerName", "HumanPerformerOrganization", "IconImageSequence", "IdentifyingComments",
    "ImageComments", "ImagePresentationComments", "ImagingServiceRequestComments", "Impressions",
    "InstitutionAddress", "InstitutionCodeSequence", "InstitutionName", "InstitutionalDepartmentName",
    "InsurancePlanIdentification", "IntendedRecipientsOfResultsIdentificationSequence",
    "InterpretationApproverSequence", "InterpretationAuthor", "InterpretationDiagnosisDescription",
    "InterpretationIDIssuer", "InterpretationRecorder", "InterpretationText", "InterpretationTranscriber",
    "IssuerOfAdmissionID", "IssuerOfPatientID", "IssuerOfServiceEpisodeID", "LastMenstrualDate", "MedicalAlerts",
    "MedicalRecordLocator", "MilitaryRank", "ModifiedAttributesSequence", "ModifiedImageDescription",
    "ModifyingDeviceID", "NameOfPhysiciansReadingStudy", "NamesOfIntendedRecipientsOfResults", "Occupation",
    "OperatorIdentificationSequence", "OperatorsName", "OrderCallbackPhoneNumber", "OrderEnteredBy",
    "OrderEntererLocation", "OriginalAttributesSequence", "OtherPatientIDs", "OtherPatientIDsSequence",
    "OtherPatientNames", "OverlayDate", "OverlayTime", "ParticipantSequence", "PatientAddress",
    "PatientAge", "PatientBirthName", "PatientBirthTime", "PatientComments", "PatientInsurancePlanCodeSequence",
    "PatientMotherBirthName", "PatientPrimaryLanguageCodeSequence", "PatientReligiousPreference",
    "PatientSexNeutered", "PatientSize", "PatientState", "PatientTelephoneNumbers", "PatientTransportArrangements",
    "PatientWeight", "PerformedLocation", "PerformedProcedureStepDescription", "PerformedProcedureStepEndDate",
    "PerformedProcedureStepEndTime", "PerformedProcedureStepID", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "PerformedStationAETitle", "PerformedStationGeographicLocationCodeSequence",
    "PerformedStationName", "PerformedStationNameCodeSequence", "PerformingPhysicianIdentificationSequence",
    "PerformingPhysicianName", "PersonAddress", "PersonTelephoneNumbers", "PhysicianApprovingInterpretation",
    "PhysiciansOfRecord", "PhysiciansOfRecordIdentificationSequence", "PhysiciansReadingStudyIdentificationSequence",
    "PlateID", "PreMedication", "PregnancyStatus", "ProtocolName", "ReasonForStudy",
    "ReasonForTheImagingServiceRequest", "ReferencedPatientAliasSequence", "ReferencedPatientSequence",
    "ReferencedPerformedProcedureStepSequence", "ReferencedStudySequence", "ReferringPhysicianAddress",
    "ReferringPhysicianIdentificationSequence", "ReferringPhysicianTelephoneNumbers", "RegionOfResidence",
    "RequestAttributesSequence", "RequestedContrastAgent", "RequestedProcedureComments",
    "RequestedProcedureDescription", "RequestedProcedureID", "RequestedProcedureLocation", "RequestingPhysician",
    "RequestingService", "ResponsibleOrganization", "ResponsiblePerson", "ResultsComments",
    "ResultsDistributionListSequence", "ResultsIDIssuer", "ScheduledHumanPerformersSequence",
    "ScheduledPatientInstitutionResidence", "ScheduledPerformingPhysicianIdentificationSequence",
    "ScheduledPerformingPhysicianName", "ScheduledProcedureStepDescription", "ScheduledProcedureStepEndDate",
    "ScheduledProcedureStepEndTime", "ScheduledProcedureStepLocation", "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime", "ScheduledStationAETitle", "ScheduledStationGeographicLocationCodeSequence",
    "ScheduledStationName", "ScheduledStationNameCodeSequence", "ScheduledStudyLocation",
    "ScheduledStudyLocationAETitle", "SeriesDate", "SeriesDescription", "SeriesTime", "ServiceEpisodeDescription",
    "ServiceEpisodeID", "SmokingStatus", "SpecialNeeds", "StationName", "StudyComments", "StudyDescription",
    "StudyIDIssuer", "TextComments", "TextString", "TimezoneOffsetFromUTC", "TopicAuthor", "TopicKeywords",
    "TopicSubject", "TopicTitle", "VerifyingObserverName", "VerifyingObserverSequence", "VerifyingOrganization",
    "VisitComments", "ContentDate", "ContentTime", "InstanceCreationDate", "InstanceCreationTime",
    "PerformedProcedureCodeSequence", "RequestedProcedureCodeSequence", "ProcedureCodeSequence",
    "ClinicalTrialSponsorName", "ClinicalTrialSubjectID", "ClinicalTrialSubjectReadingID",
)
METHOD = "PS3.15 Basic Profile, Retain UIDs; patient ID pseudonymised"  # LO: at most 64 characters
# Attributes of repeating groups (overlays, curves: Overlay Comments (60xx,4000) and the like) have no keyword and
# are not listed: they are removed by group below. A keyword pydicom does not know would be skipped without a word
# (``keyword in ds`` is False), so a misspelt one stops the import instead (pydicom is pinned: this cannot vary).
_UNKNOWN = [k for k in REMOVED + EMPTIED if tag_for_keyword(k) is None]
if _UNKNOWN:
    raise ValueError(f"not DICOM keywords in the de-identification lists: {', '.join(_UNKNOWN)}")
_CODES = (("113100", "Basic Application Confidentiality Profile"), ("113110", "Retain UIDs Option"))


def _key_file() -> Path:
    return app_home() / "pseudonym.key"


def _key() -> bytes:
    """This installation's random pseudonym key, created on first use and readable by its owner only."""
    path = _key_file()
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:  # another process made it first
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex())
    return key


def keyed_digest(text: str, length: int = 16) -> str:
    """``length`` hex digits of the HMAC-SHA256 of ``text`` under this installation's key: stable here, and not
    found by hashing candidate texts (patient IDs, file names)."""
    return hmac.new(_key(), text.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()[:length]


def pseudonym(patient_id: str) -> str:
    """A stable, keyed pseudonym of the patient ID (the same on this machine, meaningless elsewhere)."""
    if not patient_id:
        return "ANON"
    return "ANON-" + keyed_digest(patient_id)


def _scrub(ds: Dataset) -> None:
    for keyword in REMOVED:
        if keyword in ds:
            delattr(ds, keyword)
    for keyword in EMPTIED:
        if keyword in ds:
            ds[keyword].value = [] if ds[keyword].VR == "SQ" else ""
    for elem in ds:
        if elem.VR == "SQ" and elem.value is not None:
            for item in elem.value:
                _scrub(item)
                item.remove_private_tags()


def _blank_person_names(ds: Dataset) -> None:
    """Every person name (VR PN) left in ``ds``, nested sequences included, emptied (Z). The lists above name the
    Table E.1-1 attributes, but PN attributes are many (hanging protocols, NDE, RT, new ones each edition) and each
    one is a person's name: none may survive because a list missed it. Emptied rather than removed, so an attribute
    an IOD requires stays present; the profile's dummies (the anonymous PatientName) are set after this."""
    for elem in ds:
        if elem.VR == "PN":
            elem.value = ""
        elif elem.VR == "SQ" and elem.value is not None:
            for item in elem.value:
                _blank_person_names(item)


def _curve_or_overlay(group: int) -> bool:
    """The repeating groups of curves (50xx) and overlays (60xx): even groups 0x5000-0x501E and 0x6000-0x601E, not
    the functional groups of an enhanced multi-frame image (5200,9229) / (5200,9230), which hold its geometry."""
    return group % 2 == 0 and (0x5000 <= group <= 0x501E or 0x6000 <= group <= 0x601E)


def anonymise_dataset(ds: Dataset) -> Dataset:
    """A de-identified copy of ``ds`` (PS3.15 Basic Profile with the Retain UIDs Option)."""
    # A deep copy: Dataset.copy() shares the caller's element dictionary, so scrubbing it de-identified the caller's
    # own dataset too. Pixel bytes are immutable and stay shared; a decoded pixel array is not copied.
    decoded = getattr(ds, "_pixel_array", None)
    out = copy.deepcopy(ds, {} if decoded is None else {id(decoded): decoded})
    patient_id = str(ds.get("PatientID", "") or "")
    already = str(ds.get("PatientIdentityRemoved", "")).upper() == "YES" and patient_id.startswith("ANON")
    out.remove_private_tags()
    for tag in [e.tag for e in out if _curve_or_overlay(e.tag.group)]:
        del out[tag]  # curves and overlays (PS3.15: X) can carry annotations
    _scrub(out)
    _blank_person_names(out)
    for keyword in EMPTIED:
        if keyword not in out and keyword in ("PatientBirthDate", "PatientSex", "ReferringPhysicianName",
                                              "AccessionNumber", "StudyDate", "StudyTime", "StudyID"):
            setattr(out, keyword, "")
    _mark_deidentified(out, patient_id if already else pseudonym(patient_id))
    out.LongitudinalTemporalInformationModified = "REMOVED"
    return out


# Type 2 attributes of an object this program creates, by its Modality, that Table E.1-1 removes: present and empty
# (PS3.3: the SR Document Series and SR Document General modules require them in every SR IOD).
_REQUIRED_EMPTY = {"SR": ("ReferencedPerformedProcedureStepSequence", "PerformedProcedureCodeSequence")}
# Attributes of an object this program creates (the SEG or SC itself), not copied from the patient's study.
_OWN = {"ContentDate", "ContentTime", "InstanceCreationDate", "InstanceCreationTime", "SeriesDate", "SeriesTime",
        "SeriesDescription", "DeviceSerialNumber", "ContentCreatorName",
        "ContentSequence"}  # a structured report's own content: the analysis, no one's identity


def deidentify_created(ds: Dataset, patient_id: str) -> Dataset:
    """De-identify, in place, an object built from a de-identified source: whatever the builder copied
    from the source (patient and study modules) is scrubbed again; its own creation attributes stay, and the type 2
    attributes its IOD requires stay present, emptied."""
    required = _REQUIRED_EMPTY.get(str(ds.get("Modality", "")), ())
    for keyword in REMOVED:
        if keyword in ds and keyword not in _OWN and keyword not in required:
            delattr(ds, keyword)
    for keyword in required:
        setattr(ds, keyword, Sequence() if keyword.endswith("Sequence") else "")
    for keyword in EMPTIED:
        if keyword in ds and keyword not in _OWN:
            ds[keyword].value = [] if ds[keyword].VR == "SQ" else ""
    ds.remove_private_tags()
    _blank_person_names(ds)  # this program names no person in what it creates: any name came from the source
    _mark_deidentified(ds, patient_id)
    return ds


def _mark_deidentified(ds: Dataset, patient_id: str) -> None:
    """The anonymous name, the pseudonymous ID and the PS3.15 record of what was done."""
    ds.PatientName = ANONYMOUS_NAME
    ds.PatientID = patient_id
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    codes = Sequence()
    for value, meaning in _CODES:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = codes


def carries_screen_text(record: ImageRecord) -> bool:
    """Whether the record's pictures may carry text burned in around the scan (the patient's name, ID, dates): an
    ultrasound screen, or a DICOM whose Burned In Annotation says YES."""
    burned = any(kw == "BurnedInAnnotation" and str(v).strip().upper() == "YES" for _, kw, v in record.metadata)
    return record.modality == Modality.US or burned


def without_screen_text(picture: np.ndarray, record: ImageRecord, frame: int = 0) -> np.ndarray:
    """``picture`` (the record's frame, overlays drawn or not) with everything outside the scan area blacked out, for
    an ultrasound picture or one whose DICOM says it carries burned-in annotation: a scanner's screen capture holds
    the patient's name, ID, birth date and institution in the bars and panels around the scan. Text a scanner draws
    inside the scan area is not found here; pictures already cut to their scan area lose nothing."""
    if not carries_screen_text(record):
        return picture
    box = capture_scan_area(record)
    if box is None:
        raise DiagnosticError(f"The scan area of {record.path.name} could not be found, so the text burned in "
                              "around it (a scanner prints the patient's name there) cannot be blacked out: export "
                              "it identified (untick Anonymise exports) and check the picture, or crop it first.")
    y0, y1, x0, x1 = box
    out = np.zeros_like(picture)
    out[y0:y1, x0:x1] = picture[y0:y1, x0:x1]
    return out


def anonymise_study(study: StudyInfo) -> StudyInfo:
    """What an anonymised report may print: the pseudonym and the UIDs (Retain UIDs Option), nothing else."""
    return StudyInfo(patient_name=ANONYMOUS_NAME, patient_id=pseudonym(study.patient_id),
                     study_instance_uid=study.study_instance_uid, series_instance_uid=study.series_instance_uid,
                     sop_instance_uid=study.sop_instance_uid)
