"""One config per shipped bundle: adding a bundle (e.g. BreakHis histology) is one more entry."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from core.models.preprocessing import PreprocessSpec

REPO = Path(__file__).resolve().parents[2]
DATA_ROOT = Path(os.environ.get("MIDA_DATA", REPO.parent / "shared" / "data"))
CACHE_ROOT = Path(os.environ.get("MIDA_CACHE", Path.home() / ".cache" / "mida"))
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
    augmentation: str = "filter+geometric"
    augmented_views: int = 0  # extra cached views of each training image
    folder_to_class: dict[str, str] = field(default_factory=dict)
    dropout: float = 0.3
    epochs_head: int = 8
    epochs_finetune: int = 6
    lr_head: float = 1e-3
    lr_finetune: float = 1e-4
    batch_size: int = 32
    mix: str | None = None  # "mixup" or "cutmix" on cached features of the top block input
    loss: str = "bce+dice"  # segmentation: "bce", "dice", "tversky" or "bce+dice"
    val_fraction: float = 0.2
    seed: int = 0
    version: str = "1.0.0"

    @property
    def data_path(self) -> Path:
        root = Path(self.root)
        return root if root.is_absolute() else DATA_ROOT / root

    @property
    def cache_dir(self) -> Path:
        return CACHE_ROOT / self.id


MRI = PreprocessSpec(size=224, color="grey3", crop="foreground")
CONFIGS: dict[str, BundleConfig] = {
    c.id: c
    for c in [
        BundleConfig(
            id="brain-mri-tumor-4class",
            modality="MR",
            task="classification",
            title="Brain tumour type from one MRI slice",
            reader="class_folders",
            root="brain_mri_4class/train",
            classes=["glioma", "meningioma", "notumor", "pituitary"],
            spec=MRI,
        ),
        BundleConfig(
            id="brain-mri-tumor-yesno",
            modality="MR",
            task="classification",
            title="Brain tumour present or not from one MRI slice",
            reader="class_folders",
            root="brain_mri_yes_no",
            classes=["no", "yes"],
            spec=MRI,
            augmented_views=4,
        ),
        BundleConfig(
            id="breast-us-3class",
            modality="US",
            task="classification",
            title="Breast ultrasound: benign, malignant or normal",
            reader="image_mask_pairs",
            root="busi",
            classes=["benign", "malignant", "normal"],
            spec=PreprocessSpec(size=224, color="grey3", crop="none"),
            augmented_views=2,
        ),
        BundleConfig(
            id="breast-mg-abnormal",
            modality="MG",
            task="classification",
            title="Mammogram (MLO): normal or abnormal",
            reader="mini_mias",
            root="mini_mias",
            classes=["normal", "abnormal"],
            spec=PreprocessSpec(size=299, color="grey3", crop="foreground"),
            augmented_views=4,
        ),
        BundleConfig(
            id="breast-us-lesion-seg",
            modality="US",
            task="segmentation",
            title="Breast ultrasound lesion outline",
            reader="image_mask_pairs",
            root="busi",
            classes=["lesion"],
            spec=PreprocessSpec(size=256, color="grey3", crop="none"),
            augmentation="filter",
            augmented_views=2,
            epochs_head=14,
            batch_size=8,
        ),
        BundleConfig(
            id="breast-mg-lesion-seg",
            modality="MG",
            task="segmentation",
            title="Mammography abnormality region (mini-MIAS circles)",
            reader="mini_mias",
            root="mini_mias",
            classes=["normal", "abnormal"],
            spec=PreprocessSpec(size=256, color="grey3", crop="foreground"),
            augmentation="filter",
            augmented_views=3,
            epochs_head=14,
            batch_size=8,
        ),
        BundleConfig(
            id="breast-histology-2class",
            modality="SM",
            task="classification",
            title="Breast H&E histology: benign or malignant",
            reader="ucsb_histology",
            root="histology_ucsb",
            classes=["benign", "malignant"],
            spec=PreprocessSpec(size=224, color="rgb", crop="none"),
            augmentation="stain",
            augmented_views=4,
            mix="mixup",
        ),
    ]
}
