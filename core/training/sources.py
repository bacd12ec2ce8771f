"""Which data source (and, for BUS-BRA, which scanner) a split entry comes from.

Per-source numbers are how a model fitted on several sources is judged: a pooled score hides a model
that learns a source's look instead of the finding. Entries are split.json rows (path relative to the
shared data folder, label, group).
"""

from __future__ import annotations

from pathlib import Path

from core.training.configs import DATA_ROOT
from core.training.datasets import busbra_table


def data_key(path: str | Path) -> str:
    """A data path as ``split.json`` files name it: relative to the shared data folder where it lies there."""
    try:
        return str(Path(path).relative_to(DATA_ROOT))
    except ValueError:
        return str(path)


def source_of(path: str, group: str) -> str:
    """The source of a split entry: LGG and figshare by their patient groups, else the data folder."""
    if group.startswith("lgg-") or "brain_mri_lgg" in Path(path).parts:
        return "lgg"
    if "mirrored-halves" in Path(path).parts:  # made from figshare slices (core.training.mirrored_halves), cached
        return "figshare-mirrored"
    if group.startswith("figshare-"):
        return "figshare"
    if group.startswith("bach-"):  # kept outside the shared data folder: its path names no source
        return "bach"
    if "brain_mri_4class" in Path(path).parts:
        return "kaggle-other"
    return Path(path).parts[0] if Path(path).parts else "other"


def scanner_of(path: str) -> str | None:
    """The scanner of a BUS-BRA image (from its ``bus_data.csv``); None where the source does not say."""
    if "busbra" not in Path(path).parts:
        return None
    return busbra_table(DATA_ROOT / "busbra").get(Path(path).stem, {}).get("Device")


def subsets(entries: list) -> dict[str, list[int]]:
    """Indices of ``entries`` per source and, where the source names it, per scanner ("busbra: GE Logiq 5 …")."""
    out: dict[str, list[int]] = {}
    for i, (path, _label, group) in enumerate(entries):
        path = data_key(path)
        source = source_of(path, group)
        out.setdefault(source, []).append(i)
        scanner = scanner_of(path)
        if scanner:
            out.setdefault(f"{source}: {scanner}", []).append(i)
    return dict(sorted(out.items()))


def several_sources(entries: list) -> bool:
    """Whether ``entries`` come from more than one source (then per-source numbers are worth a table)."""
    return len({source_of(data_key(path), group) for path, _label, group in entries}) > 1
