"""A mammogram's laterality and view read from words: one reading for the hanging of an exam (core.series.hanging)
and for the film detector's breast region (core.inference.paths), which sit in layers that cannot import each
other.

Words are the runs of letters of a text in capitals: 'RIGHT_CC', 'L MLO', the fused 'LMLO'. CBIS-DDSM writes
the view into PatientOrientation, whose 'L' or 'R' is a direction of the picture, not the breast.

A header's codes (``view_codes``): the view of its ViewCodeSequence (DICOM CID 4014), the modifiers of its
ViewModifierCodeSequence (CID 4015: spot compression, magnification, ...) and its Estimated Radiographic
Magnification Factor. Only a CC or MLO view without a modifier is a screening view (``SCREENING_VIEWS``): a spot,
magnification or exaggerated (XCCL, XCCM) view images part of the breast or at another scale, so it is neither
hung nor paired as the screening view of its side.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# View words, each its own view: an exaggerated CC (XCCL, XCCM) is not the screening CC.
VIEWS = {"CC": "CC", "MLO": "MLO", "XCCL": "XCCL", "XCCM": "XCCM"}
SCREENING_VIEWS = ("CC", "MLO")
_WORDS = re.compile(r"[A-Z]+")
_SIDE = {"R": "R", "RIGHT": "R", "L": "L", "LEFT": "L"}
_FUSED = re.compile(r"^(R|L)(CC|MLO|XCCL|XCCM)$")  # 'RCC', 'LMLO'

# ViewCodeSequence codes (CID 4014: SNOMED-RT, SNOMED CT, UMLS; Y-X1770/1 the deprecated XCCL/XCCM codes) -> view
_CODED_VIEWS = {
    **dict.fromkeys(("R-10242", "399162004", "C0442215"), "CC"),
    **dict.fromkeys(("R-10226", "399368009", "C1302345"), "MLO"),
    **dict.fromkeys(("R-1024A", "399192008", "C1302247", "Y-X1770"), "XCCL"),
    **dict.fromkeys(("R-1024B", "399101009", "C1302202", "Y-X1771"), "XCCM"),
    **dict.fromkeys(("R-10224", "399260004", "C1302283"), "ML"),
    **dict.fromkeys(("R-10228", "399352003", "C1302336"), "LM"),
}
# the same views by their code meanings, for a code from a scheme not listed above
_MEANT_VIEWS = {"cranio-caudal": "CC", "medio-lateral oblique": "MLO", "cranio-caudal exaggerated laterally": "XCCL",
                "cranio-caudal exaggerated medially": "XCCM", "medio-lateral": "ML", "latero-medial": "LM"}
# ViewModifierCodeSequence codes (CID 4015) named here; any other modifier goes by its meaning
_CODED_MODIFIERS = {
    **dict.fromkeys(("R-102D6", "399163009", "C1302233"), "magnification"),
    **dict.fromkeys(("R-102D7", "399055006", "C1302185"), "spot compression"),
}
# An Estimated Radiographic Magnification Factor from this up is a magnification view (about 1.5-2.0); a contact
# view's is the small geometric factor of the breast's height above the detector (about 1.05-1.2).
MAGNIFIED_FACTOR = 1.3
HEADER_KEYWORDS = ("ViewCodeSequence", "ViewModifierCodeSequence", "EstimatedRadiographicMagnificationFactor")


@dataclass(frozen=True)
class ViewCodes:
    """What a mammogram's header codes about its view (``view_codes``); empty where it codes nothing."""

    view: str = ""  # CC, MLO, XCCL, XCCM, ML, LM from the view code; '' when not coded or a code not known here
    modifiers: tuple[str, ...] = ()  # 'magnification', 'spot compression', or another modifier's meaning
    magnification: float | None = None  # EstimatedRadiographicMagnificationFactor

    @property
    def magnified(self) -> bool:
        """A magnification view: coded as one, or magnified well beyond a contact view's geometry."""
        return "magnification" in self.modifiers or (self.magnification or 0.0) >= MAGNIFIED_FACTOR


def view_codes(ds) -> ViewCodes:
    """The ``ViewCodes`` of a pydicom header holding ``HEADER_KEYWORDS`` (the modifiers belong in the view code's
    item; some writers put them at the top level, read too); malformed values read as absent."""
    def codes(sequence) -> list[tuple[str, str]]:
        try:
            return [(str(item.get("CodeValue", "") or "").strip().upper(), str(item.get("CodeMeaning", "") or "")
                     .strip()) for item in (sequence or [])]
        except Exception:  # noqa: BLE001 - a damaged sequence codes nothing
            return []

    try:
        items = list(ds.get("ViewCodeSequence") or [])
    except Exception:  # noqa: BLE001
        items = []
    # a code not known here leaves the view to ViewPosition: a screening view must not go unhung for a local code
    view = next((_CODED_VIEWS.get(value) or _MEANT_VIEWS.get(meaning.lower(), "") for value, meaning in codes(items)
                 if value or meaning), "")
    found = [c for item in items for c in codes(_get(item, "ViewModifierCodeSequence"))]
    found += codes(_get(ds, "ViewModifierCodeSequence"))
    modifiers = tuple(dict.fromkeys(_CODED_MODIFIERS.get(value) or meaning.lower() or value
                                    for value, meaning in found if value or meaning))
    try:
        factor = float(_get(ds, "EstimatedRadiographicMagnificationFactor") or 0)
    except (TypeError, ValueError):
        factor = 0.0
    return ViewCodes(view, modifiers, factor if math.isfinite(factor) and factor > 0 else None)


def _get(ds, keyword: str):
    try:
        return ds.get(keyword)
    except Exception:  # noqa: BLE001 - a malformed element reads as absent
        return None


def side_and_view(texts: list[tuple[str, str]]) -> tuple[str, str, str]:
    """(laterality "R"/"L", view "CC"/"MLO", where) from the first of the (where, text) pairs that name them; ''
    where none does. A PatientOrientation text gives a view only; in a PatientID only RIGHT / LEFT or a fused
    'RCC' name a side: a lone R or L there is part of the woman's number ('R-1047'), which had put all four of her
    films on the right."""
    side = view = source = ""
    for where, text in texts:
        sides = where != "PatientOrientation"
        named = {k: v for k, v in _SIDE.items() if len(k) > 1} if where == "PatientID" else _SIDE
        for word in _WORDS.findall(str(text).upper()):
            fused = _FUSED.match(word)
            if fused and sides:
                side, view = side or fused.group(1), view or fused.group(2)
            elif word in named and not side and sides:
                side = named[word]
            elif word in VIEWS and not view:
                view = VIEWS[word]
            if side and view:
                break
        if (side or view) and not source:
            source = where
        if side and view:
            break
    return side, view, source
