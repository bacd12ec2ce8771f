"""The typed bundle manifest (``models/<id>/manifest.json``): every field the product reads when it runs a
bundle, checked when the bundle is loaded, each default written once (the field defaults of ``BundleManifest``,
``PreprocessSpec`` and ``TilingSpec``).

``resources/bundle_manifest.schema.json`` (JSON Schema 2020-12) describes the same file for editors and other
tools; tests/test_manifest.py keeps the two in step (required fields, defaults, allowed values). Keys the product
does not read when it runs a bundle (``training``, ``validation_metrics``, ``plots``, the measurements
core.training writes) are kept as they are in ``extra``.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from core.errors import ModelError
from core.imaging.mr_sequence import SEQUENCES
from core.imaging.record import Modality
from core.models.exports import STEMS_FOLDER
from core.models.mammography import FilmScoring
from core.models.novelty import NoveltySpec
from core.models.preprocessing import PreprocessSpec
from core.models.storage import SHA256
from core.models.tiling import TilingSpec

TASKS = ("classification", "segmentation")
MODALITIES = tuple(m.value for m in Modality)
# The values the preprocessing and tiling code implements, per text field of PreprocessSpec / TilingSpec.
PREPROCESS_CHOICES = {"color": ("grey3", "rgb"), "crop": ("none", "foreground", "head", "scan"), "scale": ("xception", "unit"),
                      "stain": ("none", "macenko"), "aspect": ("pad", "stretch"), "intensity": ("tissue", "display")}
TILING_CHOICES = {"tissue": ("stained", "radiograph"), "aggregate": ("mean", "max")}
# A segmenter's mask threshold where its manifest's ``decision_threshold`` is null (or absent).
MASK_THRESHOLD = 0.5
# A bundle id names the bundle's folder in the ONNX cache (core.models.exports) and its Keras model: a plain name,
# never '.', '..', a path or the cache's stems folder.
BUNDLE_ID = re.compile(r"[a-z0-9][a-z0-9._-]*")
_PART_FILES = ("trunk", "backbone")  # <part>_file + <part>_sha256 in an architecture entry
_SHARES = {"min_tissue"}  # spec fields that are fractions (0-1); other numbers must be above 0
MAX_PIXELS = 8192  # an input size, tile or stride beyond this is an error, not an allocation of gigabytes
# logits / T: a temperature of 1e-320 made every probability NaN (called 'clear' with exit 0), one of 1e300 made every
# answer 50/50; fitted temperatures lie around 0.5-3
TEMPERATURES = (0.01, 1000.0)


@dataclass(frozen=True)
class WeightsFile:
    """A network file of the bundle and the sha256 it must have (checked before Keras opens it)."""

    file: str
    sha256: str
    storage: str | None = None  # "float16": halved on disk (core.models.storage)


@dataclass(frozen=True)
class BundleManifest:
    """What a bundle's manifest tells the product, typed; see the module docstring.

    Fields without a default are required. ``metadata["key"]`` is a field's place in the JSON where it is not
    its name (``temperature`` lies in ``calibration``).
    """

    id: str
    version: str
    modality: Modality
    task: str  # one of TASKS
    classes: tuple[str, ...]  # a segmenter's: its one foreground class
    weights: WeightsFile
    preprocessing: PreprocessSpec
    title: str = ""
    notes: str = ""
    # The network's input (H, W, 3); classifiers take any size, segmenters and ensembles are built at this one.
    input_size: tuple[int, ...] | None = None
    # How the network is put together (core.models.registry: trunk_file, backbone_file, feature_bundle,
    # average_with, ...); checked here for the files and bundles it names, otherwise read by the registry.
    architecture: dict = field(default_factory=dict)
    # A segmenter's probability threshold for its mask (null: MASK_THRESHOLD); unused by classifiers.
    decision_threshold: float | None = None
    temperature: float = field(default=1.0, metadata={"key": "calibration.temperature"})  # logits / T
    flip_average: bool = False  # average the image's output with its mirror's (chosen on validation)
    min_lesion_peak: float = 0.0  # lesions whose peak probability stays below this are dropped
    min_lesion_px: int = 16  # smaller mask components are dropped
    gradcam_layer: str | None = None  # None: no Grad-CAM
    gradcam_plus_layer: str | None = None  # None: Grad-CAM++ explains gradcam_layer too
    tiling: TilingSpec | None = None  # None: the whole image is one input
    # A mammography detector: the film read tile by tile at its scale, scored (against the other breast's film
    # where there is one) and marked (core.models.mammography); None: not a film detector.
    film_scoring: FilmScoring | None = None
    changelog: str = "CHANGELOG.md"  # the bundle's history, relative to its folder
    # MR bundles: the sequences it was fitted on (core.imaging.mr_sequence.SEQUENCES); a slice whose header names
    # another gets a warning. Empty: not stated, no warning.
    mr_sequences: tuple[str, ...] = ()
    # Whole-picture classifiers, film detectors and segmenters: the reference of their training images' features that
    # says how unusual a picture is (core.models.novelty); None: no such check.
    novelty: NoveltySpec | None = None
    extra: dict = field(default_factory=dict, compare=False, repr=False, metadata={"extra": True})

    # ----- reading
    @property
    def mask_threshold(self) -> float:
        return float(self.decision_threshold or MASK_THRESHOLD)

    def cam_layer(self, plus: bool = False) -> str | None:
        """The layer Grad-CAM explains, or Grad-CAM++ where validation chose another one for it."""
        if plus and self.gradcam_plus_layer is not None:
            return self.gradcam_plus_layer
        return self.gradcam_layer

    def files(self) -> list[tuple[str, str, str]]:
        """(where in the manifest, relative path, sha256) of every network file the bundle names."""
        entries = [("weights", self.weights.file, self.weights.sha256)]
        parts = [("architecture.", self.architecture)]
        start = self.architecture.get("average_with")
        if start is not None:
            entries.append(("architecture.average_with.weights", start["weights"]["file"], start["weights"]["sha256"]))
            parts.append(("architecture.average_with.", start))
        for prefix, part in parts:
            for name in _PART_FILES:
                if part.get(f"{name}_file") is not None:
                    entries.append((f"{prefix}{name}_file", part[f"{name}_file"], part[f"{name}_sha256"]))
        return entries

    # ----- the fields themselves
    @classmethod
    def required(cls) -> list[str]:
        """The JSON keys every manifest must have: the fields without a default."""
        return [_key(f) for f in _fields(cls) if f.default is MISSING and f.default_factory is MISSING]

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """{JSON key (dotted where nested): default} of the optional fields."""
        return {_key(f): (f.default if f.default is not MISSING else f.default_factory())
                for f in _fields(cls) if f.default is not MISSING or f.default_factory is not MISSING}

    @classmethod
    def top_level_keys(cls) -> frozenset[str]:
        """The top-level JSON keys the typed fields are read from (everything else goes to ``extra``)."""
        return frozenset(_key(f).split(".")[0] for f in _fields(cls))

    # ----- parsing
    @classmethod
    def from_dict(cls, data: Any, folder: str | Path | None = None) -> "BundleManifest":
        """The typed manifest of ``data`` (a parsed manifest.json); ModelError naming the bundle folder and the
        field where a required field is missing, a value has the wrong type or is not an allowed one."""
        where = f"{Path(folder).name}/manifest.json" if folder is not None else "manifest.json"
        if not isinstance(data, dict):
            raise ModelError(f"{where} is not a JSON object")
        missing = [k for k in cls.required() if k not in data]
        if missing:
            names = ", ".join(f"'{k}'" for k in missing)
            raise ModelError(f"{where} lacks the required field{'s' if len(missing) > 1 else ''} {names}")
        check = _Check(where)
        values: dict[str, Any] = {
            "id": check.bundle_id(data, "id"),
            "version": check.text(data, "version"),
            "modality": Modality(check.choice(data, "modality", MODALITIES)),
            "task": check.choice(data, "task", TASKS),
            "classes": check.names(data, "classes"),
            "weights": check.weights(data["weights"], "weights"),
            "preprocessing": PreprocessSpec(**check.spec(data, "preprocessing", PreprocessSpec, PREPROCESS_CHOICES)),
        }
        for key in ("title", "notes", "changelog"):
            if key in data:
                values[key] = check.text(data, key, empty=key != "changelog")
        if "changelog" in values:
            check.relative(values["changelog"], "changelog")
        for key in ("gradcam_layer", "gradcam_plus_layer"):
            if data.get(key) is not None:
                values[key] = check.text(data, key)
        if data.get("input_size") is not None:
            values["input_size"] = check.input_size(data, "input_size")
        if "architecture" in data:
            values["architecture"] = check.architecture(data, "architecture")
        if data.get("decision_threshold") is not None:
            values["decision_threshold"] = check.number(data, "decision_threshold", 0.0, 1.0, low_open=True,
                                                        high_open=True)
        if "calibration" in data:
            calibration = check.kind(data, "calibration", dict, "an object")
            if "temperature" in calibration:
                values["temperature"] = check.number(calibration, "temperature", *TEMPERATURES,
                                                     path="calibration.temperature")
        if "flip_average" in data:
            values["flip_average"] = check.kind(data, "flip_average", bool, "true or false")
        if "min_lesion_peak" in data:
            values["min_lesion_peak"] = check.number(data, "min_lesion_peak", 0.0, 1.0)
        if "min_lesion_px" in data:
            values["min_lesion_px"] = check.integer(data, "min_lesion_px", 0)
        if data.get("tiling") is not None:
            values["tiling"] = TilingSpec.from_dict(check.spec(data, "tiling", TilingSpec, TILING_CHOICES))
        if data.get("film_scoring") is not None:
            values["film_scoring"] = check.film_scoring(data, "film_scoring")
        if "mr_sequences" in data:
            values["mr_sequences"] = check.names(data, "mr_sequences")
            unknown = [name for name in values["mr_sequences"] if name not in SEQUENCES]
            if unknown:
                check.fail("mr_sequences", f"names among {', '.join(SEQUENCES)}", unknown)
        if data.get("novelty") is not None:
            values["novelty"] = check.novelty(data, "novelty")
        values["extra"] = {k: v for k, v in data.items() if k not in cls.top_level_keys()}
        return cls(**values)


def _fields(cls) -> list:
    return [f for f in fields(cls) if not f.metadata.get("extra")]


def _key(f) -> str:
    return f.metadata.get("key", f.name)


def read_keys(data: dict) -> dict:
    """The part of a raw manifest the typed fields are read from (a bundle keeps a deep copy of it to see
    whether its manifest was changed in place)."""
    keys = BundleManifest.top_level_keys()
    return {k: v for k, v in data.items() if k in keys} if isinstance(data, dict) else {}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Check:
    """Checks of one manifest's values; each failure is a ModelError naming the file and the field."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, path: str, expected: str, value: Any) -> None:
        raise ModelError(f"{self.where}: '{path}' must be {expected}, not {_shown(value)}")

    def kind(self, data: dict, key: str, kind: type, expected: str, path: str | None = None):
        value = data[key]
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            self.fail(path or key, expected, value)
        return value

    def text(self, data: dict, key: str, empty: bool = False, path: str | None = None) -> str:
        value = data[key]
        if not isinstance(value, str) or not (empty or value.strip()):
            self.fail(path or key, "a string" if empty else "a non-empty string", value)
        return value

    def bundle_id(self, data: dict, key: str) -> str:
        value = data[key]
        if not isinstance(value, str) or not BUNDLE_ID.fullmatch(value) or value == STEMS_FOLDER:
            self.fail(key, "a plain name of lower-case letters, digits, '.', '_' and '-' that starts with a letter "
                           f"or digit (and is not '{STEMS_FOLDER}')", value)
        return value

    def choice(self, data: dict, key: str, allowed: tuple[str, ...], path: str | None = None) -> str:
        value = data[key]
        if not isinstance(value, str) or value not in allowed:
            self.fail(path or key, "one of " + ", ".join(f"'{a}'" for a in allowed), value)
        return value

    def number(self, data: dict, key: str, low: float | None, high: float | None, low_open: bool = False,
               high_open: bool = False, path: str | None = None) -> float:
        value = data[key]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and low is not None:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if not ok:
            bounds = ("above " if low_open else "at least ") + str(low) if low is not None else ""
            if high is not None:
                bounds += (" and " if bounds else "") + ("below " if high_open else "at most ") + str(high)
            self.fail(path or key, "a number" + (f" {bounds}" if bounds else ""), value)
        return float(value)

    def integer(self, data: dict, key: str, low: int, path: str | None = None, high: int | None = None) -> int:
        value = data[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
            self.fail(path or key, f"a whole number of at least {low}" + (f" and at most {high}" if high else ""), value)
        return value

    def names(self, data: dict, key: str) -> tuple[str, ...]:
        value = data[key]
        if (not isinstance(value, list) or not value or not all(isinstance(c, str) and c.strip() for c in value)
                or len(set(value)) != len(value)):
            self.fail(key, "a non-empty list of distinct class names", value)
        return tuple(value)

    def sha256(self, data: dict, key: str, path: str) -> str:
        value = data.get(key)
        if not isinstance(value, str) or not SHA256.fullmatch(value):
            self.fail(path, "the file's sha256 (64 lower-case hex digits)", value)
        return value

    def relative(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not value or "\0" in value:
            self.fail(path, "a non-empty path relative to the bundle folder", value)
        if PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute():
            raise ModelError(f"{self.where}: '{path}' is an absolute path ({_shown(value)}); "
                             "bundle files must lie in the bundle")
        return value

    def weights(self, value: Any, path: str) -> WeightsFile:
        if not isinstance(value, dict):
            self.fail(path, "an object with 'file' and 'sha256'", value)
        storage = value.get("storage")
        if storage is not None and not isinstance(storage, str):
            self.fail(f"{path}.storage", "a string", storage)
        return WeightsFile(self.relative(value.get("file"), f"{path}.file"),
                           self.sha256(value, "sha256", f"{path}.sha256"), storage)

    def fields_of(self, data: dict, key: str, spec: type) -> tuple[dict, dict]:
        """The object at ``key`` and its dataclass ``spec``'s field defaults, refused where it names another key (a
        misspelt one would silently keep its default)."""
        value = self.kind(data, key, dict, "an object")
        known = {f.name: f.default for f in fields(spec)}
        for name, item in value.items():
            if name not in known:
                self.fail(f"{key}.{name}", "absent (not a field of " + key + ": " + ", ".join(known) + ")", item)
        return value, known

    def spec(self, data: dict, key: str, spec: type, choices: dict) -> dict:
        """A PreprocessSpec / TilingSpec entry: known keys only, each of its default's type (or allowed value)."""
        value, known = self.fields_of(data, key, spec)
        for name, item in value.items():
            path = f"{key}.{name}"
            default = known[name]
            if name in choices:
                self.choice(value, name, choices[name], path)
            elif isinstance(default, bool):
                self.kind(value, name, bool, "true or false", path)
            elif isinstance(default, int):  # sizes and strides in pixels
                self.integer(value, name, 1, path, high=MAX_PIXELS)
            elif name in _SHARES:
                self.number(value, name, 0.0, 1.0, path=path)
            elif isinstance(default, float):  # a factor (scale)
                self.number(value, name, 0.0, None, low_open=True, path=path)
            elif default is None:
                if item is not None:
                    self.number(value, name, 0.0, None, low_open=True, path=path)
            else:
                self.text(value, name, path=path)
        return dict(value)

    def novelty(self, data: dict, key: str) -> NoveltySpec:
        """The reference file (in the bundle, with its sha256) and the share above which a picture is flagged."""
        value, _ = self.fields_of(data, key, NoveltySpec)
        flag = {"flag_above": self.number(value, "flag_above", 0.0, 1.0, path=f"{key}.flag_above")} \
            if "flag_above" in value else {}
        return NoveltySpec(self.relative(value.get("file"), f"{key}.file"),
                           self.sha256(value, "sha256", f"{key}.sha256"), **flag)

    def film_scoring(self, data: dict, key: str) -> FilmScoring:
        """Known keys only: whole numbers of at least 1, shares from 0 to 1, a positive scale, any other
        finite number (calibration slopes and intercepts)."""
        value, known = self.fields_of(data, key, FilmScoring)
        for name in value:
            path = f"{key}.{name}"
            if isinstance(known[name], int):
                self.integer(value, name, 1, path, high=MAX_PIXELS)
            elif name in ("min_breast", "mark_threshold"):
                self.number(value, name, 0.0, 1.0, path=path)
            elif name == "mm_per_pixel":
                self.number(value, name, 0.0, None, low_open=True, path=path)
            elif name.startswith("blob_sigma"):
                self.number(value, name, 0.0, None, path=path)
            else:
                self.number(value, name, None, None, path=path)
        return FilmScoring(**value)

    def input_size(self, data: dict, key: str) -> tuple[int, ...]:
        value = data[key]
        if (not isinstance(value, list) or len(value) != 3
                or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_PIXELS for v in value)):
            self.fail(key, f"[height, width, channels] in whole numbers up to {MAX_PIXELS}", value)
        return tuple(value)

    def architecture(self, data: dict, key: str) -> dict:
        arch = self.kind(data, key, dict, "an object")
        parts = [(key, arch)]
        start = arch.get("average_with")
        if start is not None:
            if not isinstance(start, dict):
                self.fail(f"{key}.average_with", "an object with 'weights'", start)
            self.weights(start.get("weights"), f"{key}.average_with.weights")
            parts.append((f"{key}.average_with", start))
        for prefix, part in parts:
            for name in ("backbone", "top_block_start"):
                if part.get(name) is not None:
                    self.text(part, name, path=f"{prefix}.{name}")
            if part.get("encoder_layers") is not None:
                layers = part["encoder_layers"]
                if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
                    self.fail(f"{prefix}.encoder_layers", "a list of layer names", layers)
            for name in _PART_FILES:
                if part.get(f"{name}_file") is not None:
                    self.relative(part[f"{name}_file"], f"{prefix}.{name}_file")
                    self.sha256(part, f"{name}_sha256", f"{prefix}.{name}_sha256")
        if arch.get("encoder_bundle") is not None:  # the classifier whose network a segmenter's encoder is
            self.text(arch, "encoder_bundle", path=f"{key}.encoder_bundle")
            self.sha256(arch, "encoder_bundle_sha256", f"{key}.encoder_bundle_sha256")
        if arch.get("feature_bundle") is not None:
            self.text(arch, "feature_bundle", path=f"{key}.feature_bundle")
            self.sha256(arch, "feature_bundle_sha256", f"{key}.feature_bundle_sha256")
            if arch.get("feature_bundle_task") is not None:  # a head on a segmenter's encoder and lesion map
                self.choice(arch, "feature_bundle_task", ("segmentation",), f"{key}.feature_bundle_task")
            elif not isinstance(arch.get("feature_layer"), str) or not arch["feature_layer"]:
                self.fail(f"{key}.feature_layer", "the parent's layer this bundle is fitted on",
                          arch.get("feature_layer"))
        return copy.deepcopy(arch)
