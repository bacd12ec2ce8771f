"""The typed bundle manifest (core.models.manifest): shipped and test manifests are valid, bad ones give a
ModelError naming the bundle folder and the field, defaults live in one place, and the JSON schema
(resources/bundle_manifest.schema.json) says the same as the dataclass (no TensorFlow except where marked)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from pathlib import Path

import pytest

from core.errors import ModelError
from core.models.manifest import (MODALITIES, PREPROCESS_CHOICES, TASKS, TILING_CHOICES, BundleManifest,
                                  WeightsFile)
from core.models.preprocessing import PreprocessSpec
from core.models.registry import BUILTIN_MODELS, Bundle, Registry
from core.models.mammography import FilmScoring
from core.models.novelty import NoveltySpec
from core.models.tiling import TilingSpec

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "resources" / "bundle_manifest.schema.json").read_text())
SHIPPED = sorted(BUILTIN_MODELS.glob("*/manifest.json"))
SHA = hashlib.sha256(b"weights").hexdigest()


def _minimal(**extra) -> dict:
    """The required fields only (plus ``extra``)."""
    return {"id": "tiny", "version": "1", "modality": "MR", "task": "classification", "classes": ["a", "b"],
            "weights": {"file": "model.keras", "sha256": SHA}, "preprocessing": {}, **extra}


def _bundle(root: Path, folder: str, manifest: dict) -> Path:
    path = root / folder
    path.mkdir(parents=True)
    (path / "model.keras").write_bytes(b"weights")
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


# ----- a small JSON Schema (2020-12) checker for the keywords the schema file uses; jsonschema where installed
_ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description", "default"}


def _schema_errors(instance, schema: dict = SCHEMA, path: str = "") -> list[str]:
    try:
        import jsonschema
    except ImportError:
        return _check(instance, schema, path)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in jsonschema.Draft202012Validator(SCHEMA).iter_errors(instance)]


def _is_type(value, kind: str) -> bool:
    return {"object": isinstance(value, dict), "array": isinstance(value, list), "string": isinstance(value, str),
            "boolean": isinstance(value, bool), "null": value is None,
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool)}[kind]


def _check(value, schema: dict, path: str) -> list[str]:
    unknown = set(schema) - _ANNOTATIONS - set(_KEYWORDS)
    assert not unknown, f"the test's schema checker does not know {unknown}: install jsonschema or teach it"
    errors = []
    for keyword, argument in schema.items():
        if keyword in _KEYWORDS:
            errors += _KEYWORDS[keyword](value, argument, path, schema)
    return errors


def _ref(value, ref, path, _):
    target = SCHEMA
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return _check(value, target, path)


def _type(value, kinds, path, _):
    kinds = [kinds] if isinstance(kinds, str) else kinds
    return [] if any(_is_type(value, k) for k in kinds) else [f"{path}: not {kinds}"]


def _number(test):
    def check(value, bound, path, _):
        if _is_type(value, "number") and not test(value, bound):
            return [f"{path}: {value} out of range"]
        return []
    return check


def _properties(value, properties, path, _):
    if not isinstance(value, dict):
        return []
    return [e for k, sub in properties.items() if k in value for e in _check(value[k], sub, f"{path}.{k}")]


def _additional(value, allowed, path, schema):
    if not isinstance(value, dict) or allowed is not False:
        return []
    return [f"{path}.{k}: not allowed" for k in value if k not in schema.get("properties", {})]


_KEYWORDS = {
    "$ref": _ref,
    "type": _type,
    "enum": lambda v, options, p, _: [] if v in options and not isinstance(v, bool) else [f"{p}: {v!r} not in {options}"],
    "required": lambda v, keys, p, _: [f"{p}: lacks {k}" for k in keys if isinstance(v, dict) and k not in v],
    "dependentRequired": lambda v, deps, p, _: [f"{p}: {k} needs {n}" for k, needs in deps.items()
                                                for n in needs if isinstance(v, dict) and k in v and n not in v],
    "properties": _properties,
    "additionalProperties": _additional,
    "items": lambda v, sub, p, _: [e for i, x in enumerate(v) for e in _check(x, sub, f"{p}[{i}]")]
    if isinstance(v, list) else [],
    "minItems": lambda v, n, p, _: [f"{p}: too short"] if isinstance(v, list) and len(v) < n else [],
    "maxItems": lambda v, n, p, _: [f"{p}: too long"] if isinstance(v, list) and len(v) > n else [],
    "uniqueItems": lambda v, on, p, _: [f"{p}: repeats"] if on and isinstance(v, list) and len(set(map(repr, v))) < len(v) else [],
    "minLength": lambda v, n, p, _: [f"{p}: too short"] if isinstance(v, str) and len(v) < n else [],
    "pattern": lambda v, rx, p, _: [f"{p}: does not match {rx}"] if isinstance(v, str) and not re.search(rx, v) else [],
    "minimum": _number(lambda v, b: v >= b),
    "maximum": _number(lambda v, b: v <= b),
    "exclusiveMinimum": _number(lambda v, b: v > b),
    "exclusiveMaximum": _number(lambda v, b: v < b),
}


# ----- valid manifests
@pytest.mark.parametrize("manifest_file", SHIPPED, ids=lambda p: p.parent.name)
def test_shipped_manifests_load_typed_and_match_the_schema(manifest_file):
    raw = json.loads(manifest_file.read_text())
    info = BundleManifest.from_dict(raw, manifest_file.parent)
    assert info.id == raw["id"] == manifest_file.parent.name and info.version == raw["version"]
    assert info.classes == tuple(raw["classes"]) and info.task in TASKS and info.modality.value == raw["modality"]
    assert info.preprocessing == PreprocessSpec.from_dict(raw["preprocessing"])
    assert info.weights == WeightsFile(**raw["weights"])
    assert info.temperature == raw.get("calibration", {}).get("temperature", BundleManifest.defaults()["calibration.temperature"])
    assert info.extra["training"] == raw["training"] and "validation_metrics" in info.extra  # training metadata kept
    assert not set(info.extra) & BundleManifest.top_level_keys()
    assert _schema_errors(raw) == []
    assert raw["changelog"] == info.changelog and (manifest_file.parent / info.changelog).is_file()  # every shipped bundle names its history


def test_shipped_registry_has_no_problems_and_summaries_name_the_changelog():
    registry = Registry([BUILTIN_MODELS])
    assert registry.problems == [] and len(registry.bundles) == len(SHIPPED)
    for bundle in registry.bundles.values():
        summary = bundle.summary()
        assert summary["changelog"] == str(bundle.folder / "CHANGELOG.md")
        assert summary["version"] == bundle.version == bundle.manifest["version"]
        assert summary["architecture"] == bundle.manifest["architecture"]["backbone"]


@pytest.mark.slow
def test_tiny_test_manifests_are_valid(tiny_models, mr_models):
    for root in (tiny_models, mr_models):
        for manifest_file in sorted(root.glob("*/manifest.json")):
            raw = json.loads(manifest_file.read_text())
            BundleManifest.from_dict(raw, manifest_file.parent)
            assert _schema_errors(raw) == [], manifest_file
        assert Registry([root]).problems == []


# ----- one place for defaults, and the schema agrees with the dataclass
def test_defaults_come_from_the_dataclass_fields():
    info = BundleManifest.from_dict(_minimal())
    defaults = BundleManifest.defaults()
    by_key = {f.metadata.get("key", f.name): f.name for f in dataclasses.fields(BundleManifest)}
    assert set(defaults) == {k for k, name in by_key.items()
                             if name not in ("id", "version", "modality", "task", "classes", "weights",
                                             "preprocessing", "extra")}
    for key, default in defaults.items():
        assert getattr(info, by_key[key]) == default, key
    assert info.preprocessing == PreprocessSpec() and info.tiling is None and info.extra == {}
    assert info.mask_threshold == 0.5 and info.cam_layer(plus=True) is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.flip_average = True


def test_code_that_runs_bundles_reads_the_typed_manifest_not_raw_keys():
    """No inline ``manifest.get(key, default)`` left where bundles run: the defaults are the dataclass's."""
    places = [REPO / "core" / "inference", REPO / "core" / "series", REPO / "core" / "batch", REPO / "core" / "export",
              REPO / "gui"]
    raw_read = re.compile(r"manifest(\.get\(|\[)")
    hits = [f"{path.relative_to(REPO)}:{n}" for place in places for path in sorted(place.rglob("*.py"))
            for n, line in enumerate(path.read_text().splitlines(), 1) if raw_read.search(line)]
    assert hits == []


def _schema_at(key: str) -> dict:
    node = SCHEMA
    for part in key.split("."):
        node = node["properties"][part]
    return node


def test_schema_and_dataclass_agree():
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["required"] == BundleManifest.required()
    assert set(SCHEMA["properties"]) == BundleManifest.top_level_keys()
    for key, default in BundleManifest.defaults().items():
        expected = list(default) if isinstance(default, tuple) else default  # JSON arrays read as lists
        assert _schema_at(key)["default"] == expected, key  # JSON null / {} compare equal to None / {}
    assert _schema_at("modality")["enum"] == list(MODALITIES)
    assert _schema_at("task")["enum"] == list(TASKS)
    for key, spec, choices in (("preprocessing", PreprocessSpec, PREPROCESS_CHOICES), ("tiling", TilingSpec, TILING_CHOICES),
                               ("film_scoring", FilmScoring, {})):
        node = _schema_at(key)
        assert node["additionalProperties"] is False
        assert set(node["properties"]) == {f.name for f in dataclasses.fields(spec)}, key
        for f in dataclasses.fields(spec):
            assert node["properties"][f.name]["default"] == f.default, (key, f.name)
            if f.name in choices:
                assert node["properties"][f.name]["enum"] == list(choices[f.name]), (key, f.name)
                assert f.default in choices[f.name]
    novelty = _schema_at("novelty")
    assert set(novelty["properties"]) == {f.name for f in dataclasses.fields(NoveltySpec)}
    assert novelty["required"] == [f.name for f in dataclasses.fields(NoveltySpec) if f.default is dataclasses.MISSING]
    assert novelty["properties"]["flag_above"]["default"] == NoveltySpec("f", SHA).flag_above
    assert BundleManifest.from_dict(_minimal(novelty={"file": "n.npz", "sha256": SHA})).novelty == NoveltySpec("n.npz", SHA)
    assert _schema_errors(_minimal()) == []


# ----- bad manifests: a ModelError naming the bundle folder and the field (and the schema refuses them too)
@pytest.mark.parametrize("key", BundleManifest.required())
def test_a_missing_required_field_is_named(key):
    manifest = _minimal()
    del manifest[key]
    with pytest.raises(ModelError, match=rf"^brain-x/manifest.json lacks the required field '{key}'$"):
        BundleManifest.from_dict(manifest, Path("/models/brain-x"))
    assert _schema_errors(manifest)


BAD = [
    ("version", 2, "version"),
    ("classes", "glioma", "classes"),
    ("classes", [], "classes"),
    ("flip_average", "yes", "flip_average"),
    ("min_lesion_px", 3.5, "min_lesion_px"),
    ("min_lesion_peak", 2, "min_lesion_peak"),
    ("decision_threshold", 1.5, "decision_threshold"),
    ("calibration", {"temperature": -1}, "calibration.temperature"),
    ("calibration", [1.0], "calibration"),
    ("input_size", [224, 224], "input_size"),
    ("title", None, "title"),
    ("gradcam_layer", 3, "gradcam_layer"),
    ("weights", "model.keras", "weights"),
    ("weights", {"file": "model.keras", "sha256": "abc"}, "weights.sha256"),
    ("weights", {"file": "", "sha256": SHA}, "weights.file"),
    ("preprocessing", {"colour": "rgb"}, "preprocessing.colour"),
    ("preprocessing", {"scale": "imagenet"}, "preprocessing.scale"),
    ("preprocessing", {"size": "224"}, "preprocessing.size"),
    ("tiling", {"tile": "big"}, "tiling.tile"),
    ("tiling", {"aggregate": "median"}, "tiling.aggregate"),
    ("tiling", {"scale": 0}, "tiling.scale"),
    ("film_scoring", {"top": 0}, "film_scoring.top"),
    ("film_scoring", {"mark_threshold": 1.5}, "film_scoring.mark_threshold"),
    ("film_scoring", {"colour": "red"}, "film_scoring.colour"),
    ("novelty", {"file": "novelty.npz"}, "novelty.sha256"),
    ("novelty", {"file": "novelty.npz", "sha256": SHA, "flag_above": 1.5}, "novelty.flag_above"),
    ("novelty", {"file": "novelty.npz", "sha256": SHA, "colour": "red"}, "novelty.colour"),
    ("novelty", {"file": "", "sha256": SHA}, "novelty.file"),
    ("architecture", [], "architecture"),
    ("architecture", {"trunk_file": "trunk.keras"}, "architecture.trunk_sha256"),
    ("architecture", {"feature_bundle": "parent", "feature_bundle_sha256": SHA}, "architecture.feature_layer"),
    ("architecture", {"encoder_bundle": "parent"}, "architecture.encoder_bundle_sha256"),
    ("architecture", {"average_with": {"weights": {"file": "start.keras"}}}, "architecture.average_with.weights.sha256"),
    ("changelog", "", "changelog"),
]


@pytest.mark.parametrize("kind", [{}, {"film_scoring": {}}, {"tiling": {}}], ids=["picture", "film", "tiles"])
def test_an_input_check_reads_a_picture_a_film_or_tiles(kind):
    info = BundleManifest.from_dict(_minimal(novelty={"file": "novelty.npz", "sha256": SHA}, **kind),
                                    Path("/models/brain-x"))
    assert info.novelty.file == "novelty.npz"


@pytest.mark.parametrize("key,value,named", BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_a_wrong_value_is_named(key, value, named):
    manifest = _minimal(**{key: value})
    with pytest.raises(ModelError, match=rf"^brain-x/manifest.json: '{re.escape(named)}' (must be|is) "):
        BundleManifest.from_dict(manifest, Path("/models/brain-x"))
    if named != "architecture.feature_layer":  # the schema does not say when a head needs its parent's layer
        assert _schema_errors(manifest), named


@pytest.mark.parametrize("key,value", [("task", "detection"), ("modality", "CT"), ("task", None)])
def test_an_unknown_task_or_modality_is_named_with_the_allowed_values(key, value):
    with pytest.raises(ModelError) as caught:
        BundleManifest.from_dict(_minimal(**{key: value}), "models/brain-x")
    message = str(caught.value)
    assert message.startswith(f"brain-x/manifest.json: '{key}' must be one of ") and repr(value) in message
    for allowed in (TASKS if key == "task" else MODALITIES):
        assert f"'{allowed}'" in message
    assert _schema_errors(_minimal(**{key: value}))


def test_not_an_object():
    with pytest.raises(ModelError, match="brain-x/manifest.json is not a JSON object"):
        BundleManifest.from_dict(["id"], "brain-x")


def test_absolute_paths_are_refused_by_name():
    with pytest.raises(ModelError, match=r"'changelog' is an absolute path"):
        BundleManifest.from_dict(_minimal(changelog="/etc/passwd"), "brain-x")
    with pytest.raises(ModelError, match=r"'architecture.backbone_file' is an absolute path"):
        BundleManifest.from_dict(_minimal(architecture={"backbone_file": "C:\\b.keras", "backbone_sha256": SHA}), "x")


# ----- the registry and Bundle use it
def test_loading_a_bundle_validates_its_manifest(tmp_path):
    root = tmp_path / "models"
    _bundle(root, "good", _minimal(id="good"))
    bad = _bundle(root, "bad", _minimal(id="bad", flip_average="yes"))
    _bundle(root, "escape", _minimal(id="escape", changelog="../../CHANGELOG.md"))
    registry = Registry([root])
    assert sorted(registry.bundles) == ["good"]
    assert any(p.startswith("bad: bad/manifest.json: 'flip_average' must be true or false") for p in registry.problems)
    assert any(p.startswith("escape:") and "outside the bundle" in p for p in registry.problems)
    with pytest.raises(ModelError, match="'flip_average'"):
        Bundle.from_folder(bad)
    good = registry.get("good")
    assert good.changelog is None and good.summary()["changelog"] is None  # a bundle without CHANGELOG.md
    (good.folder / "CHANGELOG.md").write_text("- 1 (today): first\n")
    assert good.changelog == good.folder / "CHANGELOG.md"


def test_unknown_keys_are_kept_and_the_raw_manifest_still_works(tmp_path):
    folder = _bundle(tmp_path, "tool", _minimal(id="tool", my_tool={"run": 3}, training={"data": "x"}))
    bundle = Bundle.from_folder(folder)
    assert bundle.info.extra == {"my_tool": {"run": 3}, "training": {"data": "x"}}
    assert bundle.manifest["my_tool"] == {"run": 3}  # training tools read and write the raw dict


def test_a_manifest_changed_in_place_is_read_again(tmp_path):
    """Training tools and tests set fields of a loaded bundle's raw manifest; the typed one follows."""
    bundle = Bundle.from_folder(_bundle(tmp_path, "b", _minimal(id="b", tiling={"tile": 32})))
    first = bundle.info
    assert bundle.info is first  # parsed once while unchanged
    bundle.manifest["flip_average"] = True
    bundle.manifest.update(gradcam_layer="conv", calibration={"temperature": 2.0})
    assert bundle.info.flip_average and bundle.cam_layer(plus=True) == "conv" and bundle.temperature == 2.0
    bundle.manifest["tiling"]["stride"] = 16  # nested
    assert bundle.tiling == TilingSpec(tile=32, stride=16)
    bundle.manifest.pop("flip_average")
    assert bundle.info.flip_average is False
    bundle.manifest["note_of_a_tool"] = 1  # not a typed field: no new parse needed
    info = bundle.info
    bundle.manifest["another"] = 2
    assert bundle.info is info


def test_the_typed_manifest_does_not_share_nested_dicts_with_the_raw_one():
    raw = _minimal(architecture={"backbone": "tiny", "average_with": {"weights": {"file": "s.keras", "sha256": SHA}}})
    info = BundleManifest.from_dict(raw)
    kept = copy.deepcopy(info.architecture)
    raw["architecture"]["average_with"]["weights"]["file"] = "other.keras"
    assert info.architecture == kept
    assert [w for w, _, _ in info.files()] == ["weights", "architecture.average_with.weights"]
