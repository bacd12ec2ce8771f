"""One config per shipped bundle: adding a bundle (e.g. BreakHis histology) is one more entry."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
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
    loss: str = "bce+dice"  # segmentation: "bce", "dice", "tversky" or "bce+dice"
    tiling: TilingSpec | None = None  # classify tiles of large images (histology)
    zoom_out: tuple[float, float] = (1.0, 1.0)  # augmented tiles cover 1x..Nx the tile area (lower magnification)
    tile_labels_from_circles: bool = False  # tile label = abnormal where an annotation circle reaches in
    # A trained bundle whose frozen network this one builds on. A classifier: its fine-tuned top block's
    # pooled features, and a Dense layer trained also on its data with classes mapped to ours
    # (core.training.transfer). A segmenter: its encoder pooled under its lesion map (core.training.lesion_pooled).
    feature_bundle: str | None = None
    feature_class_map: dict[str, str] = field(default_factory=dict)
    val_fraction: float = 0.2
    notes: str = ""  # plain-words caveats for the model card's Limits section
    seed: int = 0
    version: str = "1.0.0"

    @property
    def data_path(self) -> Path:
        root = Path(self.root)
        return root if root.is_absolute() else DATA_ROOT / root

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
        if self.weights.startswith("bundle:"):
            return self._bundle_backbone(self.weights.removeprefix("bundle:"))
        tag = {"none": "random", "imagenet": "imagenet"}.get(self.weights, Path(self.weights).stem)
        path = CACHE_ROOT / "backbones" / f"{self.arch}-{tag}.keras"
        if not path.exists():
            backbone = build_backbone(self.arch, None if self.weights == "none" else self.weights)
            backbone.trainable = False
            save_keras_fp16(backbone, path)
        return path

    def _bundle_backbone(self, bundle_id: str) -> Path:
        """The shipped classifier ``bundle_id`` as one frozen backbone file, named by its version and weights,
        so a retrained classifier never passes for the one a bundle was trained on."""
        bundle = Bundle.from_folder(REPO / "models" / bundle_id)
        info = bundle.info
        path = CACHE_ROOT / "backbones" / f"{self.arch}-{bundle_id}-{info.version}-{info.weights.sha256[:8]}.keras"
        if not path.exists():
            backbone = assemble_backbone(self.arch, bundle.trunk_and_head())
            backbone.trainable = False
            save_keras_fp16(backbone, path)
        return path


# Brain MRI: cropped to the head, kept square (padded, not stretched) and its grey levels set by the head's own
# tissue, so a slice from any scanner or window looks like the training slices.
MRI = PreprocessSpec(size=224, color="grey3", crop="foreground", aspect="pad", intensity="tissue")
US_SEGMENTER = PreprocessSpec(size=256, color="grey3", crop="none")  # shared by the classifier on its encoder
CONFIGS: dict[str, BundleConfig] = {
    c.id: c
    for c in [
        BundleConfig(
            id="brain-mri-tumor-4class",
            modality="MR",
            task="classification",
            title="Brain tumour type from one MRI slice",
            reader="brain_mri_all",
            root=".",
            classes=["glioma", "meningioma", "notumor", "pituitary"],
            spec=MRI,
            top_from="block11_sepconv1_act",
            augmented_views=0,  # 2 up to 1.4; none for 2.0, continued from 1.4 (each cached view of its 7k slices: 25+ min here)
            epochs_finetune=2,  # 2.0: the 2nd epoch raised validation loss (0.152 -> 0.166), so the 1st is kept
            lr_whole=1e-4,
            # 2.0: every brain source at once (Kaggle 4-class incl. figshare patients, LGG FLAIR tumour and tumour-free
            # slices of every level), grouped by patient, head-tissue intensity and padded crop; phases 1-2 from 1.4's
            # network (its trunk frozen, its top block and head continued). History: models/<id>/CHANGELOG.md.
            init_from_written=True,
            epochs_whole=0,
            version="2.0.0",
            notes="Sources, sequences and planes: the Kaggle Brain Tumor MRI set (figshare contrast-enhanced T1 slices of "
                  "204 patients of one hospital, axial, coronal and sagittal; SARTAJ and Br35H slices of mixed sequences "
                  "and planes) and every axial FLAIR slice of 60 TCGA lower-grade glioma patients (tumour slices 'glioma', "
                  "tumour-free slices of the same scans, skull base to vertex, 'notumor'). No post-contrast T1 of a "
                  "tumour patient's tumour-free slices, no DWI, no CT was trained on.\n"
                  "Split: version 1.4's 965 Kaggle validation slices stay validation slices (2.0 continues 1.4's network, "
                  "which was fitted on the rest), and 12 of the 60 LGG patients are validation patients. 280 of the 287 "
                  "figshare validation slices share a patient with training slices (1.4's split grouped near-duplicates, "
                  "not patients): read the figshare row as same-patient accuracy; the LGG row is new patients.\n"
                  "What 'notumor' rules out: it is one slice's call. On the LGG validation patients some tumour slices "
                  "(mostly small FLAIR abnormalities at a tumour's upper or lower edge) are still called 'notumor' (see "
                  "'findings called a finding' above): a 'notumor' slice does not rule out a tumour in the scan, and a "
                  "'notumor' on a CT or T2 slice rules nothing out (a CT meningioma of the validation split is called "
                  "'notumor'). Read a whole series (the series verdict) rather than one slice.\n"
                  "Backbone route: the published recipe uses ResNet50V2, whose ImageNet weights cannot be obtained offline "
                  "here; the ImageNet Xception shipped with the project is used instead. History: CHANGELOG.md.\n",
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
            feature_bundle="brain-mri-tumor-4class",
            feature_class_map={"notumor": "no", "glioma": "yes", "meningioma": "yes", "pituitary": "yes"},
            epochs_head=40,
            version="2.0.0",  # refitted on the 4-class 2.0 (every brain source); history: models/<id>/CHANGELOG.md
            notes="Label noise, checked by viewing version 1.0's validation disagreements: 'N19.JPG' (a ring-enhancing "
                  "lesion with oedema) and 'N22.JPG' (a round temporal mass) are filed under 'no' but show what looks like "
                  "a mass; 'Y115.JPG' (a large extra-axial fluid space) and 'Y117.JPG' are filed 'yes'. On 30 validation "
                  "images one image moves accuracy by 3.3 points: the per-source rows (the 4-class model's validation "
                  "slices read as tumour vs none, LGG patients included) are the steadier numbers. A 'no' is one slice's "
                  "call and does not rule out a tumour in the scan (see 'findings called a finding' for LGG).\n",
        ),
        BundleConfig(
            id="breast-us-3class",
            modality="US",
            task="classification",
            title="Breast ultrasound: benign, malignant or normal",
            # 4.0: version 3.0's network (Xception fine-tuned whole on BUSI) continued on BUSI + BUS-BRA: its trunk
            # below block 11 frozen, block 11 up and the head trained on cached views, split by patient (BUS-BRA
            # Case; BUSI's images keep 3.0's sides, the segmenter's). Trials of 1.0-3.0: the bundle's CHANGELOG.md.
            reader="breast_ultrasound",
            root=".",
            classes=["benign", "malignant", "normal"],
            version="4.0.0",
            spec=US_SEGMENTER,
            top_from="block11_sepconv1_act",
            init_from_written=True,
            augmentation="filter+geometric+marks",
            augmented_views=1,  # 2 cached views cost 8 min each on 2 busy cores
            epochs_finetune=2,  # 4.0: 8 head epochs + 2 top-block epochs (11 min each on busy cores)
            batch_size=16,
            notes="Trained on BUSI (Egypt, one scanner; the only normal images) and BUS-BRA (Brazil, 4 scanners; "
                  "biopsy-proven benign and malignant lesions, no normal images): 'normal' was learnt from one "
                  "source only. Check the Grad-CAM heatmap before trusting a call: viewed on BUS-BRA's 'bus_0001-l.jpg' "
                  "(a malignant mass, called malignant at 52 %), most of the 'malignant' heat lies on the burned-in "
                  "annotation text ('QSE', 'MAMA ESQUERDA'), not on the mass, so the model may read scanner text "
                  "(the marks augmentation draws calipers and measurement text, not such labels). A 'benign' call does "
                  "not rule out malignancy.",
        ),
        BundleConfig(
            id="breast-mg-abnormal",
            modality="MG",
            task="classification",
            title="Mammogram (MLO): normal or abnormal",
            reader="mini_mias",
            root="mini_mias",
            classes=["normal", "abnormal"],
            # Not shipped: nothing tried beats chance convincingly (README). Image ROC AUC measured: whole
            # mammograms at 299 px 0.475; 128-px tiles, max aggregation 0.526 (5-fold CV by woman 0.633; its
            # single-tile AUC 0.804 was inflated by tiles of air); these breast-only tiles upsampled to 256 px:
            # tiles 0.68, images 0.40 on the 50 validation images (0.39 with only masses as positive tiles).
            # Each breast against the woman's other breast (frozen Xception features at 384x512 and their
            # difference, logistic regression, 5-fold by woman x 3 repeats over all 258): 0.56 (masses only 0.57).
            # Hand-made detection features (white top-hat specks, difference-of-Gaussian blob contrast, intensity;
            # also minus the other breast's; logistic regression, same folds): 0.48, bilateral 0.53.
            # Ceiling of a mass detector alone (from annotations.txt): 46 of the 91 abnormal images hold a mass;
            # masses ranked perfectly and the rest at chance give image AUC 0.75 < the 0.80 target.
            # At full resolution (200 um, breast search region, frozen multi-depth features, core.training.mammo_cv):
            # images 0.63-0.69 out of fold by woman (docs/models.md); not shipped.
            spec=PreprocessSpec(size=256, color="grey3", crop="none"),
            tiling=TilingSpec(tile=128, stride=96, min_tissue=0.3, tissue="radiograph", aggregate="max"),
            tile_labels_from_circles=True,
            augmentation="filter+geometric",
            augmented_views=2,
        ),
        BundleConfig(
            id="breast-us-lesion-seg",
            # 2.0: version 1.2's newer network continued whole on BUSI + BUS-BRA (4 scanners), split by patient
            # (BUS-BRA Case; BUSI's images keep 1.2's sides). Trials of 1.0-1.2: models/breast-us-lesion-seg/CHANGELOG.md.
            version="2.0.0",
            modality="US",
            task="segmentation",
            title="Breast ultrasound lesion outline",
            reader="breast_ultrasound",
            root=".",
            classes=["lesion"],
            spec=US_SEGMENTER,
            augmentation="filter",
            augmented_views=3,
            top_from="block8_sepconv1_act",
            epochs_head=4,
            epochs_finetune=3,
            init_from_written=True,
            epochs_whole=4,
            lr_whole=1e-4,
            augmentation_whole="filter+geometric+marks",
            batch_size=8,
            notes="Trained on two data sets (BUSI, Egypt; BUS-BRA, Brazil, 4 scanners); other scanners' images were not "
                  "seen. Version 1.1 missed lesions it had learnt to expect dark: on malignant masses brighter than "
                  "the tissue around them it outlined the acoustic shadow beneath them instead. Check the outline "
                  "against the image, above all for echogenic masses. On BUSI's 22 normal validation images it draws a false "
                  "lesion on 9 (version 1.2: 3): read an outline on an image the 3-class model calls 'normal' with doubt. "
                  "Validation: one grouped split (no cross-validation: one whole-network run costs 80 min on 2 cores); "
                  "version 1.2 on the same BUS-BRA images: Dice 0.593 [0.542-0.644].\n",
        ),
        BundleConfig(
            id="brain-mri-tumor-seg",
            version="1.0.0",
            modality="MR",
            task="segmentation",
            title="Brain tumour outline on one MRI slice",
            reader="brain_mri_masked",
            root=".",
            classes=["lesion"],
            spec=MRI,  # the classifiers' crop, padding and tissue intensity
            # Its encoder is the shipped 4-class classifier's network (fine-tuned on these sources), frozen: it
            # already responds to these tumours, where ImageNet features would leave all of it to the decoder.
            weights="bundle:brain-mri-tumor-4class",
            split_like="brain-mri-tumor-4class",
            augmentation="filter",
            augmented_views=0,  # each cached view of 3.7k slices' four skip maps takes 17 GB
            epochs_head=5,
            batch_size=8,
            notes="Trained on two sequences only: contrast-enhanced T1 (figshare, Cheng et al.: meningioma, glioma, "
                  "pituitary tumours, one hospital) and FLAIR (TCGA lower-grade gliomas: the FLAIR abnormality, which "
                  "includes oedema). An outline on another sequence (T2, DWI, non-contrast T1) or on a CT is outside "
                  "what it was fitted on. Its encoder is the 4-class classifier's network, frozen (only the U-Net decoder was "
                  "trained, on 2 CPU cores), so outlines are coarse: use the area and diameter as a rough guide. "
                  "Its split follows the 4-class classifier's (no validation slice trained the encoder or the decoder), "
                  "whose figshare validation slices were grouped by near-duplicates, not patients: 280 of the 287 "
                  "figshare validation slices share a patient with training slices, so the figshare row is same-patient "
                  "Dice; the LGG row is 12 patients no part of the model saw.\n",
        ),
        BundleConfig(
            id="breast-mg-lesion-seg",
            modality="MG",
            task="segmentation",
            title="Mammography abnormality region (mini-MIAS circles)",
            reader="mini_mias",
            root="mini_mias",
            classes=["normal", "abnormal"],
            # Not shipped: lesion Dice 0.145 at 256 px, 0.068 at 512 px (18 validation images with a circle).
            spec=PreprocessSpec(size=512, color="grey3", crop="foreground"),
            augmentation="filter",
            augmented_views=2,
            epochs_head=8,
            batch_size=8,
        ),
        BundleConfig(
            id="breast-histology-2class",
            modality="SM",
            task="classification",
            title="Breast H&E histology: benign or malignant",
            # 2.0: two labs (UCSB TMA cores + BACH microscopy, each split 75/25 by group), tiles resampled to 0.5 um
            # per pixel, stain handling chosen by leave-one-lab-out: `python -m core.training.lab_transfer cache |
            # measure | train` (the generic `train` does not know each image's scale). 1.0: UCSB alone, reader
            # ucsb_histology, Macenko, stain augmentation x4, zoom-out 1-3x. History: models/<id>/CHANGELOG.md.
            reader="two_lab_histology",
            root=".",
            classes=["benign", "malignant"],
            spec=PreprocessSpec(size=224, color="rgb", crop="none", stain="none"),
            tiling=TilingSpec(tile=224, stride=224, min_tissue=0.4, microns_per_pixel=0.5, assumed_microns_per_pixel=0.42),
            augmentation="hed-strong",  # Macenko instead (3.0 trial): worse on UCSB and BreakHis-style fields (CHANGELOG)
            augmented_views=1,
            mix="mixup",
            epochs_finetune=3,  # 6 in 1.0 (423 tiles); 2.0 has about 1.4k tiles per view on 2 CPU cores
            val_fraction=0.25,
            version="2.0.0",
            notes="Two labs: UCSB tissue-microarray cores (46, Gelasca et al. 2008) and BACH microscopy images (400, "
                  "ICIAR 2018 grand challenge, Portugal: normal + benign = benign, in situ + invasive = malignant; "
                  "licence CC BY-NC-ND, non-commercial research use only; the images are not in this repository). "
                  "Tiles are resampled to 0.5 um per pixel. The BACH copy used (michelevantini/dlproject) stores each "
                  "2048 x 1536 image at 1536 x 1536, its width squeezed by 3/4 (0.42 x 0.56 um per pixel), undone by the "
                  "tiling; UCSB's scale is not published and was estimated from nuclear size against BACH (0.36-0.45, "
                  "0.42 used). BACH publishes no patient ids with this copy: its groups are blocks of 10 consecutive "
                  "image numbers of one class merged with near-duplicate clusters, so same-patient images may still "
                  "straddle the split and its validation numbers may be optimistic. Training saw 0.42-0.56 um per pixel "
                  "only; a 200x or 400x picture (0.1 / 0.05 um per pixel) is smaller than one 112-um tile and is "
                  "mirrored out to fill it. Where the file states no scale (TIFF, DICOM, a BreakHis-style name) 0.42 um "
                  "per pixel (the training images' own) is assumed and the result says so: set the magnification. "
                  "Its validation images cut to BreakHis-style 700 x 460 pictures at 40-400x (`lab_transfer fields`, in "
                  "the card): right on 25 of 28 at 40x, 22 at 100x, 18 at 200x, 8 at 400x: do not rely on it for 200x or "
                  "400x pictures. Macenko normalisation, best leave-one-lab-out with the head alone, was trained as a "
                  "version 3.0 and measured worse (UCSB validation cores 9 vs 12 of 12, BreakHis-style pictures 57 vs "
                  "73 of 112): this version stays. "
                  "Two labs are still few: treat "
                  "the output as a second look, never as a diagnosis.\n",
        ),
    ]
}

DEFAULT_SOURCES = {c.id: (c.reader, c.root, c.arch, c.weights) for c in CONFIGS.values()}
