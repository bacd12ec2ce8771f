"""The cells of results.csv and series.csv: the ``file`` key of an input file, the warnings cell, the line ending.

Low enough for any layer to import (the standard library only): the batch runner writes these cells, the series
output reads them back.
"""

from __future__ import annotations

import os
import re

WARNINGS_SEPARATOR = " | "  # between the warnings of one results.csv / series.csv cell
# The line ending of results.csv and series.csv, every line (RFC 4180): a cell holding \r or \n is then quoted
# (Python's csv quotes only the characters of the line terminator), so any file name reads back as one cell.
CSV_LINE_END = "\r\n"


def join_warnings(warnings: list[str]) -> str:
    """One CSV cell of warnings; a '|' inside a warning (an exception's text) is kept apart from the separator."""
    return WARNINGS_SEPARATOR.join(w.replace(WARNINGS_SEPARATOR, " / ") for w in warnings if w)


def split_warnings(cell: str | None) -> list[str]:
    return [w for w in (cell or "").split(WARNINGS_SEPARATOR) if w]


_READS_AS_ESCAPE = re.compile(r"\\|x[0-9a-f]{2}")


def file_key(relative: str) -> str:
    """The ``file`` cell of results.csv for the relative path ``relative`` (as os.fsdecode gives it): text any
    CSV/JSON/PDF can hold, one key per path. Bytes that are not UTF-8 become \\xNN escapes; a literal backslash is
    doubled where what follows it would read as an escape (another backslash, or x and two hex digits), so
    ``x<0xff>.jpg`` and ``x\\xff.jpg`` keep apart, and every other name reads as before. ``file_relative`` reverses it.
    """
    key = ""
    for c in reversed(relative):
        if "\udc80" <= c <= "\udcff":  # an undecodable byte, as surrogateescape holds it
            piece = f"\\x{ord(c) - 0xDC00:02x}"
        elif c == "\\" and _READS_AS_ESCAPE.match(key):
            piece = "\\\\"
        else:
            piece = c
        key = piece + key
    return key


def file_relative(key: str) -> str:
    """The relative path (as os.fsdecode gives it) whose ``file_key`` is ``key``."""
    out, i = bytearray(), 0
    while i < len(key):
        if key.startswith("\\\\", i):
            out += b"\\"
            i += 2
        elif re.match(r"\\x[0-9a-f]{2}", key[i:i + 4]):
            out.append(int(key[i + 2:i + 4], 16))
            i += 4
        else:
            out += key[i].encode("utf-8", "surrogateescape")
            i += 1
    return os.fsdecode(bytes(out))
