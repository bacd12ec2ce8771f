"""What part of the body a DICOM header says a picture shows, against what a model was trained on.

The modality alone does not keep a breast model off a heart: every ultrasound is Modality US, and an
echocardiography loop, a liver or a shoulder reach the breast models as readily as a breast. The header usually
says more (BodyPartExamined, the study and series descriptions, the protocol, the scanner's ProcessingFunction
preset): where it names another part of the body, the result is flagged untested, unless a more trusted field
names the model's own part (a scanner's breast preset does not make a kidney study a breast). A header that names
nothing is not flagged: most breast captures say little.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.imaging.record import ImageRecord, Modality

UNTESTED_BODY_PART = "Untested body part"  # how the warning begins; a series verdict sums such warnings up


@dataclass(frozen=True)
class Terms:
    """Header words that name a part of the body: whole words (DICOM's BodyPartExamined terms such as LSPINE are
    written as one word) and stems of longer free-text words (a word starting with one names the part)."""

    words: frozenset[str]
    stems: tuple[str, ...] = ()

    def named(self, word: str) -> bool:
        """Whether ``word`` (upper case) names one of these parts; a plural names it too (VEINS, LEGS)."""
        return word in self.words or word.startswith(self.stems) or (word.endswith("S") and word[:-1] in self.words)

    def __add__(self, other: Terms) -> Terms:
        return Terms(self.words | other.words, self.stems + other.stems)


def _terms(words: str, stems: str = "") -> Terms:
    return Terms(frozenset(words.split()), tuple(stems.split()))


# The head around the brain (PS3.16 Annex L terms, then free-text words): the brain models' own part.
HEAD = _terms("BRAIN HEAD HEADNECK SKULL CIRCLEOFWILLIS OPTICCANAL EYE EYELID CORNEA SCLERA IAC EAR MASTOID SELLA "
              "SCALP", "CEREB CRANI INTRACRAN NEURO PITUIT HYPOPHYS ORBIT HIPPOCAMP ENCEPHAL")
BREAST = _terms("MAMA BRST ARMPIT NIPPLE", "BREAST MAMM AXILL")
# Every other part: Annex L's terms and the words descriptions use for them. Short words count whole only (HIP is
# not HIPPOCAMPUS, SPINE not SPIN ECHO), and no stem starts a word naming a sequence, a plane or a part of the brain.
ELSEWHERE = _terms(
    "ABD ACJOINT ADRENAL ANKLE ARM BACK BILE BILEDUCT BLADDER BOWEL BUTTOCK CALF CERVIX CHEEK CHEST "
    "CHESTABDOMEN CHESTABDPELVIS COLON CSPINE CTSPINE ELBOW FACE FEET FINGER FOOT FOREARM GROIN GYN HAND HEART HIP "
    "ILEAL ILEUM ILIAC ILIUM JAW KIDNEY KNEE LARGEINTESTINE LARYNX LEG LIMB LIVER LSPINE LSSPINE LUMBAR LUNG MOUTH "
    "MSK NECK NECKCHEST NECKCHESTABDOMEN NECKCHESTABDPELV NECKCHESTABDPELVIS NOSE PAROTID PENIS RADIUS RADIUSULNA "
    "RECTAL RECTUM RENAL RIB SCJOINT SESAMOID SIJOINT SMALLINTESTINE SPINAL SPINE SPLEEN SPLENIC SSPINE STERNUM "
    "STOMACH SUBMANDIBULAR TESTES TESTIS THIGH THUMB THYMUS TLSPINE TMJ TOE TONGUE TRACHEA TSPINE ULNA "
    "UPRURINARYTRACT WHOLEBODY WRIST ZYGOMA",
    "ABDOM ACHILL ADNEX AORT APPENDI BILIAR BRONCH CALCANE CARDI CAROTID CERVIC CLAVIC COCCY CORONAR DUODEN ENTERO "
    "ESOPHAG EXTREMIT FEMOR FEMUR FETAL FETUS FOET FIBUL GALLBLAD GASTR GLUTE HEPAT HUMER INGUIN JEJUN LUMBO MANDIB "
    "MAXILL MEDIASTIN MENISC METACARP METATARS MUSCULO NEPHR OBSTET OESOPHAG OVAR PANCREA PARATHYROID PATELL PELVI "
    "PHARYN PLACENT POPLITE PREGNAN PROSTAT PULMON SACR SCAPUL SCROT SHOULDER TESTIC THORA THYROID TIBI URETER "
    "URETHR UTER VAGIN VULV")
# On ultrasound and mammography only: 'echo' and vessels name a heart or a vascular study (on MR they name sequences
# and the head's own angiograms and venograms), and OB is obstetric (on MR, oblique).
ULTRASOUND = _terms("DVT OB VEIN", "ECHO VENOUS VASCUL ARTER")

# The part each modality's models were trained on, its words, and the words that name another part.
DOMAINS: dict[Modality, tuple[str, Terms, Terms]] = {
    Modality.US: ("breast", BREAST, HEAD + ELSEWHERE + ULTRASOUND),
    Modality.MG: ("breast", BREAST, HEAD + ELSEWHERE + ULTRASOUND),
    Modality.MR: ("brain", HEAD, BREAST + ELSEWHERE),
}
# The fields from the most to the least trusted: what the file says was examined and the descriptions a person chose
# (one rank: a scanner's BodyPartExamined is often left at its default, HEAD on a C-spine series), then the protocol
# and the scanner's preset (a breast small-parts preset is used on kidneys and thyroids).
RANKS = (("BodyPartExamined", "StudyDescription", "SeriesDescription"), ("ProtocolName", "ProcessingFunction"))
_COIL = re.compile(r"\S+\s+COILS?\b")  # 'HEAD_NECK coil': the coil's name, not the part examined
_GATING = re.compile(r"\S+\s+(?:GATED|GATING|TRIGGER\w*)\b")  # 'CARDIAC GATED': how it was timed, not where
_WHOLE_BODY = re.compile(r"WHOLE[\s_-]*BODY")
_WORD = re.compile(r"[A-Z]+")


def _reading(text: str, own: Terms, others: Terms) -> tuple[bool, str | None]:
    """Whether ``text`` names the model's own part, and else its first word naming another part."""
    text = _WHOLE_BODY.sub("WHOLEBODY", _GATING.sub(" ", _COIL.sub(" ", text.upper())))
    words = _WORD.findall(text)
    if any(own.named(w) for w in words):
        return True, None
    return False, next((w for w in words if others.named(w)), None)


def body_part_warnings(modality: Modality, model_id: str, record: ImageRecord) -> list[str]:
    """A warning where the header names another part of the body than the one ``modality``'s models know.

    The most trusted fields naming any part decide: the model's part in a less trusted field does not overrule
    them, and where two fields of one rank disagree the other part is warned of."""
    domain = DOMAINS.get(modality)
    if domain is None or record.modality_source != "dicom":
        return []
    name, own, others = domain
    for fields in RANKS:
        readings = {keyword: _reading(record.header_texts.get(keyword, ""), own, others) for keyword in fields}
        keyword, part = next(((k, p) for k, (_, p) in readings.items() if p), (None, None))
        if part is not None:  # the word only: a description may hold a name
            return [f"{UNTESTED_BODY_PART}: the header's {keyword} says {part}; '{model_id}' was trained on "
                    f"{name} images only: its output here is untested."]
        if any(is_own for is_own, _ in readings.values()):
            return []
    return []


def beam_warning(record: ImageRecord) -> list[str]:
    """Calipers on a curved or sector probe's picture: width and depth are horizontal and vertical in the picture,
    which are across and along the beam only on its centre line."""
    probe = record.header_texts.get("TransducerType", "").upper()
    if not probe or probe.startswith("LINEAR") or "_LINEAR" in probe:
        return []
    return [f"Width and depth are measured horizontally and vertically in the picture; with this {probe.lower()} "
            "probe the beam tilts away from the vertical off the picture's centre line, so off it they are not "
            "exactly across and along the beam."]
