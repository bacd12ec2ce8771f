"""A bundle's ONNX export: found by a fingerprint of everything that decides its network, read without
TensorFlow.

``python main.py models export`` (core.inference.onnx_export) writes, per bundle, the ONNX files of its stages
(core.models.stages): the stem it may share with other bundles, its rest, and one Grad-CAM graph per layer a
heatmap explains (the rest with the gradient appended: core.models.onnx_grad), with an ``index.json`` that says
which file is which and how large it was written. The Analyzer runs a bundle on ONNX Runtime when such an
export matches it here, and on TensorFlow otherwise. The fingerprint covers the weights' sha256, the architecture
entry (which names every other file and parent bundle by sha256), the input size, the Grad-CAM layers and the
stem's taps, so a retrained, edited or differently installed bundle never runs an export of another network; an
export whose files are not all there at the sizes and sha256 written (one cut short by an export that was
killed, one edited since) is none, and a file changed after it was found is refused when it is opened
(core.inference.onnx_network checks the sha256 the index gives of the bytes it hands ONNX Runtime).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from core.app_paths import onnx_cache
from core.models.storage import SHA256, sha256_file

# 2: each file's size in the index; stem keys name every file of the network; 3: and sha256; 4: film detectors cut
# at their Grad-CAM layer (a stem and a rest, where 3 exported them whole)
EXPORT_FORMAT = 4
STEMS_FOLDER = "stems"  # beside the bundles' export folders: the stems bundles share (no bundle id may be this)
# A Grad-CAM graph's extra input and outputs (core.models.onnx_grad appends them): the class each row's heatmap
# explains (N,) int64, -1 for its highest logit; d logit[class] / d activation; the class explained (N,) int64.
TARGET, GRADS, CHOSEN = "cam_target", "cam_grads", "cam_class"
EXPORTS_FOLDER = "_onnx"  # beside the bundles of a models folder (the frozen app ships its exports there)


@dataclass(frozen=True)
class CamGraph:
    """A Grad-CAM graph: the network with the gradient appended, on the rest's inputs (``on_rest``) or the image;
    ``logits`` and ``activation`` name its outputs (``activation`` may be its first input); ``sha256``: the
    file's as exported (None: not checked, as when the export checks what it wrote)."""

    file: Path
    on_rest: bool
    logits: str
    activation: str
    sha256: str | None = None


@dataclass(frozen=True)
class Export:
    """A bundle's ONNX files, from its ``index.json``. ``stem``: the shared stem's file (None: the rest takes the
    image); ``stem_key``: bundles with the same key share the stem's outputs; ``picks``: the stem outputs the rest
    takes (None: all); ``cam``: the layer whose activation is the rest's first input (core.models.stages.Stages);
    ``cams``: Grad-CAM graph by layer ("" for the rest's first input); ``sizes`` and ``hashes``: every file's size
    and sha256 as written."""

    folder: Path
    bundle: str
    stem: Path | None
    stem_key: str | None
    picks: tuple[int, ...] | None
    cam: str | None
    rest: Path
    cams: dict[str, CamGraph]
    sizes: dict[Path, int]
    hashes: dict[Path, str]

    @classmethod
    def read(cls, index: Path) -> "Export":
        data = json.loads(index.read_text())
        root, folder = index.parents[2], index.parent
        stem, rest = data.get("stem"), data["rest"]
        entries = {folder / f["file"]: f for f in [rest, *data["cams"].values()]}
        if stem:
            entries[root / stem["file"]] = stem
        hashes = {file: _sha256(entry) for file, entry in entries.items()}
        return cls(folder, data["bundle"], root / stem["file"] if stem else None, stem["key"] if stem else None,
                   tuple(data["picks"]) if data.get("picks") is not None else None, data.get("cam"),
                   folder / rest["file"],
                   {layer: CamGraph(folder / cam["file"], cam["on"] == "rest", cam["logits"], cam["activation"],
                                    hashes[folder / cam["file"]])
                    for layer, cam in data["cams"].items()},
                   {file: int(entry["size"]) for file, entry in entries.items()}, hashes)


def fingerprint(bundle) -> str:
    """What decides ``bundle``'s exported network, hashed (with its parents' fingerprints, for bundles on others)."""
    info = bundle.info
    arch = info.architecture
    parents = []
    for key in ("feature_bundle", "encoder_bundle"):
        if arch.get(key) and bundle.parents is not None:
            try:
                parents.append(fingerprint(bundle.parents(arch[key])))
            except Exception:  # noqa: BLE001 - a parent that is not there: the bundle cannot run on it either
                parents.append(None)
    facts = {"format": EXPORT_FORMAT, "id": info.id, "task": info.task, "weights": info.weights.sha256,
             "architecture": arch, "input_size": info.input_size,
             "cam": [bundle.cam_layer(False), bundle.cam_layer(True)], "taps": list(bundle.stem_taps),
             "parents": parents}
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


def export_roots(models_folders: list[Path]) -> list[Path]:
    """Where exports are looked for: beside each models folder, then the user's cache."""
    return [Path(folder) / EXPORTS_FOLDER for folder in models_folders] + [onnx_cache()]


def export_folder(root: Path, bundle_id: str, key: str) -> Path:
    """Where the export of a bundle's network with fingerprint ``key`` lives under ``root``."""
    return Path(root) / bundle_id / key[:16]


def find_export(bundle, roots: list[Path]) -> Export | None:
    """The export of ``bundle``'s network in the first root that holds one with all its files whole and as
    written (sizes, then sha256), else None."""
    key = fingerprint(bundle)
    for root in roots:
        index = export_folder(root, bundle.id, key) / "index.json"
        if index.is_file():
            try:
                export = Export.read(index)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if all(_whole(file, size) for file, size in export.sizes.items()) and intact(export):
                return export
    return None


_HASHED: dict[tuple, str] = {}  # (path, size, mtime, inode) -> sha256: a stem several bundles share is read once


def intact(export: Export) -> bool:
    """Every file of ``export`` has the sha256 its index gives: one changed since at its own size is no export
    (``models export`` then writes it again, and an export in the user's cache is found past a changed one beside
    the models). ONNX Runtime's sessions check again the bytes they are handed (core.inference.onnx_network)."""
    try:
        for file, sha256 in export.hashes.items():
            stat = file.stat()
            key = (str(file), stat.st_size, stat.st_mtime_ns, stat.st_ino)
            if key not in _HASHED:
                _HASHED[key] = sha256_file(file)
            if _HASHED[key] != sha256:
                return False
    except OSError:
        return False
    return True


def _sha256(entry: dict) -> str:
    """An index entry's sha256: 64 lower-case hex digits (anything else makes the index unreadable: no export)."""
    value = entry["sha256"]
    if not (isinstance(value, str) and SHA256.fullmatch(value)):
        raise ValueError(f"{entry.get('file')}: sha256 {value!r} is not 64 lower-case hex digits")
    return value


def _whole(file: Path, size: int) -> bool:
    """``file`` is there at the size its export wrote (one cut short or replaced since is not that file)."""
    try:
        return file.is_file() and file.stat().st_size == size
    except OSError:
        return False
