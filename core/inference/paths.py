"""One analysis path per bundle: what its manifest and network decide, resolved once, then run per image.

The Analyzer (core.inference.analyzer) builds a bundle's path when it first meets the bundle: its
preprocessing, its network split into a stem other bundles may share and a rest of its own
(core.models.stages), the layer each of Grad-CAM and Grad-CAM++ explains and the network it takes
gradients through, its tiling, temperature, flip averaging and mask settings. Analysing an image is
then one pass down: preprocess -> stem (content-addressed, shared across bundles) -> rest -> heatmap
or mask post-processing -> ModelResult, without asking the bundle for any of it again.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from core.errors import DiagnosticError, ImageLoadError, ModelError
from core.imaging.loader import load_image, read_header
from core.imaging.mammo_words import HEADER_KEYWORDS, MAGNIFIED_FACTOR, side_and_view, view_codes
from core.imaging.record import ImageRecord, Modality
from core.inference.device import configure_device
from core.inference.gradcam import GradCam
from core.inference.lesions import drop_small_components, drop_unsure_components, find_lesions
from core.inference.onnx_network import OnnxGradCam, OnnxModel
from core.inference.results import Finding, ModelResult
from core.models.mammography import (OtherBreast, blob_response, cad_marks, film_at_scale, film_score, search_region,
                                     search_tiles)
from core.models.manifest import BundleManifest
from core.models.novelty import NoveltyReference, novelty_warning, pooled
from core.models.preprocessing import ModelInputs, as_grey, preprocess
from core.models.registry import Bundle
from core.models.scale import Scale, assumed_warning, resolve_scale
from core.models.exports import Export
from core.models.stages import Stages, cam_site
from core.models.tile_stream import TilePlan
from core.models.tiling import aggregate, is_grey, tile_map, tiling_warnings

LOW_CONFIDENCE = 0.60  # below this calibrated probability the label is flagged as uncertain
# Stem outputs kept per preprocessed image row: an image and its mirror for the bundles that share a stem.
# A brain MR row with the segmenter's skip maps tapped is ~9 MB of float32 (block1_conv2_act alone 3 MB).
STEM_ROWS_KEPT = 8
TILE_BATCH = 16  # tiles cut, normalised and run at a time (core.models.tile_stream)


@dataclass(frozen=True)
class Request:
    """What the caller asks of every bundle for one image (``Analyzer.analyze``'s options).

    ``microns_per_pixel``: the image's scale set or confirmed by the user, for bundles that tile at a
    physical scale (else read from the file, or assumed with a warning: ``core.models.scale``).
    """

    gradcam: bool = True
    plus: bool = False  # Grad-CAM++ instead of Grad-CAM
    target_class: str | None = None  # the class the heatmap explains (None: the decided one)
    tta: bool = False
    microns_per_pixel: float | None = None
    other_breast: OtherBreast | None = None  # a mammogram's partner film, for film detectors
    frame: int = 0  # the frame of the record analysed (a film detector knows a film it read by file and frame)


class Compiled:
    """One Keras model's forward pass, compiled once: Keras ``predict`` costs ~50 ms of set-up per call on
    small batches."""

    def __init__(self, model) -> None:
        import tensorflow as tf

        self._call = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True, autograph=False)

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """The model's outputs for its inputs (one array per model input, N rows each)."""
        outputs = self._call([np.asarray(a, np.float32) for a in inputs] if len(inputs) > 1
                             else np.asarray(inputs[0], np.float32))
        return [o.numpy() for o in outputs] if isinstance(outputs, (list, tuple)) else [outputs.numpy()]


class StemRows:
    """Stem outputs by (stem key, hash of the preprocessed image row), shared by the paths of one Analyzer.

    Bundles built on one another share a stem (core.models.stages); an image row it already ran on, for
    one bundle or another, is not run again, so a pair of bundles costs one pass of the shared network per
    image. Content-addressed, so never stale; ``clear()`` it to time whole passes, set ``kept`` to 0 to
    keep no stem output beyond its own bundle's call.
    """

    def __init__(self, kept: int = STEM_ROWS_KEPT) -> None:
        self.kept = kept
        self._rows: OrderedDict[tuple[str, bytes], list[np.ndarray]] = OrderedDict()
        self._stems: dict[str, Compiled | OnnxModel] = {}  # by stem key: one stem however many bundles share it

    def clear(self) -> None:
        self._rows.clear()

    def inputs(self, stages: Stages, x: np.ndarray) -> list[np.ndarray]:
        """The inputs of ``stages.rest`` for the image batch ``x``: the stem outputs it picks."""
        if stages.stem is None:
            return [x]
        keys = [(stages.key, hashlib.blake2b(np.ascontiguousarray(row, np.float32).tobytes(), digest_size=16).digest())
                for row in x]
        todo = [i for i, key in enumerate(keys) if key not in self._rows]
        if todo:
            outputs = self.run_stem(stages, x[todo])
            for j, i in enumerate(todo):
                self._rows[keys[i]] = [out[j] for out in outputs]
        rows = [self._rows[key] for key in keys]
        for key in keys:
            self._rows.move_to_end(key)
        while len(self._rows) > self.kept:
            self._rows.popitem(last=False)
        rows = [stages.pick(row) for row in rows]  # before stacking: a stem shared with a segmenter hands out more
        return [np.stack([row[j] for row in rows]) for j in range(len(rows[0]))]

    def run_stem(self, stages: Stages, x: np.ndarray) -> list[np.ndarray]:
        """One pass of the stem over the rows of ``x`` that no cached output covers."""
        if stages.key not in self._stems:
            self._stems[stages.key] = stages.stem if isinstance(stages.stem, OnnxModel) else Compiled(stages.stem)
        return self._stems[stages.key]([x])


class Network:
    """A loaded bundle network as its path runs it: the stem it may share (through ``StemRows``), its own
    rest, and its Grad-CAM graphs by layer. One per bundle weights: a manifest setting changed in place (flip
    averaging, a threshold) gives a new path on the same network, never a reload. ``KerasNetwork`` runs it on
    TensorFlow, ``OnnxNetwork`` on ONNX Runtime from the bundle's export; the path cannot tell them apart."""

    device = "CPU"

    def __init__(self, stages: Stages, stem_rows: StemRows) -> None:
        self.stages = stages
        self.stem_rows = stem_rows
        # By the layer explained; None: the rest's first input. Built on first use: a method never asked
        # for (Grad-CAM++, or any Grad-CAM in series and batch runs without heatmaps) costs nothing.
        self.gradcams: dict[str | None, object] = {}

    def inputs(self, x: np.ndarray) -> list[np.ndarray]:
        """The inputs of the rest for the image batch ``x``."""
        return self.stem_rows.inputs(self.stages, x)

    def forward(self, x: np.ndarray, rest_inputs: list[np.ndarray] | None = None) -> np.ndarray:
        """The bundle's output for the image batch ``x`` (``rest_inputs``: its stem outputs where already at hand)."""
        return self._rest(self.inputs(x) if rest_inputs is None else rest_inputs)[0]

    def gradcam(self, layer: str | None, x: np.ndarray, target: int | None, plus: bool,
                rest_inputs: list[np.ndarray] | None = None):
        """(logits, heatmaps, class index used) for the batch ``x`` at ``layer``; None: the activation the stem
        hands the rest. A layer inside the rest takes its gradients through the rest alone too; any other,
        through the whole network from the image. ``rest_inputs``: as for ``forward``."""
        if layer not in self.gradcams:
            self.gradcams[layer] = self._gradcam(layer)
        cam, on_rest = self.gradcams[layer]
        if not on_rest:
            return cam([x], target, plus)
        return cam(self.inputs(x) if rest_inputs is None else rest_inputs, target, plus)

    @property
    def channels(self) -> int | None:
        """The length of the output's last axis (a classifier's logits, a segmenter's maps); None: left open."""
        raise NotImplementedError

    def _rest(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def _gradcam(self, layer: str | None) -> tuple[object, bool]:
        """(Grad-CAM callable, whether it takes the rest's inputs rather than the image) for ``layer``."""
        raise NotImplementedError


class KerasNetwork(Network):
    """The bundle's Keras model on TensorFlow (GPU where there is one), its rest compiled once."""

    def __init__(self, bundle: Bundle, stem_rows: StemRows) -> None:
        self.device = configure_device()  # before a network loads: GPU memory growth is set before TF meets the GPU
        super().__init__(bundle.stages(), stem_rows)
        self.model = bundle.load()
        self._compiled_rest = Compiled(self.stages.rest)

    @property
    def channels(self) -> int | None:
        return self.stages.rest.outputs[0].shape[-1]

    def _rest(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return self._compiled_rest(inputs)

    def _gradcam(self, layer: str | None) -> tuple[object, bool]:
        if layer is None:
            return GradCam(self.stages.rest, None), True
        if cam_site(self.stages, layer, None) == "rest":
            return GradCam(self.stages.rest, layer), True
        return GradCam(self.model, layer), False


class OnnxNetwork(Network):
    """The bundle's export (core.models.exports) on ONNX Runtime: no TensorFlow."""

    device = "CPU (ONNX Runtime)"

    def __init__(self, export: Export, stem_rows: StemRows) -> None:
        stem = OnnxModel(export.stem, export.hashes[export.stem]) if export.stem is not None else None
        super().__init__(Stages(export.stem_key, stem, None, export.cam, export.picks), stem_rows)
        self.export = export
        self._rest_model = OnnxModel(export.rest, export.hashes[export.rest])

    @property
    def channels(self) -> int | None:
        last = self._rest_model.output_shapes[0][-1]
        return last if isinstance(last, int) else None

    def _rest(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return self._rest_model(inputs)

    def _gradcam(self, layer: str | None) -> tuple[object, bool]:
        cam = self.export.cams.get(layer or "")
        if cam is None:
            raise ModelError(f"model '{self.export.bundle}': its ONNX export has no Grad-CAM graph for "
                             f"{layer or 'its stem activation'}; export it again (python main.py models export)")
        return OnnxGradCam(cam), cam.on_rest


def load_network(bundle: Bundle, stem_rows: StemRows, export: Export | None) -> Network:
    """The bundle's network on ONNX Runtime where ``export`` is given (the bundle's own files checked first, as
    TensorFlow would check them), else on TensorFlow."""
    if export is not None:
        bundle.verify_present_files()
        return OnnxNetwork(export, stem_rows)
    try:
        return KerasNetwork(bundle, stem_rows)
    except ImportError as exc:  # the frozen app: exports only
        raise ModelError(f"model '{bundle.id}' has no ONNX export that matches it and this installation has no "
                         f"{exc.name or 'TensorFlow'} to run it: export it from a source installation "
                         "(python main.py models export) or reinstall the app") from exc


class AnalysisPath:
    """preprocess -> network -> post-processing for one bundle, from its typed manifest ``info``."""

    def __init__(self, info: BundleManifest, network: Network, novelty: NoveltyReference | ModelError | None = None
                 ) -> None:
        """``novelty``: the bundle's input-check reference (core.models.novelty), or why it could not be read (the
        model still answers, each result saying that its input was not checked)."""
        self.info, self.network, self.device = info, network, network.device
        self.spec = info.preprocessing
        self.flip_average = info.flip_average
        # An export's stem key adds '#' and the outputs it hands out (core.inference.onnx_export); the network and
        # the cut are the part before it.
        if isinstance(novelty, NoveltyReference) and (network.stages.stem is None
                                                      or novelty.stem != (network.stages.key or "").partition("#")[0]):
            # Distances in another network's feature space would mean nothing.
            novelty = ModelError(f"its novelty reference was fitted on another network's features ({novelty.stem}; "
                                 f"this network's stem is {network.stages.key or 'none'}): fit it again "
                                 "(python -m core.training.novelty)")
        self.novelty = novelty if isinstance(novelty, NoveltyReference) else None
        why = str(novelty).removeprefix(f"model {info.id!r}: ")
        self.unchecked = None if novelty is None or self.novelty is not None else \
            f"Input not checked: {info.id}'s input check could not be used ({why})."

    def features(self, x: np.ndarray) -> np.ndarray:
        """(N, D) features of the image batch ``x`` that the novelty reference reads (``stem_features``)."""
        return stem_features(self.network.inputs(x))

    def rest_inputs(self, batch: np.ndarray) -> list[np.ndarray] | None:
        """The stem's outputs for ``batch``, taken once where the input check reads them too; None without a check."""
        return self.network.inputs(batch) if self.novelty is not None else None

    def check_input(self, result: ModelResult, rest_inputs: list[np.ndarray] | None) -> None:
        """The input check's share and warning on ``result``, from the stem outputs of a batch whose first row is
        the picture (its mirror may follow); or the warning that the check could not be used."""
        self.check_features(result, stem_features([rows[:1] for rows in rest_inputs]) if self.novelty else None)

    def check_features(self, result: ModelResult, features: np.ndarray | None) -> None:
        """``check_input`` from the picture's (1, D) features (a film's or a tiled picture's: its tiles' mean; None:
        nothing to check, a film without breast tiles)."""
        if self.novelty is not None:
            if features is None:
                return
            result.novelty = float(self.novelty.share_closer(self.novelty.distances(features))[0])
            if result.novelty > self.info.novelty.flag_above:
                result.warnings.append(novelty_warning(self.info.id, result.novelty, self.info.modality.value))
        elif self.unchecked:
            result.warnings.append(self.unchecked)

    def run(self, picture: np.ndarray | ModelInputs, request: Request, record: ImageRecord | None = None) -> ModelResult:
        """The bundle's result for the display picture (or its ModelInputs, which bundles analysing the same
        picture share; ``record``: the image it comes from, for its scale and pixel spacing)."""
        raise NotImplementedError

    def _result(self, **fields) -> ModelResult:
        return ModelResult(self.info.id, self.info.version, self.info.task, self.device, **fields)


class ClassifierPath(AnalysisPath):
    """A whole-image classifier: logits (averaged with the mirror's where validation chose it), calibrated
    probabilities, Grad-CAM or Grad-CAM++ at the layer each explains, test-time augmentation."""

    def __init__(self, info: BundleManifest, network: Network, novelty: NoveltyReference | ModelError | None = None
                 ) -> None:
        super().__init__(info, network, novelty)
        self.classes = list(info.classes)
        self.temperature = info.temperature
        # The layer each method explains, None where that is the activation the shared stem hands the rest
        # (gradients through the rest alone); a bundle explained elsewhere takes them through its whole network.
        self.cam_layers: dict[bool, str | None] = {}
        if info.gradcam_layer:
            for plus in (False, True):
                layer = info.cam_layer(plus)
                on_input = cam_site(network.stages, layer, info.gradcam_layer) == "input"
                self.cam_layers[plus] = None if on_input else layer

    def gradcam(self, x: np.ndarray, target: int | None, plus: bool, rest_inputs: list[np.ndarray] | None = None):
        """(logits, heatmaps, class index used) for the batch ``x``, at the method's layer (``rest_inputs``: its stem
        outputs where already at hand)."""
        return self.network.gradcam(self.cam_layers[plus], x, target, plus, rest_inputs)

    def _tiles(self, batches: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """(logits, (1, D) stem features averaged) of the tiles in ``batches``: the stem's outputs of each batch serve
        the rest and the input check; the features are summed as they come (a large picture at a coarse scale can
        have 10^5 tiles), None where the network has no stem."""
        logits, total, count = [], None, 0
        for batch in batches:
            rest_inputs = self.network.inputs(batch)  # the batch itself where the network has no stem
            logits.append(self.network.forward(batch, rest_inputs))
            if self.network.stages.stem is not None:
                found = stem_features(rest_inputs).sum(axis=0, keepdims=True)
                total, count = (found if total is None else total + found), count + len(batch)
        return (np.concatenate(logits) if logits else np.zeros((0, len(self.classes))),
                None if total is None else total / count)

    def _target(self, target_class: str | None) -> int | None:
        if target_class is None:
            return None
        if target_class not in self.classes:
            raise ModelError(f"'{target_class}' is not a class of {self.info.id} ({', '.join(self.classes)})")
        return self.classes.index(target_class)

    def _classified(self, probs: np.ndarray, **fields) -> ModelResult:
        result = self._result(classes=list(self.classes),
                              probabilities={c: float(p) for c, p in zip(self.classes, probs)}, **fields)
        result.label = self.classes[int(np.argmax(probs))]
        return result

    def run(self, picture: np.ndarray | ModelInputs, request: Request, record: ImageRecord | None = None) -> ModelResult:
        target = self._target(request.target_class)
        x, box, display = ModelInputs.of(picture).made(self.spec)
        x = x[None]
        # With flip averaging the image and its mirror go through in one batch and their logits are averaged;
        # the heatmap explains the unmirrored image for the decided class.
        inputs = np.concatenate([x, x[:, :, ::-1]]) if self.flip_average else x
        rest_inputs = self.rest_inputs(inputs)
        cams = None
        if request.gradcam and self.cam_layers:
            input_logits, cams, own = self.gradcam(inputs, target, request.plus, rest_inputs)
        else:
            input_logits = self.network.forward(inputs, rest_inputs)
        logits = input_logits.mean(axis=0, keepdims=True)
        chosen = np.argmax(logits, axis=1) if target is None else np.array([target])
        heatmap = None
        if cams is not None:
            if own[0] != chosen[0]:  # the mean decided another class than the image alone
                _, cams, _ = self.gradcam(x, int(chosen[0]), request.plus)
            heatmap = _to_image_grid(cams[0], box, display.shape[:2])
        probs = _softmax(logits[0] / self.temperature)
        result = self._classified(probs)
        result.heatmap = heatmap
        result.heatmap_class = self.classes[int(chosen[0])] if heatmap is not None else None
        _flag_low_confidence(result)
        self.check_input(result, rest_inputs)
        if request.tta:
            views = np.concatenate([x, x[:, :, ::-1], np.clip(x * 1.1, -1, 1), np.clip(x * 0.9, -1, 1)])
            tta_probs = _softmax(self.network.forward(views) / self.temperature)
            result.tta_agreement = float((tta_probs.argmax(1) == np.argmax(probs)).mean())
            if result.tta_agreement < 1.0:
                result.warnings.append(f"Unstable: {result.tta_agreement:.0%} of test-time augmented views agree.")
        return result


@dataclass(frozen=True)
class TileRead:
    """A picture's tissue tiles at the bundle's scale (``plan``), their calibrated class probabilities, the scale
    they were cut at (None: the bundle has no physical scale), and (1, D) the tiles' stem features averaged, what the
    input check reads (None where the network has no stem)."""

    plan: TilePlan
    probs: np.ndarray
    scale: Scale | None
    features: np.ndarray | None


class TiledClassifierPath(ClassifierPath):
    """Large images: tissue tiles (at the bundle's physical scale where it has one, stain-normalised and
    streamed in batches), their probabilities aggregated and mapped, Grad-CAM of the top tile, the input check on
    the tiles' features averaged. The result warns where the call rests on little: no tile with enough tissue, a
    picture smaller than a tile, a grey picture for an H&E bundle; and that test-time augmentation, if asked, was
    not done."""

    def __init__(self, info: BundleManifest, network: Network, novelty: NoveltyReference | ModelError | None = None
                 ) -> None:
        super().__init__(info, network, novelty)
        self.tiling = info.tiling
        self.assumed_um = self.tiling.assumed_microns_per_pixel or self.tiling.microns_per_pixel

    def run(self, picture: np.ndarray | ModelInputs, request: Request, record: ImageRecord | None = None) -> ModelResult:
        target = self._target(request.target_class)
        display = ModelInputs.of(picture).display
        read = self.read(display, record, request.microns_per_pixel)
        boxes, tile_probs, scale = read.plan.boxes, read.probs, read.scale
        probs = aggregate(tile_probs, self.tiling)
        result = self._classified(probs, tiles=len(boxes))
        self.check_features(result, read.features)
        shown = int(np.argmax(probs)) if target is None else target
        result.heatmap_class = self.classes[shown]
        result.heatmap = tile_map(display.shape[:2], boxes, tile_probs[:, shown])
        if request.gradcam and self.cam_layers:
            top = int(np.argmax(tile_probs[:, shown]))
            _, cams, _ = self.gradcam(read.plan.tile_input(top)[None], shown, request.plus)
            result.tile_gradcam = _to_image_grid(cams[0], boxes[top], display.shape[:2])
        if scale is not None:
            result.scale = scale.to_dict()
            if scale.assumed:
                result.warnings.append(assumed_warning(scale))
        # A call on glass or on a field smaller than a tile is flagged however sure the model is; then not twice.
        result.warnings += tiling_warnings(display, boxes, self.tiling, (scale.um_y, scale.um_x) if scale else None)
        if self.tiling.tissue == "stained" and is_grey(display):
            result.warnings.append("The picture has no colour: the model was trained on colour H&E pictures only "
                                   "and was never checked on grey ones.")
        if request.tta:  # tiles are averaged already; no augmented views are run
            result.warnings.append("Test-time augmentation is not used by this tiled classifier.")
        if not any(w.startswith("Low confidence") for w in result.warnings):
            _flag_low_confidence(result)
        return result

    def read(self, display: np.ndarray, record: ImageRecord | None, user_um: float | None = None) -> TileRead:
        """The picture's tiles (at the user's scale ``user_um``, else the file's, else the one assumed), their
        probabilities and features."""
        scale = None
        if self.tiling.microns_per_pixel and (record is not None or user_um is not None):
            scale = resolve_scale(record, self.assumed_um, user_um)
        plan = TilePlan(display, self.tiling, self.spec, (scale.um_y, scale.um_x) if scale else None)
        logits, features = self._tiles(plan.batches(TILE_BATCH))
        return TileRead(plan, _softmax(logits / self.temperature), scale, features)


class SegmenterPath(AnalysisPath):
    """A lesion segmenter: probability map (averaged with the mirror's where validation chose it), mask at
    the bundle's threshold, unsure components gated, lesions measured."""

    def __init__(self, info: BundleManifest, network: Network, novelty: NoveltyReference | ModelError | None = None
                 ) -> None:
        super().__init__(info, network, novelty)
        self.threshold = info.mask_threshold
        self.min_peak = info.min_lesion_peak
        self.min_area_px = info.min_lesion_px
        self.calipers = info.modality is Modality.US

    def run(self, picture: np.ndarray | ModelInputs, request: Request, record: ImageRecord | None = None) -> ModelResult:
        spacing, implausible = record.measuring_spacing(self.info.modality) if record is not None else (None, None)
        x, box, display = ModelInputs.of(picture).made(self.spec)
        x = x[None]
        batch = np.concatenate([x, x[:, :, ::-1]]) if self.flip_average else x
        rest_inputs = self.rest_inputs(batch)
        out = self.network.forward(batch, rest_inputs)[..., 0]
        prob = (out[0] + out[1, :, ::-1]) / 2 if self.flip_average else out[0]
        prob_full = _to_image_grid(prob, box, display.shape[:2])
        mask = drop_unsure_components((prob_full >= self.threshold).astype(np.uint8), prob_full, self.min_peak)
        mask = drop_small_components(mask, self.min_area_px)
        result = self._result()
        self.check_input(result, rest_inputs)
        result.probability_map, result.mask = prob_full, mask
        aspect = record.row_to_column() if record is not None and spacing is None else 1.0
        result.lesions = find_lesions(mask, spacing, min_area_px=self.min_area_px, calipers=self.calipers,
                                      aspect=aspect)
        result.spacing_known = spacing is not None
        if implausible:
            result.warnings.append(implausible)
        elif spacing is None:
            result.warnings.append("Pixel spacing unknown: sizes are given in pixels only.")
        return result


# A film whose file states no pixel spacing is taken to be as tall as a mini-MIAS film (1024 px at 200 um).
ASSUMED_FILM_MM = 204.8
FILMS_KEPT = 4  # films' tile probabilities kept per path: a batch meets each film once as itself, once as partner
MAX_FILM_MM = 500.0  # the largest film cassette is 24 x 30 cm: a picture this large at its stated scale is not a film


@dataclass(frozen=True)
class FilmRead:
    """A film's tiles at the detector's scale and their probabilities; ``zoom``: film pixels per display pixel
    (rows, columns)."""

    corners: np.ndarray
    probs: np.ndarray
    zoom: tuple[float, float]
    mm: tuple[float, float]
    scale_source: str
    film: np.ndarray  # the grey film at the detector's scale (tiles, Grad-CAM and mark placement read it)
    search: np.ndarray  # the breast search region on that film
    # (1, D): its tiles' features (``stem_features``) averaged, what the input check reads; None without tiles or stem
    features: np.ndarray | None = None

    def box(self, i: int, tile: int) -> tuple[int, int, int, int]:
        """Tile ``i`` as a (y0, y1, x0, x1) box in display pixels."""
        y, x = self.corners[i]
        zy, zx = self.zoom
        return (int(round(y / zy)), int(round((y + tile) / zy)), int(round(x / zx)), int(round((x + tile) / zx)))


class FilmPath(ClassifierPath):
    """A mammography detector (core.models.mammography): the film at the detector's scale, its breast search
    region tiled, each tile's probability; the film's score against the other breast's film where the caller
    found one, calibrated; CAD marks where tiles pass the marking threshold; the tile map as heatmap and the
    Grad-CAM of the top tile; the input check on the film's tiles' features averaged."""

    def __init__(self, info: BundleManifest, network: Network, novelty: NoveltyReference | ModelError | None = None
                 ) -> None:
        super().__init__(info, network, novelty)
        self.scoring = info.film_scoring
        self.positive = len(self.classes) - 1  # binary, the finding class last
        self._films: OrderedDict[bytes, FilmRead] = OrderedDict()
        # A film's file (path, frame, modification time, size) -> its reading's key: a partner film read before, as
        # itself or as another film's partner, is not decoded again (a large DICOM film takes a second to decode).
        self._files: OrderedDict[tuple, bytes] = OrderedDict()

    def run(self, picture: np.ndarray | ModelInputs, request: Request, record: ImageRecord | None = None) -> ModelResult:
        target = self._target(request.target_class)
        display = ModelInputs.of(picture).display
        warnings: list[str] = []
        own = self.read(display, record, _file_id(record.path, request.frame) if record is not None else None)
        score = film_score(own.probs, self.scoring.top)
        other = self._other(request.other_breast, warnings)
        paired = other is not None
        p = self.scoring.probability(score - film_score(other.probs, self.scoring.top) if paired else score, paired)
        probs = np.zeros(len(self.classes))
        probs[self.positive], probs[0] = p, 1.0 - p
        result = self._classified(probs, tiles=len(own.corners))
        self.check_features(result, own.features)
        shown = self.positive if target is None else target
        tile_probs = own.probs if shown == self.positive else 1.0 - own.probs
        boxes = [own.box(i, self.scoring.tile) for i in range(len(own.corners))]
        result.heatmap_class = self.classes[shown]
        result.heatmap = tile_map(display.shape[:2], boxes, tile_probs)
        if request.gradcam and self.cam_layers and len(boxes):
            top = int(np.argmax(tile_probs))
            _, cams, _ = self.gradcam(self._tile_inputs(own.film, own.corners[top:top + 1]), shown, request.plus)
            result.tile_gradcam = _to_image_grid(cams[0], boxes[top], display.shape[:2])
        radius = self.scoring.mark_radius / float(np.mean(own.zoom))
        spacing = record.pixel_spacing_mm if record is not None else None
        blobs = blob_response(own.film, own.search, self.scoring)
        result.findings = [Finding(x / own.zoom[1], y / own.zoom[0], radius, s, None, spacing)
                           for x, y, s in cad_marks(own.corners, own.probs, self.scoring, blobs)]
        # the file's pixels, as histology's scale says
        scale = Scale(own.mm[0] * 1000, own.mm[1] * 1000, own.scale_source, record.downsample if record else 1)
        file_mm = tuple(um / 1000 for um in scale.file_um)
        result.scale = scale.to_dict("mm")
        result.scale["text"] += f", read at {self.scoring.mm_per_pixel:g}"
        if own.scale_source == "assumed":
            warnings.append(f"Film scale not in the file: the picture was taken as a {ASSUMED_FILM_MM:g}-mm tall "
                            f"film ({file_mm[0]:.3g} mm per pixel, as mini-MIAS films); at another scale masses "
                            "are read at the wrong size.")
        magnified = _magnified(record)
        if magnified:
            warnings.append(f"A magnification view ({magnified}): this film detector was trained on contact films; a "
                            "magnified view is read at the wrong size (masses and calcifications larger than any it "
                            "learnt), so its score and marks mean little.")
        if not len(own.corners):
            warnings.append("No breast found on this film to search (or the film is smaller than one "
                            f"{self.scoring.tile * self.scoring.mm_per_pixel:.0f}-mm tile): the score means nothing.")
        if request.tta:
            warnings.append("Test-time augmentation is not used by this film detector.")
        result.warnings += warnings
        _flag_low_confidence(result)
        return result

    def read(self, display: np.ndarray, record: ImageRecord | None, file_id: tuple | None = None) -> FilmRead:
        """The film's tiles and their probabilities, kept for the last few films (its partner's reading);
        ``file_id``: the film's file (``_file_id``), remembered so that ``_known`` finds the reading by file."""
        spacing = (record.detector_spacing_mm or record.pixel_spacing_mm) if record is not None else None
        source = "file" if spacing else "assumed"
        mm = spacing or (ASSUMED_FILM_MM / display.shape[0],) * 2
        grey = as_grey(display)
        view = _view(record)
        # what the reading depends on beyond the pixels: its scale, whether that scale was the file's (the film's
        # warning), and the view (its search region): a PNG of a DICOM film read after it had taken the DICOM's reading
        key = hashlib.blake2b(np.ascontiguousarray(grey).tobytes() + repr((mm, source, view)).encode(),
                              digest_size=16).digest()
        if file_id is not None:
            self._files[file_id] = key
            self._files.move_to_end(file_id)
            while len(self._files) > 2 * FILMS_KEPT:
                self._files.popitem(last=False)
        if key in self._films:
            self._films.move_to_end(key)
            return self._films[key]
        height, width = grey.shape[0] * mm[0], grey.shape[1] * mm[1]
        if max(height, width) > MAX_FILM_MM:  # also keeps the tile count (memory, time) bounded
            raise ModelError(f"'{self.info.id}': at {mm[0]:.3g} x {mm[1]:.3g} mm per pixel this picture would be a "
                             f"{height:.0f} x {width:.0f} mm film; mammograms are at most 300 mm: not read")
        film = film_at_scale(grey, mm, self.scoring)
        search = search_region(film, view)
        corners = search_tiles(film, self.scoring, search=search)
        logits, features = self._tiles(self._tile_inputs(film, corners[i:i + TILE_BATCH])
                                       for i in range(0, len(corners), TILE_BATCH))
        probs = _softmax(logits)[:, self.positive]  # (0,) for a film without tiles: _tiles gives (0, classes)
        read = FilmRead(corners, probs, (film.shape[0] / grey.shape[0], film.shape[1] / grey.shape[1]), mm, source,
                        film, search, features)
        self._films[key] = read
        while len(self._films) > FILMS_KEPT:
            self._films.popitem(last=False)
        return read

    def _tile_inputs(self, film: np.ndarray, corners: np.ndarray) -> np.ndarray:
        t = self.scoring.tile
        return np.stack([preprocess(film[y:y + t, x:x + t], self.spec) for y, x in corners])

    def _other(self, other: OtherBreast | None, warnings: list[str]) -> FilmRead | None:
        """The partner film's reading, or None with the reason in ``warnings``."""
        alone = "scored alone, a weaker reading (see the model card)"
        if other is None:
            warnings.append(f"No film of the other breast in the same view was found beside this one: {alone}.")
            return None
        try:
            file_id = _file_id(other.path, other.frame)
            read = self._known(file_id)
            if read is None:
                partner = load_image(other.path)
                if partner.modality_source == "dicom" and partner.modality is not Modality.MG:
                    warnings.append(f"The other breast's file is not a mammogram ({partner.modality.label}): "
                                    f"{alone}.")
                    return None
                read = self.read(partner.display(other.frame), partner, file_id)
        except (DiagnosticError, OSError, ValueError, IndexError) as exc:
            # Its name is left out, as the error's (a file name often holds the patient's): reports print warnings.
            reason = exc.reason if isinstance(exc, ImageLoadError) else \
                (exc.strerror or type(exc).__name__) if isinstance(exc, OSError) else exc
            warnings.append(f"The other breast's film could not be read ({reason}): {alone}.")
            return None
        warnings.append(f"Scored against the other breast's film (paired by {other.how}): the film's score compares "
                        "both breasts; its marks are this film's own findings.")
        return read

    def _known(self, file_id: tuple | None) -> FilmRead | None:
        """The reading of the film in that file and frame where it is still kept, else None."""
        key = self._files.get(file_id) if file_id is not None else None
        if key is None or key not in self._films:
            return None
        self._films.move_to_end(key)
        return self._films[key]


def _file_id(path: Path | str, frame: int) -> tuple | None:
    """A film's file as it is now: its resolved path, the frame, modification time and size (None: not a file)."""
    try:
        file = Path(path)
        stat = file.stat()
    except (OSError, TypeError, ValueError):
        return None
    return (str(file.resolve()), frame, stat.st_mtime_ns, stat.st_size) if file.is_file() else None


def _magnified(record: ImageRecord | None) -> str:
    """Why a DICOM film is a magnification view, in words ('estimated radiographic magnification 1.8', 'coded
    magnification'; ``core.imaging.mammo_words.ViewCodes.magnified``), else ''. The film is read at the detector's
    spacing (``FilmPath.read``) as the contact films of training were; a magnified breast is larger on the detector
    by its factor, which no spacing corrects for a detector that learnt a contact film's sizes."""
    if record is None or record.file_format != "DICOM":
        return ""
    header = read_header(record.path, list(HEADER_KEYWORDS))
    codes = view_codes(header) if header is not None else None
    if codes is None or not codes.magnified:
        return ""
    if codes.magnification and codes.magnification >= MAGNIFIED_FACTOR:
        return f"estimated radiographic magnification {codes.magnification:g}"
    return "coded magnification"


def _view(record: ImageRecord | None) -> str:
    """The film's view for the breast region (CC films have no pectoral muscle to cut): DICOM ViewPosition,
    else CC or MLO in the patient ID or file name, else MLO, the view the detector was trained on."""
    if record is None:
        return "MLO"
    stated = next((value for _, keyword, value in record.metadata if keyword == "ViewPosition"), "")
    texts = [("ViewPosition", stated)] if stated else [("PatientID", record.study.patient_id),
                                                        ("file name", Path(record.path).stem)]
    return side_and_view(texts)[1] or "MLO"


def stem_features(rest_inputs: list[np.ndarray]) -> np.ndarray:
    """(N, D): the activation the stem hands the rest (its first input), averaged over the picture: what the input
    check (core.models.novelty) reads, fitting and analysing alike."""
    return pooled(rest_inputs[0])


def build_path(info: BundleManifest, network: Network, novelty: NoveltyReference | ModelError | None = None
               ) -> AnalysisPath:
    """The path of the bundle described by ``info`` on its loaded ``network`` (``novelty``: its input-check
    reference, or why it could not be read), refused (ModelError) where the manifest's classes do not match the
    network's outputs: the probabilities would be named wrongly."""
    _check_outputs(info, network.channels)
    if info.task != "classification":
        return SegmenterPath(info, network, novelty)
    if info.film_scoring is not None:
        return FilmPath(info, network, novelty)
    if info.tiling is not None:
        return TiledClassifierPath(info, network, novelty)
    return ClassifierPath(info, network, novelty)


def _check_outputs(info: BundleManifest, channels: int | None) -> None:
    """A classifier gives one logit per class of its manifest, a segmenter one lesion probability map."""
    if channels is None:
        return
    if info.task == "classification" and channels != len(info.classes):
        count = f"{len(info.classes)} class" + ("es" if len(info.classes) > 1 else "")
        raise ModelError(f"model '{info.id}': its manifest lists {count} ({', '.join(info.classes)}), but its "
                         f"network outputs {channels}; the bundle is not consistent - refusing to run it")
    if info.task == "segmentation" and channels != 1:
        raise ModelError(f"model '{info.id}': a segmenter's network outputs one lesion probability map, this one "
                         f"outputs {channels}; the bundle is not consistent - refusing to run it")


def _flag_low_confidence(result: ModelResult) -> None:
    if result.confidence is not None and result.confidence < LOW_CONFIDENCE:
        result.warnings.append(f"Low confidence: the most likely class '{result.label}' has only "
                               f"{result.confidence:.0%} probability.")


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _to_image_grid(small: np.ndarray, box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    """Resize a model-grid map back into the crop box of the full image (zeros outside); a box that
    reaches beyond the image (a padded crop) keeps only its part inside."""
    y0, y1, x0, x1 = box
    full = np.zeros(shape, np.float32)
    grid = cv2.resize(small.astype(np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    h, w = shape
    full[max(0, y0):min(h, y1), max(0, x0):min(w, x1)] = grid[max(0, -y0):(y1 - y0) - max(0, y1 - h),
                                                              max(0, -x0):(x1 - x0) - max(0, x1 - w)]
    return full
