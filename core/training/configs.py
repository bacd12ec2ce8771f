"""A bundle's training recipe (BundleConfig), one JSON file per bundle under ``bundle_configs/``."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from core.models.backbones import TOP_BLOCK_START, assemble_backbone, build_backbone
from core.models.preprocessing import PreprocessSpec
from core.models.registry import Bundle
from core.models.storage import save_keras_fp16
from core.models.tiling import TilingSpec

REPO = Path(__file__).resolve().parents[2]
DATA_ROOT = Path(os.environ.get("MIDA_DATA", REPO.parent / "shared" / "data"))
CACHE_ROOT = Path(os.environ.get("MIDA_CACHE", Path.home() / ".cache" / "mida"))
# Frozen backbones shipped with the repository (ImageNet Xception, the only ImageNet weights available offline).
BACKBONES = {"xception": REPO / "models" / "backbones" / "xception-imagenet.keras"}


@dataclass
class BundleConfig:
    id: str
    modality: str
    task: str  # "classification" or "segmentation"
    title: str
    reader: str
    root: str  # relative to DATA_ROOT (or absolute)
    classes: list[str]
    spec: PreprocessSpec
    arch: str = "xception"
    # "imagenet" (the shipped file where there is one, else Keras' download or ~/.keras/models),
    # a local weights/.keras file, "bundle:<id>" (that shipped classifier's fine-tuned network, trunk and
    # top block, as one backbone), or "none" (random initialisation).
    weights: str = "imagenet"
    # First layer of the fine-tuned part; None = the arch's top block. Lower cuts unfreeze more
    # blocks (each Xception middle-flow block adds ~7 ms per 224-px training image on 2 CPU cores).
    top_from: str | None = None
    augmentation: str = "filter+geometric"
    augmented_views: int = 0  # extra cached views of each training image
    folder_to_class: dict[str, str] = field(default_factory=dict)
    dropout: float = 0.3
    epochs_head: int = 8
    epochs_finetune: int = 6
    lr_head: float = 1e-3
    lr_finetune: float = 1e-4
    # Phase 3 (core.training.whole_network): the whole network on freshly augmented images, at lr_whole.
    # 0 = off: about 195 ms per 224-px training image on 2 CPU cores; meant for a GPU.
    epochs_whole: int = 0
    lr_whole: float = 2e-5
    augmentation_whole: str | None = None  # phase 3's augmentation preset; None = ``augmentation``
    # Phase 3 starts from the written bundle in models/ (its trunk and head) instead of phases 1-2 rerun.
    whole_from_written: bool = False
    # Phase 3 from a written classifier: the targets mix its mirror-averaged probabilities (this weight) with the
    # labels, so that one view learns what the image and its mirror say together and the mirror can be dropped.
    distil_mirror: float = 0.0
    # Phases 1-2 start from the written bundle in models/: its trunk (below ``top_from``) stays frozen and is
    # stored as this bundle's own, its top block and head are where training starts (new data, same network).
    init_from_written: bool = False
    # Another bundle whose split this one follows for the images both use (e.g. a segmenter beside a classifier
    # of the same patients): no patient validates one model and trains the other.
    split_like: str | None = None
    # Segmenters: the bundle averages the probability maps of phase 3's result and of the network phase 3
    # started from (a snapshot ensemble; both stored, so it costs two networks' time per image).
    snapshot_ensemble: bool = False
    batch_size: int = 32
    mix: str | None = None  # "mixup" or "cutmix" on cached features of the top block input
    loss: str = "bce+dice"  # segmentation: one of core.training.losses.LOSS_NAMES
    tiling: TilingSpec | None = None  # classify tiles of large images (histology)
    zoom_out: tuple[float, float] = (1.0, 1.0)  # augmented tiles cover 1x..Nx the tile area (lower magnification)
    # A trained bundle whose frozen network this one builds on. A classifier: its fine-tuned top block's
    # pooled features, and a Dense layer trained also on its data with classes mapped to ours
    # (core.training.transfer). A segmenter: its encoder pooled under its lesion map (core.training.lesion_pooled).
    feature_bundle: str | None = None
    feature_class_map: dict[str, str] = field(default_factory=dict)
    val_fraction: float = 0.2
    notes: str = ""  # plain-words caveats for the model card's Limits section
    about: str = ""  # why this recipe, for whoever retrains it (not in the card; history: the bundle's CHANGELOG.md)
    seed: int = 0
    version: str = "1.0.0"

    @property
    def data_path(self) -> Path:
        root = Path(self.root)
        return root if root.is_absolute() else DATA_ROOT / root

    @property
    def weights_bundle(self) -> str | None:
        """The shipped classifier whose network is this bundle's backbone (weights ``bundle:<id>``), else None."""
        return self.weights.removeprefix("bundle:") if self.weights.startswith("bundle:") else None

    @property
    def whole_augmentation(self) -> str:
        """The augmentation phase 3 draws afresh each epoch."""
        return self.augmentation_whole or self.augmentation

    @property
    def top_block_start(self) -> str:
        """Where the trainable part starts; a transfer bundle uses its parent's cut."""
        if self.feature_bundle:
            return CONFIGS[self.feature_bundle].top_block_start
        return self.top_from or TOP_BLOCK_START[self.arch]

    @property
    def cache_dir(self) -> Path:
        """Per bundle, data source and backbone, so a retrain never reuses stale features."""
        default = DEFAULT_SOURCES.get(self.id)
        source = (self.reader, self.root, self.arch, self.weights)
        if default is None or default == source:
            return CACHE_ROOT / self.id
        return CACHE_ROOT / f"{self.id}-{hashlib.sha1(':'.join(source).encode()).hexdigest()[:8]}"

    @property
    def backbone_path(self) -> Path:
        """The frozen backbone file this bundle trains on and references (made once when not shipped).

        Materialising it once matters: a randomly initialised or downloaded backbone must be the very
        same weights for cached features, training and the written bundle.
        """
        if self.feature_bundle:
            return CONFIGS[self.feature_bundle].backbone_path
        shipped = BACKBONES.get(self.arch)
        if self.weights == "imagenet" and shipped is not None and shipped.exists():
            return shipped
        if self.weights.endswith(".keras"):
            return Path(self.weights)
        if self.weights_bundle:
            return self._bundle_backbone(self.weights_bundle)
        tag = {"none": "random", "imagenet": "imagenet"}.get(self.weights, Path(self.weights).stem)
        path = CACHE_ROOT / "backbones" / f"{self.arch}-{tag}.keras"
        if not path.exists():
            backbone = build_backbone(self.arch, None if self.weights == "none" else self.weights)
            backbone.trainable = False
            save_keras_fp16(backbone, path)
        return path

    def _bundle_backbone(self, bundle_id: str) -> Path:
        """The shipped classifier ``bundle_id`` as one frozen backbone file, named by the version and weights its
        network comes from (``network_origin``), so a retrained classifier never passes for the one a bundle was
        trained on; the models folder's copy where one ships, else made once in the cache."""
        bundle = Bundle.from_folder(REPO / "models" / bundle_id)
        version, sha = network_origin(bundle.folder)
        name = f"{self.arch}-{bundle_id}-{version}-{sha[:8]}.keras"
        if (REPO / "models" / "backbones" / name).exists():
            return REPO / "models" / "backbones" / name
        path = CACHE_ROOT / "backbones" / name
        if not path.exists():
            backbone = assemble_backbone(self.arch, bundle.trunk_and_head())
            backbone.trainable = False
            save_keras_fp16(backbone, path)
        return path


def network_origin(folder: Path) -> tuple[str, str]:
    """(version, head weights sha256) of the bundle whose network below the last Dense the bundle in ``folder``
    holds: its own, or, after a last-layer refit (core.training.refit_dense), the one it was refitted from."""
    manifest = json.loads((Path(folder) / "manifest.json").read_text())
    origin = manifest.get("training", {}).get("network_of")
    if origin:
        return origin["version"], origin["weights_sha256"]
    return manifest["version"], manifest["weights"]["sha256"]


CONFIG_DIR = Path(__file__).with_name("bundle_configs")


def load_config(path: Path) -> BundleConfig:
    """A bundle's recipe from its JSON file (fields as in BundleConfig; unset ones take its defaults)."""
    data = json.loads(path.read_text())
    unknown = set(data) - {f.name for f in fields(BundleConfig)}
    if unknown:
        raise ValueError(f"{path.name}: unknown config field(s) {', '.join(sorted(unknown))}")
    data["spec"] = PreprocessSpec.from_dict(data["spec"])
    data["tiling"] = TilingSpec.from_dict(data.get("tiling"))
    if "zoom_out" in data:
        data["zoom_out"] = tuple(data["zoom_out"])
    return BundleConfig(**data)


# One JSON file per bundle (core/training/bundle_configs/<id>.json): adding a bundle is adding a file.
CONFIGS: dict[str, BundleConfig] = {c.id: c for c in map(load_config, sorted(CONFIG_DIR.glob("*.json")))}

DEFAULT_SOURCES = {c.id: (c.reader, c.root, c.arch, c.weights) for c in CONFIGS.values()}
