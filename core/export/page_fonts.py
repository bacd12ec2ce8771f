"""The fonts the PDF reports draw text in, and what they cannot draw.

Names and descriptions may be written in any script; matplotlib's own monospace font has no CJK, so fonts that do
are added behind it where installed (none is shipped), and a character no installed font holds is named on the page
by its code point rather than silently printed as a box.
"""

from __future__ import annotations

import functools

MONOSPACE = "DejaVu Sans Mono"  # matplotlib's own
# Fonts that hold CJK characters, tried after MONOSPACE in this order where installed.
FALLBACK_FONTS = ("Noto Sans Mono CJK SC", "Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK TC",
                  "Noto Sans CJK KR", "Source Han Sans", "Droid Sans Fallback", "WenQuanYi Zen Hei",
                  "WenQuanYi Micro Hei", "MS Gothic", "Yu Gothic", "Microsoft YaHei", "SimHei", "Malgun Gothic",
                  "PingFang SC", "Hiragino Sans", "Apple SD Gothic Neo", "Arial Unicode MS")


def page_fonts() -> list[str]:
    """The font families of a report's text: MONOSPACE, then each of FALLBACK_FONTS that matplotlib finds
    installed, for the characters MONOSPACE lacks."""
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    return [MONOSPACE] + [name for name in FALLBACK_FONTS if name in installed]


@functools.cache
def _characters(family: str) -> frozenset[int]:
    """The code points the font ``family`` draws."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    path = font_manager.findfont(font_manager.FontProperties(family=[family]), fallback_to_default=False)
    return frozenset(FT2Font(path).get_charmap())


def unshown(text: str) -> list[str]:
    """The characters of ``text`` (each once, in order) that no font of ``page_fonts`` draws: they print as boxes."""
    drawn = [_characters(family) for family in page_fonts()]
    return [c for c in dict.fromkeys(text) if not c.isspace() and not any(ord(c) in d for d in drawn)]


def unshown_note(text: str) -> list[str]:
    """A line naming the characters of ``text`` the fonts installed cannot draw, so that a name printed as boxes is
    not taken for what the file holds; none where every one is drawn."""
    missing = unshown(text)
    if not missing:
        return []
    points = " ".join(f"U+{ord(c):04X}" for c in missing[:12]) + (" ..." if len(missing) > 12 else "")
    return [f"NOTE: some characters cannot be shown by the fonts installed and print as boxes: {points} (install a "
            "font that holds them, such as Noto Sans CJK, and export again)."]
