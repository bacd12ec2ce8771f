"""What part of the body a DICOM header says a picture shows, against what a model was trained on.

The modality alone does not keep a breast model off a heart: every ultrasound is Modality US, and an
echocardiography loop, a liver or a shoulder reach the breast models as readily as a breast. The header usually
says more (BodyPartExamined, the study and series descriptions, the protocol, the scanner's ProcessingFunction
preset): where it names another part of the body and not the model's own, the result is flagged untested. A
header that names nothing is not flagged: most breast captures say little.
"""

from __future__ import annotations

import re

from core.imaging.record import ImageRecord, Modality

UNTESTED_BODY_PART = "Untested body part"  # how the warning begins; a series verdict sums such warnings up

# The part of the body each modality's models were trained on, and header words that name it.
DOMAINS: dict[Modality, tuple[str, tuple[str, ...]]] = {
    Modality.US: ("breast", ("BREAST", "MAMMA", "MAMA", "BRST", "AXILLA")),
    Modality.MG: ("breast", ("BREAST", "MAMMO", "MAMMA", "MAMA")),
    Modality.MR: ("brain", ("BRAIN", "HEAD", "NEURO", "CRANI", "SKULL", "CEREB", "ORBIT", "PITUIT", "SELLA")),
}
# Word stems that name another part of the body (a word starting with one names it), and short words that must be
# whole (HIP is not HIPPOCAMPUS).
OTHER_STEMS = ("CARDI", "HEART", "ABDOM", "LIVER", "HEPAT", "KIDNEY", "RENAL", "THYROID", "SHOULDER", "SPINE",
               "LUMBAR", "THORAC", "PELVI", "FETAL", "FETUS", "OBSTET", "UTER", "OVAR", "PROSTAT", "SCROT", "TESTI",
               "VASCUL", "CAROTID", "VENOUS", "AORT", "CHEST", "THORAX", "GALLBLAD", "SPLEEN", "ANKLE", "WRIST",
               "ELBOW", "BLADDER", "BOWEL", "APPEND")
OTHER_WORDS = ("CARD", "ABD", "NECK", "KNEE", "HIP", "MSK", "LUNG", "HAND", "FOOT", "LEG", "ARM", "OB", "GYN")
ECHO_STEMS = ("ECHO",)  # echocardiography: a heart on ultrasound (on MR, 'echo' names a sequence)
_WORD = re.compile(r"[A-Z]+")


def body_part_warnings(modality: Modality, model_id: str, record: ImageRecord) -> list[str]:
    """A warning where the header names another part of the body than the one ``modality``'s models know."""
    domain = DOMAINS.get(modality)
    if domain is None or record.modality_source != "dicom":
        return []
    name, own = domain
    stems = OTHER_STEMS + (ECHO_STEMS if modality is Modality.US else ())
    for keyword, text in record.header_texts.items():
        if keyword == "TransducerType":
            continue
        words = _WORD.findall(text.upper().replace("_", " "))
        if any(w.startswith(own) for w in words):
            return []  # the header names the model's own part somewhere: trusted
    for keyword, text in record.header_texts.items():
        words = _WORD.findall(text.upper().replace("_", " "))
        named = next((w for w in words if w.startswith(stems) or w in OTHER_WORDS), None)
        if keyword != "TransducerType" and named is not None:  # the word only: a description may hold a name
            return [f"{UNTESTED_BODY_PART}: the header's {keyword} says {named}; '{model_id}' was trained on "
                    f"{name} images only: its output here is untested."]
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
