"""Model bundle discovery, manifest validation, sha256 verification and cached lazy loading."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from core.app_paths import user_models
from core.errors import ModelError
from core.imaging.record import Modality
from core.models.intervals import accuracy_interval, interval_text
from core.models.manifest import BundleManifest, read_keys
from core.models.novelty import NoveltyReference
from core.models.preprocessing import PreprocessSpec
from core.models.storage import sha256_file
from core.models.tiling import TilingSpec

BUILTIN_MODELS = Path(__file__).resolve().parents[2] / "models"


def cam_layer_of(manifest: dict, plus: bool = False) -> str | None:
    """The layer Grad-CAM explains, or Grad-CAM++ where validation chose another one for it
    (``gradcam_plus_layer``, core.training.cam_layer), read from a raw manifest that training is still writing;
    a loaded bundle's is ``Bundle.cam_layer`` (its typed manifest)."""
    plain = manifest.get("gradcam_layer")
    return manifest.get("gradcam_plus_layer", plain) if plus else plain


@dataclass
class Bundle:
    """A bundle folder and its manifest; ``load()`` builds the Keras model once and caches it.

    ``manifest`` is the raw dict as read (training and its tools read and write all of it); ``info`` is the
    same checked and typed (core.models.manifest), which everything that runs the bundle reads. ``parents``
    finds a bundle this one builds on (the registry's own, so its loaded model is shared); without it, a
    standalone bundle looks for the folder beside its own. ``stem_taps``: layers whose outputs this bundle's
    stem also hands out, the skip maps of the segmenters whose ``encoder_bundle`` it is (set before its
    stages are split, so that one stem serves them all).
    """

    folder: Path
    manifest: dict
    parents: Callable[[str], "Bundle"] | None = field(default=None, repr=False)
    stem_taps: tuple[str, ...] = ()
    _model: object = field(default=None, repr=False)
    _stages: object = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _info: BundleManifest | None = field(default=None, repr=False)
    _info_of: dict | None = field(default=None, repr=False)

    @classmethod
    def from_folder(cls, folder: Path) -> "Bundle":
        """The bundle written in ``folder``, outside any registry (training, evaluation, a parent beside it);
        its manifest is checked as the registry checks it (ModelError where it is not valid)."""
        manifest = json.loads(_manifest_text(folder / "manifest.json"))
        bundle = cls(folder, manifest)
        bundle._info, bundle._info_of = _validate(folder, manifest), copy.deepcopy(read_keys(manifest))
        return bundle

    @property
    def info(self) -> BundleManifest:
        """The typed manifest, read again where ``manifest`` was changed in place (training tools and tests set
        a loaded bundle's ``flip_average``, ``gradcam_layer``, ...)."""
        if self._info is None or read_keys(self.manifest) != self._info_of:
            self._info = BundleManifest.from_dict(self.manifest, self.folder)
            self._info_of = copy.deepcopy(read_keys(self.manifest))
        return self._info

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def version(self) -> str:
        return self.info.version

    @property
    def modality(self) -> Modality:
        return self.info.modality

    @property
    def task(self) -> str:
        return self.info.task

    @property
    def classes(self) -> list[str]:
        return list(self.info.classes)

    @property
    def spec(self) -> PreprocessSpec:
        return self.info.preprocessing

    @property
    def temperature(self) -> float:
        return self.info.temperature

    @property
    def tiling(self) -> TilingSpec | None:
        return self.info.tiling

    @property
    def gradcam_layer(self) -> str | None:
        return self.info.gradcam_layer

    def cam_layer(self, plus: bool = False) -> str | None:
        return self.info.cam_layer(plus)

    @property
    def changelog(self) -> Path | None:
        """The bundle's CHANGELOG.md (its manifest's ``changelog``) where the file exists."""
        try:
            path = contained_file(self.folder, self.info.changelog)
        except ModelError:
            return None
        return path if path.is_file() else None

    def summary(self) -> dict:
        info = self.info
        metrics = _stated_numbers(info.extra.get("validation_metrics"))
        changelog = self.changelog
        return {
            "id": info.id,
            "version": info.version,
            "modality": info.modality.value,
            "task": info.task,
            "title": info.title,
            "architecture": info.architecture.get("backbone") or "",
            "classes": self.classes,
            "metrics": {k: metrics[k] for k in ("accuracy", "roc_auc", "ece", "dice", "iou", "n") if k in metrics},
            "interval": _headline_interval(metrics),
            "folder": str(self.folder),
            "changelog": str(changelog) if changelog else None,
            # the input check's threshold (core.models.novelty): pictures farther than this share of held-out
            # pictures (validation images, a film detector's films out of fold) are called unusual; None: no check
            "input_check": info.novelty.flag_above if info.novelty else None,
        }

    def _verified(self, relative: str, expected: str) -> Path:
        path = contained_file(self.folder, relative)  # raises ModelError outside the bundle or not a file
        try:
            if not path.exists():
                raise ModelError(f"model '{self.id}': file {relative} is missing")
            if not stat.S_ISREG(path.stat().st_mode):
                raise ModelError(f"model '{self.id}': {relative} is not a regular file - refusing to read it")
            actual = sha256_file(path)
        except OSError as exc:  # no permission to read it, an I/O error
            raise ModelError(f"model '{self.id}': {relative} cannot be read ({exc.strerror or exc})") from exc
        if actual != expected:
            raise ModelError(f"model '{self.id}': {path.name} does not match its manifest (sha256 {actual[:12]}... "
                             f"instead of {expected[:12]}...); the file is damaged or was replaced - refusing to load it")
        return path

    def verify_present_files(self) -> None:
        """Each network file of this bundle and of the bundles it builds on that is there matches its manifest's
        sha256 (a ModelError where one does not). Why: an export (core.models.exports) runs the network the manifest
        describes, so a bundle whose weights were replaced since would run its old network where TensorFlow refuses
        the bundle; files that are not there pass, as the frozen app ships the exports without the Keras files."""
        for _, relative, sha256 in self.info.files():
            if contained_file(self.folder, relative).exists():
                self._verified(relative, sha256)
        arch = self.info.architecture
        for key in ("feature_bundle", "encoder_bundle"):
            if arch.get(key) and self.parents is not None:
                try:
                    parent = self.parents(arch[key])
                except (OSError, ValueError, ModelError):  # not there: the export was made without it (fingerprint)
                    continue
                parent.verify_present_files()

    def novelty_reference(self) -> NoveltyReference | None:
        """The bundle's novelty reference (core.models.novelty), its file checked against the manifest; None where it
        has none (the analysis path refuses one fitted on another stem's features)."""
        spec = self.info.novelty
        if spec is None:
            return None
        return NoveltyReference.from_file(self._verified(spec.file, spec.sha256))

    def load(self):
        """The ready Keras model: image (N, H, W, 3) scaled per the manifest -> logits or mask."""
        with self._lock:
            if self._model is None:
                self._model = self._build()
            return self._model

    def stages(self):
        """The loaded model split where bundles built on one another share a stem (core.models.stages)."""
        from core.models.stages import split_stages

        model = self.load()
        with self._lock:
            if self._stages is None:
                info = self.info
                arch = info.architecture
                parent = self._parent(arch) if arch.get("feature_bundle") else self._encoder_parent(arch)
                self._stages = split_stages(self.id, self.network_sha256, self.task, arch, self.gradcam_layer,
                                            model, parent and parent.stages(), self.stem_taps)
            return self._stages

    @property
    def network_sha256(self) -> str:
        """One sha256 of the sha256s of every file the bundle's network is built of (weights, trunk, backbone, ...):
        what its stem's key names, so that a bundle whose backbone or trunk changed never shares or reuses the stem
        of the network it had before (core.models.stages, core.inference.onnx_export)."""
        return hashlib.sha256(" ".join(sha for _, _, sha in self.info.files()).encode()).hexdigest()

    def _encoder_parent(self, arch: dict) -> "Bundle | None":
        """The classifier bundle whose network this segmenter's frozen encoder is (``encoder_bundle``), where it
        is there at the version named and taps this encoder's skip maps; else None: the segmenter runs its own
        encoder, as it always can."""
        name = arch.get("encoder_bundle")
        if not name or self.task != "segmentation":
            return None
        try:
            if self.parents is None:
                standalone = Bundle.from_folder(self.folder.parent / name)
                standalone.stem_taps = tuple(arch.get("encoder_layers") or ())
                self.parents = lambda _: standalone
            parent = self.parents(name)
        except (OSError, ValueError, ModelError):
            return None
        shares = parent.info.weights.sha256 == arch.get("encoder_bundle_sha256") and parent.stem_taps
        return parent if shares else None

    def trunk_and_head(self):
        """The two parts ``_build`` composes a network of (image -> trunk -> head); of a snapshot ensemble,
        those of its newer network (the one its manifest describes, not ``average_with``)."""
        model = self.load()
        if "average_with" in self.info.architecture:
            model = model.get_layer(self.id)
        trunk, head = model.layers[1:]
        return trunk, head

    def pooled_at(self, layer: str):
        """(trunk, head up to ``layer``) of this classifier's loaded model: what a transfer bundle on it is
        trained on (core.training.transfer) and runs on."""
        import keras

        trunk, head = self.trunk_and_head()
        return trunk, keras.Model(head.input, head.get_layer(layer).output, name=f"{self.id}_features")

    def _load_keras(self, relative: str, sha256: str):
        """A verified Keras file of this bundle, loaded without running any code it might carry."""
        import keras

        path = self._verified(relative, sha256)
        try:
            return keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as exc:  # noqa: BLE001 - Keras raises many types; the message matters
            raise ModelError(f"model '{self.id}': {path.name} could not be loaded safely ({exc})") from exc

    def _build(self):
        import keras

        info = self.info
        arch = info.architecture
        if arch.get("feature_bundle_task") == "segmentation":
            return self._build_on_segmenter(arch)
        model = self._compose(arch, info.weights.file, info.weights.sha256, self.id)
        start = arch.get("average_with")
        if not start:
            return model
        # A snapshot ensemble: its probability maps averaged with those of the network it was continued from.
        other = self._compose(start, start["weights"]["file"], start["weights"]["sha256"], f"{self.id}_start")
        image = keras.Input(shape=self._input_size(), name="image")
        return keras.Model(image, keras.layers.Average(name="mean_probability")([model(image), other(image)]),
                           name=self.id)

    def _input_size(self) -> tuple[int, ...]:
        if self.info.input_size is None:
            raise ModelError(f"model '{self.id}': its manifest lacks 'input_size', which this network needs")
        return self.info.input_size

    def _compose(self, arch: dict, file: str, sha256: str, name: str):
        """image -> frozen or own trunk -> trained part, from an architecture entry and its weights file."""
        import keras

        part = self._load_keras(file, sha256)
        if arch.get("trunk_file"):  # fine-tuned whole: the bundle's own trunk below the trained part
            frozen = self._load_keras(arch["trunk_file"], arch["trunk_sha256"])
        elif arch.get("feature_bundle"):
            return self._build_on_classifier(arch, part)
        elif not arch.get("backbone_file"):
            return part
        else:
            from core.models.backbones import build_backbone, encoder, split_backbone

            backbone = build_backbone(arch["backbone"], self._verified(arch["backbone_file"], arch["backbone_sha256"]))
            if self.task == "segmentation":
                frozen = encoder(backbone, arch["backbone"], arch.get("encoder_layers"))
            else:
                frozen, _ = split_backbone(backbone, arch["backbone"], arch.get("top_block_start"))
        image = keras.Input(shape=self._input_size() if self.task == "segmentation" else (None, None, 3), name="image")
        return keras.Model(image, part(frozen(image)), name=name)

    def _parent(self, arch: dict) -> "Bundle":
        """The bundle this one builds on, refused unless it is the version it was fitted on.

        Standalone, the folder beside this one is read once, so the model and its stages share one copy.
        """
        try:
            if self.parents is None:
                standalone = Bundle.from_folder(self.folder.parent / arch["feature_bundle"])
                self.parents = lambda _: standalone
            parent = self.parents(arch["feature_bundle"])
        except (OSError, ValueError, ModelError) as exc:
            raise ModelError(f"model '{self.id}' needs the model '{arch['feature_bundle']}' ({exc})") from exc
        if parent.info.weights.sha256 != arch["feature_bundle_sha256"]:
            raise ModelError(f"model '{self.id}' was fitted on another version of '{parent.id}'; retrain it")
        return parent

    def _build_on_classifier(self, arch: dict, part):
        """A transfer bundle: the parent's (fine-tuned, frozen) trunk and head up to its pooling feed ``part``."""
        import keras

        trunk, pooled = self._parent(arch).pooled_at(arch["feature_layer"])
        image = keras.Input(shape=(None, None, 3), name="image")
        return keras.Model(image, part(pooled(trunk(image))), name=self.id)

    def _build_on_segmenter(self, arch: dict):
        """A classifier head over a segmenter bundle's encoder and lesion map (core.models.lesion_pooling)."""
        import keras

        from core.models.lesion_pooling import segmenter_features  # registers the head's pooling layer

        features = segmenter_features(self._parent(arch).load())
        head = self._load_keras(self.info.weights.file, self.info.weights.sha256)
        image = keras.Input(shape=self._input_size(), name="image")
        return keras.Model(image, head(features(image)), name=self.id)


def metrics_text(summary: dict) -> str:
    """A bundle summary's validation metrics as one line, the 95 % interval after the headline metric."""
    parts = [f"{k} {v:.3f}" for k, v in summary["metrics"].items() if k != "n"]
    if parts:
        parts[0] += interval_text(summary.get("interval"))
    return ", ".join(parts)


def _stated_numbers(metrics) -> dict:
    """The validation metrics a manifest states as numbers: finite values, ``n`` a whole number, a ``*_ci95`` two
    finite values. A user's manifest may hold null, "n/a" or text there: left out, never the bundle from the list."""
    def finite(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    def stated(key: str, value) -> bool:
        if key == "n":
            return isinstance(value, int) and not isinstance(value, bool) and value >= 0
        if key.endswith("_ci95"):
            return isinstance(value, list) and len(value) == 2 and all(map(finite, value))
        return finite(value)

    return {k: v for k, v in metrics.items() if stated(k, v)} if isinstance(metrics, dict) else {}


def _headline_interval(metrics: dict) -> list[float] | None:
    """95 % interval of the accuracy (Wilson, from accuracy and n), else of the lesion Dice or the ROC AUC (a film
    detector's, out of fold) as stored (bootstrap)."""
    if "accuracy" in metrics and metrics.get("n"):
        return list(accuracy_interval(metrics["accuracy"], metrics["n"]))
    return metrics.get("dice_ci95") or metrics.get("roc_auc_ci95")


SHARED_FOLDERS = ("backbones",)  # beside the bundles: files several bundles share (pretrained backbones)


def contained_file(folder: Path, relative) -> Path:
    """``relative`` resolved inside the bundle ``folder`` (or a shared folder beside it); anything else -
    an absolute path, ``..`` out of the bundle, a link leading elsewhere, not a string - is a ModelError."""
    if not isinstance(relative, str) or not relative or "\0" in relative:
        raise ModelError(f"{folder.name}: a file entry must be a non-empty relative path, not {relative!r}")
    if Path(relative).is_absolute():
        raise ModelError(f"{folder.name}: file {relative} is an absolute path; bundle files must lie in the bundle")
    try:
        base = folder.resolve()
        path = (base / relative).resolve()
        allowed = [base] + [(base.parent / shared).resolve() for shared in SHARED_FOLDERS]
    except (OSError, RuntimeError) as exc:  # a link loop
        raise ModelError(f"{folder.name}: file {relative} cannot be located ({exc}) - refusing to open it") from exc
    if not any(path == root or root in path.parents for root in allowed):
        raise ModelError(f"{folder.name}: file {relative} lies outside the bundle folder - refusing to open it")
    return path


MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # a manifest is a few kB; a bigger one (or /dev/zero) is not read whole


def _manifest_text(path: Path) -> str:
    """A manifest's text: a regular file of at most MAX_MANIFEST_BYTES (a pipe would wait for ever, a link to a
    device read without end); OSError otherwise."""
    with open(path, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NONBLOCK)) as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError("manifest.json is not a regular file")
        data = fh.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise OSError(f"manifest.json is larger than {MAX_MANIFEST_BYTES // 1024 ** 2} MB")
    return data.decode("utf-8")


def _validate(folder: Path, manifest: dict) -> BundleManifest:
    """The typed manifest of the bundle in ``folder`` (core.models.manifest checks its fields), each file it
    names confined to the bundle (or a shared folder beside it); ModelError otherwise."""
    info = BundleManifest.from_dict(manifest, folder)
    for _, file, _ in info.files():
        contained_file(folder, file)
    contained_file(folder, info.changelog)  # need not exist (bundles written before it, test bundles)
    return info


class Registry:
    """All bundles found in the built-in and user model folders.

    Ids are unique: a second bundle with an id already found (a user bundle reusing a built-in id) is
    skipped and listed in ``problems``, never silently put in the first one's place. A folder named twice
    (``MIDA_USER_MODELS`` set to the built-in folder) is read once.
    """

    def __init__(self, folders: list[Path] | None = None) -> None:
        distinct: dict[str, Path] = {}
        for folder in folders if folders is not None else [BUILTIN_MODELS, user_models()]:
            distinct.setdefault(os.path.realpath(folder), folder)
        self.folders = list(distinct.values())
        self.bundles: dict[str, Bundle] = {}
        self.problems: list[str] = []
        for root in self.folders:
            for manifest_file in self._manifest_files(Path(root)):
                try:
                    manifest = json.loads(_manifest_text(manifest_file))
                    info = _validate(manifest_file.parent, manifest)
                except RecursionError:
                    self.problems.append(f"{manifest_file.parent.name}: manifest.json is nested too deeply to read")
                    continue
                except (ValueError, TypeError, KeyError, OSError, ModelError) as exc:
                    self.problems.append(f"{manifest_file.parent.name}: {exc}")
                    continue
                first = self.bundles.get(info.id)
                if first is not None:
                    self.problems.append(f"{manifest_file.parent}: id '{info.id}' is already used by "
                                         f"{first.folder}; skipped (bundle ids must be unique)")
                    continue
                self.bundles[info.id] = Bundle(manifest_file.parent, manifest, parents=self.get,
                                               _info=info, _info_of=copy.deepcopy(read_keys(manifest)))
        self._drop_parent_loops()
        self._tap_encoder_bundles()

    def _drop_parent_loops(self) -> None:
        """A bundle that builds on itself, directly or through others (its ``feature_bundle`` or
        ``encoder_bundle``), is dropped with the reason: loading it would wait on itself for ever, and every
        analysis of its modality with it."""
        def parent(bundle_id: str) -> str | None:
            arch = self.bundles[bundle_id].info.architecture
            return arch.get("feature_bundle") or arch.get("encoder_bundle")

        looping = set()
        for start in self.bundles:
            chain, current = [], start
            while current in self.bundles and current not in chain:
                chain.append(current)
                current = parent(current)
            if current in chain:
                looping.update(chain[chain.index(current):])
        for bundle_id in sorted(looping):
            bundle = self.bundles.pop(bundle_id)
            self.problems.append(f"{bundle.folder.name}: model '{bundle_id}' builds on itself (through its "
                                 "feature_bundle or encoder_bundle); skipped")

    def _manifest_files(self, root: Path) -> list[Path]:
        """The manifest files of the bundle folders in ``root``; an entry that cannot be looked into (a link loop,
        a link to nothing) is a problem, never passed over in silence."""
        try:
            entries = sorted(root.iterdir())
        except FileNotFoundError:  # no user models folder
            return []
        except OSError as exc:
            self.problems.append(f"{root}: cannot be read ({exc.strerror or exc}); its bundles were skipped")
            return []
        manifests = []
        for entry in entries:
            try:
                entry.stat()
            except OSError as exc:
                self.problems.append(f"{entry.name}: cannot be opened ({exc.strerror or exc}); skipped")
                continue
            if os.path.lexists(entry / "manifest.json"):
                manifests.append(entry / "manifest.json")
        return manifests

    def _tap_encoder_bundles(self) -> None:
        """Each classifier that a segmenter of its own models folder names (at its version) as its
        ``encoder_bundle`` taps that segmenter's skip maps from its stem (core.models.stages). Taps change the
        classifier's network, hence its export's fingerprint: a user's segmenter on a shipped classifier leaves the
        shipped bundles (and the exports shipped with them) as they are; it runs its own encoder, or the shipped stem
        where that hands out every skip map it takes already."""
        for bundle in self.bundles.values():
            arch = bundle.info.architecture
            parent = self.bundles.get(arch.get("encoder_bundle") or "")
            if (bundle.task == "segmentation" and parent is not None and parent.folder.parent == bundle.folder.parent
                    and parent.info.weights.sha256 == arch.get("encoder_bundle_sha256")):
                new = [t for t in arch.get("encoder_layers") or () if t not in parent.stem_taps]
                parent.stem_taps += tuple(new)

    def get(self, bundle_id: str) -> Bundle:
        if bundle_id not in self.bundles:
            known = ", ".join(sorted(self.bundles)) or "none"
            # a bundle folder of that name that was skipped says why (its manifest is refused before its id is read)
            why = [p for p in self.problems if p.startswith(f"{bundle_id}:")]
            raise ModelError(f"no model with id '{bundle_id}' (available: {known})" + "".join(f"; {p}" for p in why))
        return self.bundles[bundle_id]

    def for_modality(self, modality: Modality) -> list[Bundle]:
        return [b for b in self.bundles.values() if b.modality == modality]
