"""Which MR sequence a slice is, from its DICOM header: the brain models were fitted on some sequences only.

A radiologist's series may be a DWI, an ADC map, SWI, perfusion, an angiogram, a localizer, a proton density, a
STIR, a steady-state (CISS, FIESTA), a gradient echo, a double inversion recovery or a T1 / T2 map as well as the
T1, T2 and FLAIR the models saw; a bundle that states its sequences (manifest ``mr_sequences``) warns on the others
(``core.inference.analyzer``). The header is read in this order, each step only where the ones before say
nothing: derived-map and diffusion markers (ImageType, DiffusionBValue), the words of SeriesDescription,
ProtocolName and SequenceName (scanner names such as ``ep2d_diff``, ``mprage``, ``tse``, ``flair``; the evidence
quotes the matched words only, as a description may hold a name), then the
timing (InversionTime, RepetitionTime, EchoTime in ms). A contrast agent (ContrastBolusAgent, or '+C', 'C+',
'post', 'gad', 'Gd', 'CE' in the names, run on as in 'T1CE' or 'T1Gd' too) makes a T1 'T1 post-contrast'; a
short inversion makes a named T2 or PD a STIR, and a dual echo's EchoTime says whether the slice is its PD or its
T2 echo. None where the header says nothing usable (a PNG, an anonymised export without these tags): no warning
is then given, and none is claimed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UNTESTED_SEQUENCE = "Untested sequence"  # how a slice's warning begins; a series verdict sums them up
SEQUENCES = ("T1", "T1 post-contrast", "T2", "FLAIR", "DWI", "ADC", "SWI / T2*", "perfusion", "angiography",
             "localizer", "PD", "PD / T2", "STIR", "SSFP", "gradient echo", "DIR", "parametric map")

# Word patterns on the lower-cased names with '_' and '-' read as spaces (scanners write 't1_mprage_sag',
# 'ep2d-diff'); the first match wins: derived maps and special sequences before T1 and T2, and T1 before the
# gradient echoes (MPRAGE, SPGR, BRAVO and VIBE are T1-weighted gradient echoes; a 2D GRE or FFE is T2*-weighted).
_NAMED = (
    ("ADC", r"\b[ed]?adc\b|apparent.?diff"),  # Siemens 'ADC', GE 'eADC' / 'dADC'
    ("DWI", r"\bdwi\b|diffusion|\bdiff\b|\btrace\b|\bdti\b|\bb ?1000\b|\bresolve\b"),
    ("perfusion", r"perf|\bdsc\b|\bpwi\b|\basl\b|\bdce\b|\bpcasl\b"),
    ("parametric map", r"maps?\b|mapping|relaxometry|\bmolli\b"),  # T1 / T2 / T2* maps: values, not a picture
    ("SWI / T2*", r"\bswi\b|\bswan\b|suscept|t2\*|t2.?star|\bhemo"),  # a GRE alone: 'gradient echo' below
    ("angiography", r"\btof\b|\bmra\b|angio"),
    ("localizer", r"locali[sz]er|\bscout\b|\bsurvey\b|3.?plane.?loc|\baahead\b"),
    ("DIR", r"\bdir\b(?! ?(?:ap|pa|lr|rl|fh|hf|si|is|row|col)\b)|double ?(?:inversion|ir)\b"),  # not 'dir AP'
    ("T1", r"\bs?t1w? ?flair"),  # GE's T1 FLAIR is T1-weighted
    ("FLAIR", r"flair|dark.?fluid"),
    ("STIR", r"\bstir\b"),
    ("PD / T2", r"\bpdw? ?[/+&]? ?t2w?\b|\bt2w? ?[/+&]? ?pdw?\b"),  # one series, two echoes
    ("PD", r"\bs?pdw?(?:fs)?\b|proton ?dens"),
    ("T1", r"\bt1(?=(?:ce?|gd)?\b)|\bs?t1w|mprage|spgr|bravo|\btfl\b|\bvibe\b|3d ?tfe"),  # 'T1', 'T1CE', 'T1Gd'
    ("SSFP", r"\bciss\b|fiesta|\bb ?ffe\b|balanced|true ?fisp|\bssfp\b"),
    ("gradient echo", r"\b[fm]?gre\b|\bmpgr\b|\bgrass\b|\bflash\b|\bm?ffe\b|\bmedic\b|\bmerge\b"
                      r"|gradient ?(?:recalled )?echo"),
    ("T2", r"\bt2\b|\bs?t2w"),
)
# contrast words, 'T1C' / 'T1CE' / 'T1Gd' written as one word included ('T1 C' alone may be a coronal T1: not one); 'post-op' /
# 'pre-op' are the operation's time, not the contrast's
_CONTRAST = r"\+ ?c\b|\bc\+|\bpost\b(?! ?op(?:erative(?:ly)?)?\b)|\bgad|\bgd\b|contrast|\bce\b|\bkm\b|(?<=\bt1)(?:ce?|gd)\b"
_BEFORE_CONTRAST = r"\bpre(?: ?contrast)?\b(?! ?op(?:erative(?:ly)?)?\b)|\bnon ?contrast|without|\bw/?o\b|\bnativ|\bplain\b"
SHORT_TI_MS = 300  # an inversion this short nulls fat (STIR); T1-weighted inversions are longer, FLAIR's over 1500


@dataclass(frozen=True)
class MrSequence:
    name: str  # one of SEQUENCES
    evidence: str  # what in the header said so, for the reader

    def __str__(self) -> str:
        return f"{self.name} (from {self.evidence})"


def _number(value: str) -> float | None:
    try:
        return float(str(value).strip("[]' ").split(",")[0].split("\\")[0])
    except ValueError:
        return None


def _short_inversion(ti: float | None) -> bool:
    """GE writes InversionTime 0 on sequences without an inversion: only a positive short one counts."""
    return ti is not None and 0 < ti < SHORT_TI_MS


def _qualified(name: str, text: str, fields: dict[str, str]) -> tuple[str, list[str], str]:
    """The name read from ``text``, sharpened by the rest of the header: a contrast agent makes a T1 post-contrast,
    a short inversion makes a 'T2' or 'PD' a STIR, and a dual echo's own echo time says which echo the slice is.
    Returns the name, the further words that said so and the timing that did."""
    ti, te = _number(fields.get("InversionTime", "")), _number(fields.get("EchoTime", ""))
    contrast = re.search(_CONTRAST, text)
    if name == "T1" and (fields.get("ContrastBolusAgent", "").strip() or contrast) \
            and not re.search(_BEFORE_CONTRAST, text):  # 'T1 pre gad', 'non contrast': plain T1
        return "T1 post-contrast", [contrast.group(0).strip()] if contrast else [], ""
    if name in ("T2", "PD", "PD / T2") and _short_inversion(ti):
        return "STIR", [], f"TI {ti:g}"
    if name == "PD / T2" and te is not None and (te < 30 or te > 60):
        return ("PD" if te < 30 else "T2"), [], f"TE {te:g}"
    return name, [], ""


def _from_names(fields: dict[str, str]) -> MrSequence | None:
    """The sequence the series and protocol names say, quoting the matched words only (a description may hold a
    name)."""
    for keyword in ("SeriesDescription", "ProtocolName", "SequenceName"):
        text = re.sub(r"[_\-]+", " ", fields.get(keyword, "").lower())
        if not text.strip():
            continue
        for name, pattern in _NAMED:
            found = re.search(pattern, text)
            if found:
                name, more, timing = _qualified(name, text, fields)
                said = [found.group(0).strip()] + more
                return MrSequence(name, f"{keyword} word{'s' * (len(said) > 1)} "
                                        + ", ".join(f"'{w}'" for w in said) + (f", {timing}" if timing else ""))
    return None


def _from_timing(fields: dict[str, str]) -> MrSequence | None:
    """The sequence the timing implies (ms): a long inversion with a long echo is FLAIR, a short inversion STIR;
    long TR with long TE is T2, long TR with a short TE (8-30 ms) and no inversion PD, short TR with short TE
    T1."""
    ti, tr, te = (_number(fields.get(k, "")) for k in ("InversionTime", "RepetitionTime", "EchoTime"))
    contrast_agent = fields.get("ContrastBolusAgent", "").strip()
    timing = ", ".join(f"{k} {v:g}" for k, v in (("TI", ti), ("TR", tr), ("TE", te)) if v is not None)
    if ti is not None and ti > 1500 and te is not None and te > 60:
        return MrSequence("FLAIR", timing)
    if _short_inversion(ti):
        return MrSequence("STIR", timing)
    if tr is not None and te is not None:
        if tr > 2000 and te > 60:
            return MrSequence("T2", timing)
        if tr > 2000 and 8 <= te < 30 and not ti:  # a 3D T1 gradient echo (TR 2300, TE 3) has no TI tag at times
            return MrSequence("PD", timing)
        if tr < 1000 and te < 30:
            return MrSequence("T1 post-contrast" if contrast_agent else "T1", timing +
                              (f", ContrastBolusAgent '{contrast_agent}'" if contrast_agent else ""))
    return None


def mr_sequence(metadata: list[tuple[str, str, str]]) -> MrSequence | None:
    """The sequence of a slice from its header rows (ImageRecord.metadata: tag, keyword, value), or None."""
    fields: dict[str, str] = {}
    for _, keyword, value in metadata:
        fields.setdefault(keyword.strip(), str(value))  # top-level first; an enhanced file's per-frame rows after
    image_type = fields.get("ImageType", "").upper()
    if "ADC" in image_type:
        return MrSequence("ADC", f"ImageType {image_type}")
    b_value = _number(fields.get("DiffusionBValue", ""))
    if "DIFFUSION" in image_type or "TRACEW" in image_type or (b_value is not None and b_value > 0):
        return MrSequence("DWI", f"DiffusionBValue {b_value:g}" if b_value else f"ImageType {image_type}")
    if re.search(r"MAPS?\b", image_type.replace("_", " ")):  # 'T1 MAP', 'T2_MAP', 'T2MAP'
        return MrSequence("parametric map", f"ImageType {image_type}")
    return _from_names(fields) or _from_timing(fields)
