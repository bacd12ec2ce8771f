"""A mammogram's laterality and view read from words: one reading for the hanging of an exam (core.series.hanging)
and for the film detector's breast region (core.inference.paths), which sit in layers that cannot import each
other.

Words are the runs of letters of a text in capitals: 'RIGHT_CC', 'L MLO', the fused 'LMLO'. CBIS-DDSM writes
the view into PatientOrientation, whose 'L' or 'R' is a direction of the picture, not the breast.
"""

from __future__ import annotations

import re

VIEWS = {"CC": "CC", "MLO": "MLO", "XCCL": "CC", "XCCM": "CC"}  # exaggerated CC views hang as CC
_WORDS = re.compile(r"[A-Z]+")
_SIDE = {"R": "R", "RIGHT": "R", "L": "L", "LEFT": "L"}
_FUSED = re.compile(r"^(R|L)(CC|MLO)$")  # 'RCC', 'LMLO'


def side_and_view(texts: list[tuple[str, str]]) -> tuple[str, str, str]:
    """(laterality "R"/"L", view "CC"/"MLO", where) from the first of the (where, text) pairs that name them; ''
    where none does. A PatientOrientation text gives a view only."""
    side = view = source = ""
    for where, text in texts:
        sides = where != "PatientOrientation"
        for word in _WORDS.findall(str(text).upper()):
            fused = _FUSED.match(word)
            if fused and sides:
                side, view = side or fused.group(1), view or fused.group(2)
            elif word in _SIDE and not side and sides:
                side = _SIDE[word]
            elif word in VIEWS and not view:
                view = VIEWS[word]
            if side and view:
                break
        if (side or view) and not source:
            source = where
        if side and view:
            break
    return side, view, source
