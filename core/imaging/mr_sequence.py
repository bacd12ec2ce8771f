"""Which MR sequence a slice is, from its DICOM header: the brain models were fitted on some sequences only.

A radiologist's series may be a DWI, an ADC map, SWI, perfusion, an angiogram or a localizer as well as the T1,
T2 and FLAIR the models saw; a bundle that states its sequences (manifest ``mr_sequences``) warns on the others
(``core.inference.analyzer``). The header is read in this order, each step only where the ones before say
nothing: derived-map and diffusion markers (ImageType, DiffusionBValue), the words of SeriesDescription,
ProtocolName and SequenceName (scanner names such as ``ep2d_diff``, ``mprage``, ``tse``, ``flair``; the evidence
quotes the matched words only, as a description may hold a name), then the
timing (InversionTime, RepetitionTime, EchoTime in ms). A contrast agent (ContrastBolusAgent, or '+C', 'post',
'gad' in the names) makes a T1 'T1 post-contrast'. None where the header says nothing usable (a PNG, an
anonymised export without these tags): no warning is then given, and none is claimed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UNTESTED_SEQUENCE = "Untested sequence"  # how a slice's warning begins; a series verdict sums them up
SEQUENCES = ("T1", "T1 post-contrast", "T2", "FLAIR", "DWI", "ADC", "SWI / T2*", "perfusion", "angiography",
             "localizer")

# Word patterns on the lower-cased names with '_' and '-' read as spaces (scanners write 't1_mprage_sag',
# 'ep2d-diff'); the first match wins: derived maps and special sequences before T1 and T2.
_NAMED = (
    ("ADC", r"\b[ed]?adc\b|apparent.?diff"),  # Siemens 'ADC', GE 'eADC' / 'dADC'
    ("DWI", r"\bdwi\b|diffusion|\bdiff\b|\btrace\b|\bdti\b|\bb ?1000\b|\bresolve\b"),
    ("SWI / T2*", r"\bswi\b|\bswan\b|suscept|t2\*|t2.?star|\bhemo"),  # not 'GRE' alone: T1 is often a GRE
    ("perfusion", r"perf|\bdsc\b|\bpwi\b|\basl\b|\bdce\b|\bpcasl\b"),
    ("angiography", r"\btof\b|\bmra\b|angio"),
    ("localizer", r"locali[sz]er|\bscout\b|\bsurvey\b|3.?plane.?loc|\baahead\b"),
    ("T1", r"\bs?t1w? ?flair"),  # GE's T1 FLAIR is T1-weighted
    ("FLAIR", r"flair|dark.?fluid"),
    ("T2", r"\bt2\b|\bs?t2w"),
    ("T1", r"\bt1\b|\bs?t1w|mprage|spgr|bravo|\btfl\b|\bvibe\b|3d ?tfe"),
)
_CONTRAST = r"\+ ?c\b|\bc\+|\bpost\b|\bgad|\bgd\b|contrast|\bce\b|\bkm\b"
_BEFORE_CONTRAST = r"\bpre\b|\bnon ?contrast|without|\bw/?o\b|\bnativ|\bplain\b"


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
    contrast_agent = fields.get("ContrastBolusAgent", "").strip()
    for keyword in ("SeriesDescription", "ProtocolName", "SequenceName"):
        text = re.sub(r"[_\-]+", " ", fields.get(keyword, "").lower())
        if not text.strip():
            continue
        for name, pattern in _NAMED:
            found = re.search(pattern, text)
            if found:
                said = [found.group(0).strip()]  # the words only: a description may hold a name
                contrast = re.search(_CONTRAST, text)
                if (name == "T1" and (contrast_agent or contrast)
                        and not re.search(_BEFORE_CONTRAST, text)):  # 'T1 pre gad', 'non contrast': plain T1
                    name = "T1 post-contrast"
                    said += [contrast.group(0).strip()] if contrast else []
                return MrSequence(name, f"{keyword} word{'s' * (len(said) > 1)} "
                                        + ", ".join(f"'{w}'" for w in said))
    ti, tr, te = (_number(fields.get(k, "")) for k in ("InversionTime", "RepetitionTime", "EchoTime"))
    timing = ", ".join(f"{k} {v:g}" for k, v in (("TI", ti), ("TR", tr), ("TE", te)) if v is not None)
    if ti is not None and ti > 1500 and te is not None and te > 60:
        return MrSequence("FLAIR", timing)
    if tr is not None and te is not None:
        if tr > 2000 and te > 60:
            return MrSequence("T2", timing)
        if tr < 1000 and te < 30:
            return MrSequence("T1 post-contrast" if contrast_agent else "T1", timing +
                              (f", ContrastBolusAgent '{contrast_agent}'" if contrast_agent else ""))
    return None
