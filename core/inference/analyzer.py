"""Runs the bundles for an image's modality and assembles an Analysis.

TensorFlow work happens only inside ``Analyzer`` methods, which the Engine calls on its single
worker thread (Keras predict is not thread-safe); callers get Futures and may cancel between steps.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import cv2
import numpy as np

from core.errors import DiagnosticError, ModelError
from core.imaging.modality_guess import guess_modality
from core.imaging.record import ImageRecord, Modality
from core.inference.device import configure_device
from core.inference.gradcam import GradCam
from core.inference.lesions import drop_unsure_components, find_lesions
from core.inference.results import Analysis, ModelResult
from core.models.preprocessing import crop_box, prepare_display, preprocess
from core.models.scale import assumed_warning, resolve_scale
from core.models.tile_stream import TilePlan
from core.models.tiling import aggregate, tile_map
from core.models.registry import Bundle, Registry

LOW_CONFIDENCE = 0.60  # below this calibrated probability the label is flagged as uncertain
WRONG_MODALITY = 0.90  # guesser probability of another modality that triggers the warning
# Below this the guessed modality (hence the models chosen) is flagged. Chosen out-of-fold over the 5893 shared
# images (resources/modality_guess.json): 13 of the 16 guessed wrong are flagged, and 65 of the 5877 guessed right
# (1.1 %); at 0.75 only 3 of the 16 (11 right ones), at 0.9 6 (34).
UNSURE_GUESS = 0.95
# Stem outputs kept per preprocessed image row: an image and its mirror for the bundles that share a stem.
STEM_ROWS_KEPT = 8


class Cancelled(DiagnosticError):
    """The user cancelled; results computed so far are kept by the caller."""


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


class Analyzer:
    """Model choice, preprocessing, prediction, Grad-CAM, lesion measurement and safety flags."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or Registry()
        self._gradcams: dict[tuple[str, str | None], GradCam] = {}  # by bundle and layer (None: the rest's input)
        self._compiled: dict[str, object] = {}
        # Stem outputs by (stem key, hash of the preprocessed image row): content-addressed, so never stale;
        # clear it to time whole passes.
        self.stem_rows: OrderedDict[tuple[str, bytes], list[np.ndarray]] = OrderedDict()

    def bundles_for(self, record: ImageRecord, model_ids: list[str] | None = None) -> list[Bundle]:
        if model_ids:
            return [self.registry.get(m) for m in model_ids]
        return self.registry.for_modality(record.modality)

    def analyze(
        self,
        record: ImageRecord,
        frame: int = 0,
        model_ids: list[str] | None = None,
        gradcam: bool = True,
        gradcam_plus: bool = False,
        target_class: str | None = None,
        tta: bool = False,
        cancel: threading.Event | None = None,
        on_result: Callable[[ModelResult], None] | None = None,
        microns_per_pixel: float | None = None,
    ) -> Analysis:
        """``microns_per_pixel``: the image's scale set or confirmed by the user, for bundles that tile at a physical
        scale (else read from the file, or assumed with a warning: ``core.models.scale``)."""
        bundles = self.bundles_for(record, model_ids)
        analysis = Analysis(str(record.path), record.modality.value, record.modality_source, frame)
        if not bundles:
            analysis.warnings.append(
                f"No model is installed for {record.modality.label} images; choose the modality or a model explicitly."
            )
            return analysis
        display = record.display(frame)
        guessed, guess_p = guess_modality(display)
        if (record.modality_source == "guess" and record.modality_confidence is not None
                and record.modality_confidence < UNSURE_GUESS and any(b.modality == record.modality for b in bundles)):
            # About the image, not one model: said once for every model it was routed to.
            analysis.warnings.append(f"Unsure modality: the image was taken for {record.modality.label} with only "
                                     f"{record.modality_confidence:.0%} confidence; if it is not, choose the modality "
                                     "or the model.")
        for bundle in bundles:
            if cancel is not None and cancel.is_set():
                raise Cancelled("analysis cancelled")
            started = time.perf_counter()
            if bundle.task == "classification":
                result = self.classify(bundle, display, gradcam, gradcam_plus, target_class, tta, record=record,
                                       microns_per_pixel=microns_per_pixel)
            else:
                result = self.segment(bundle, display, record.pixel_spacing_mm)
            result.warnings[:0] = self._modality_warnings(bundle, record, guessed, guess_p)
            result.seconds = time.perf_counter() - started
            analysis.results.append(result)
            if on_result is not None:
                on_result(result)
        return analysis

    @staticmethod
    def _modality_warnings(bundle: Bundle, record: ImageRecord, guessed: Modality, p: float | None) -> list[str]:
        if bundle.modality == Modality.OTHER:
            return []
        if record.modality_source in ("dicom", "user") and record.modality not in (bundle.modality, Modality.OTHER):
            return [f"Wrong modality: this is a {record.modality.label} image but '{bundle.id}' was trained on "
                    f"{bundle.modality.label}; its output is not meaningful here."]
        if p is None or guessed == bundle.modality:
            return []
        if p >= WRONG_MODALITY:
            return [f"Possible wrong modality: the image looks like {guessed.label} (p={p:.2f}), not "
                    f"{bundle.modality.label}; treat this result as unreliable."]
        # Below the guard the guesser still prefers another modality: rare on the model's own images (at most the
        # 16 of 5893 shared images it guesses wrong), common on pictures of nothing the models know (noise, photos).
        return [f"Unsure modality: the image looks more like {guessed.label} (p={p:.2f}) than "
                f"{bundle.modality.label}, which '{bundle.id}' was trained on; check that it suits this image."]

    def _run(self, name: str, model, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """One compiled forward pass: Keras ``predict`` costs ~50 ms of set-up per call on small batches."""
        if name not in self._compiled:
            import tensorflow as tf

            self._compiled[name] = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True,
                                               autograph=False)
        outputs = self._compiled[name]([np.asarray(a, np.float32) for a in inputs] if len(inputs) > 1
                                       else np.asarray(inputs[0], np.float32))
        return [o.numpy() for o in outputs] if isinstance(outputs, (list, tuple)) else [outputs.numpy()]

    def _stem(self, bundle: Bundle, x: np.ndarray) -> list[np.ndarray]:
        """The inputs of the bundle's rest for the image batch ``x``.

        Bundles built on one another share a stem (core.models.stages); an image row it already ran on,
        for this bundle or another, is not run again, so a pair of bundles costs one pass of the shared
        network per image.
        """
        stages = bundle.stages()
        if stages.stem is None:
            return [x]
        keys = [(stages.key, hashlib.blake2b(np.ascontiguousarray(row, np.float32).tobytes(), digest_size=16).digest())
                for row in x]
        todo = [i for i, key in enumerate(keys) if key not in self.stem_rows]
        if todo:
            outputs = self._run(stages.key, stages.stem, [x[todo]])
            for j, i in enumerate(todo):
                self.stem_rows[keys[i]] = [out[j] for out in outputs]
        rows = [self.stem_rows[key] for key in keys]
        for key in keys:
            self.stem_rows.move_to_end(key)
        while len(self.stem_rows) > STEM_ROWS_KEPT:
            self.stem_rows.popitem(last=False)
        return [np.stack([row[j] for row in rows]) for j in range(len(rows[0]))]

    def _forward(self, bundle: Bundle, x: np.ndarray) -> np.ndarray:
        """The bundle's output for the image batch ``x``."""
        return self._run(bundle.id, bundle.stages().rest, self._stem(bundle, x))[0]

    def _gradcam(self, bundle: Bundle, x: np.ndarray, target: int | None, plus: bool):
        """(logits, heatmaps, class index used) for the batch ``x``: through the bundle's rest where its stem
        ends at the method's layer, else through the whole network at that layer."""
        layer, stages = bundle.cam_layer(plus), bundle.stages()
        through_rest = stages.stem is not None and layer == (stages.cam or bundle.gradcam_layer)
        key = (bundle.id, None if through_rest else layer)
        if key not in self._gradcams:
            self._gradcams[key] = GradCam(stages.rest, None) if through_rest else GradCam(bundle.load(), layer)
        return self._gradcams[key](self._stem(bundle, x) if through_rest else [x], target, plus)

    def classify(self, bundle: Bundle, display: np.ndarray, gradcam: bool, plus: bool,
                  target_class: str | None, tta: bool, record: ImageRecord | None = None,
                  microns_per_pixel: float | None = None) -> ModelResult:
        device = configure_device()
        spec = bundle.spec
        target = None
        if target_class is not None:
            if target_class not in bundle.classes:
                raise ModelError(f"'{target_class}' is not a class of {bundle.id} ({', '.join(bundle.classes)})")
            target = bundle.classes.index(target_class)
        if bundle.tiling is not None:  # stain-normalised tile by tile (core.models.tile_stream)
            return self._classify_tiles(bundle, display, gradcam, plus, target, device, record, microns_per_pixel)
        display = prepare_display(display, spec)
        x = preprocess(display, spec)[None]
        heatmap = None
        # With ``flip_average`` (chosen on validation per bundle) the image and its mirror go through in one
        # batch and their logits are averaged; the heatmap explains the unmirrored image for the decided class.
        inputs = np.concatenate([x, x[:, :, ::-1]]) if bundle.info.flip_average else x
        cams = None
        if gradcam and bundle.gradcam_layer:
            input_logits, cams, own = self._gradcam(bundle, inputs, target, plus)
        else:
            input_logits = self._forward(bundle, inputs)
        logits = input_logits.mean(axis=0, keepdims=True)
        chosen = np.argmax(logits, axis=1) if target is None else np.array([target])
        if cams is not None:
            if own[0] != chosen[0]:  # the mean decided another class than the image alone
                _, cams, _ = self._gradcam(bundle, x, int(chosen[0]), plus)
            heatmap = _to_image_grid(cams[0], crop_box(display, spec), display.shape[:2])
        probs = _softmax(logits[0] / bundle.temperature)
        result = ModelResult(bundle.id, bundle.version, bundle.task, device, classes=bundle.classes,
                             probabilities={c: float(p) for c, p in zip(bundle.classes, probs)})
        result.label = bundle.classes[int(np.argmax(probs))]
        result.heatmap = heatmap
        result.heatmap_class = bundle.classes[int(chosen[0])] if heatmap is not None else None
        self._flag_low_confidence(result)
        if tta:
            views = np.concatenate([x, x[:, :, ::-1], np.clip(x * 1.1, -1, 1), np.clip(x * 0.9, -1, 1)])
            tta_probs = _softmax(self._forward(bundle, views) / bundle.temperature)
            result.tta_agreement = float((tta_probs.argmax(1) == np.argmax(probs)).mean())
            if result.tta_agreement < 1.0:
                result.warnings.append(f"Unstable: {result.tta_agreement:.0%} of test-time augmented views agree.")
        return result

    @staticmethod
    def _flag_low_confidence(result: ModelResult) -> None:
        if result.confidence is not None and result.confidence < LOW_CONFIDENCE:
            result.warnings.append(f"Low confidence: the most likely class '{result.label}' has only "
                                   f"{result.confidence:.0%} probability.")

    def _classify_tiles(self, bundle: Bundle, display: np.ndarray, gradcam: bool, plus: bool, target: int | None,
                        device: str, record: ImageRecord | None = None, microns_per_pixel: float | None = None
                        ) -> ModelResult:
        """Large images: classify tissue tiles (at the bundle's physical scale where it has one, streamed in
        batches), average them, map tile probabilities, Grad-CAM the top tile."""
        tiling, spec = bundle.tiling, bundle.spec
        scale = None
        if tiling.microns_per_pixel and (record is not None or microns_per_pixel is not None):
            scale = resolve_scale(record, tiling.assumed_microns_per_pixel or tiling.microns_per_pixel,
                                  microns_per_pixel)
        plan = TilePlan(display, tiling, spec, (scale.um_y, scale.um_x) if scale else None)
        boxes = plan.boxes
        tile_probs = _softmax(np.concatenate([self._forward(bundle, x) for x in plan.batches(16)]) / bundle.temperature)
        probs = aggregate(tile_probs, tiling)
        result = ModelResult(bundle.id, bundle.version, bundle.task, device, classes=bundle.classes,
                             probabilities={c: float(p) for c, p in zip(bundle.classes, probs)}, tiles=len(boxes))
        result.label = bundle.classes[int(np.argmax(probs))]
        shown = int(np.argmax(probs)) if target is None else target
        result.heatmap_class = bundle.classes[shown]
        result.heatmap = tile_map(display.shape[:2], boxes, tile_probs[:, shown])
        if gradcam and bundle.gradcam_layer:
            top = int(np.argmax(tile_probs[:, shown]))
            _, cams, _ = self._gradcam(bundle, plan.tile_input(top)[None], shown, plus)
            y0, y1, x0, x1 = boxes[top]
            result.tile_gradcam = _to_image_grid(cams[0], (y0, y1, x0, x1), display.shape[:2])
        if scale is not None and scale.assumed:
            result.warnings.append(assumed_warning(scale))
        self._flag_low_confidence(result)
        return result

    def segment(self, bundle: Bundle, display: np.ndarray, spacing: tuple[float, float] | None) -> ModelResult:
        device = configure_device()
        spec = bundle.spec
        x = preprocess(display, spec)[None]
        if bundle.info.flip_average:
            # Mean of the image and its mirror: measured on validation, chosen there per bundle.
            pair = self._forward(bundle, np.concatenate([x, x[:, :, ::-1]]))[..., 0]
            prob = (pair[0] + pair[1, :, ::-1]) / 2
        else:
            prob = self._forward(bundle, x)[0, ..., 0]
        prob_full = _to_image_grid(prob, crop_box(display, spec), display.shape[:2])
        info = bundle.info
        mask = drop_unsure_components((prob_full >= info.mask_threshold).astype(np.uint8), prob_full,
                                      info.min_lesion_peak)
        result = ModelResult(bundle.id, bundle.version, bundle.task, device)
        result.probability_map, result.mask = prob_full, mask
        result.lesions = find_lesions(mask, spacing, min_area_px=info.min_lesion_px,
                                      calipers=info.modality is Modality.US)
        if spacing is None:
            result.warnings.append("Pixel spacing unknown: sizes are given in pixels only.")
        return result


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


class Engine:
    """One worker thread that owns every TensorFlow call; submit work, get Futures, cancel."""

    def __init__(self, analyzer: Analyzer | None = None) -> None:
        self._analyzer = analyzer
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tensorflow")

    @property
    def analyzer(self) -> Analyzer:
        if self._analyzer is None:
            self._analyzer = Analyzer()
        return self._analyzer

    def submit(self, record: ImageRecord, cancel: threading.Event | None = None, **options) -> Future:
        return self._pool.submit(lambda: self.analyzer.analyze(record, cancel=cancel, **options))

    def call(self, fn: Callable, *args, **kwargs) -> Future:
        """Run any TensorFlow-touching function on the worker thread."""
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
