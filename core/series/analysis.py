"""Series analysis: every slice through the models, then one call per model for the whole series.

The per-slice work reuses the Analyzer (on the Engine's TensorFlow thread when an Engine is given); the
series call follows ``VERDICT_RULE``, written here once so that reports and model cards can quote it.
Per-slice outcomes are kept in a ``SliceCache`` keyed by slice and model version, so a second analysis
of the same series (another model added, a cancelled run resumed) only runs what is missing.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from core.errors import DiagnosticError, ModelError, described
from core.imaging.body_part import UNTESTED_BODY_PART
from core.imaging.mr_sequence import UNTESTED_SEQUENCE
from core.models.novelty import UNUSUAL, beyond_chance, flagged_in
from core.series.contralateral import other_breast
from core.series.index import DUPLICATE_MM, GAP_FACTOR, MISSING_SLICE_FACTOR, Series, SliceRef, gap_text
from core.series.stack import SeriesStack

NORMAL_CLASSES = ("notumor", "no", "normal")  # a classifier's class that means 'nothing found'
ABNORMAL_THRESHOLD = 0.5  # P(not normal) at or above which a slice counts as abnormal
MIN_RUN = 2  # adjacent abnormal slices needed to call the series abnormal

VERDICT_RULE = f"""\
Series verdict (core.series.analysis). Slices are taken in order along the slice normal; two slices are
adjacent when they are neighbours in that order and no gap (a step over {GAP_FACTOR} x the median step and
{MISSING_SLICE_FACTOR} x the shortest) lies between them. Slices less than {DUPLICATE_MM} mm apart share a position,
and runs are counted in positions: two slices at one position are not two adjacent slices.
Classifier with a normal class ({', '.join(NORMAL_CLASSES)}): a slice is abnormal when P(not normal) =
1 - P(normal class) >= {ABNORMAL_THRESHOLD}. The series is abnormal when at least {MIN_RUN} adjacent slices are
abnormal (a series of one position: when its slice is). Its label is the non-normal class with the largest
mean probability over the slices of all such runs, its probability that mean, and its first/last slice the
ends of the longest run (ties: the run with the larger mean P(not normal)); every run is listed beside it.
Otherwise the label is the normal class with probability 1 - max over slices of P(not normal).
Classifier without a normal class: the label is the class with the largest mean probability over all slices,
its probability that mean; no slice range.
Segmenter: a slice has a lesion when its mask holds at least one lesion. The series has a lesion when at
least {MIN_RUN} adjacent slices have one (a series of one position: when its slice has); the slice range runs
from the first to the last slice of those runs, and the lesion volume is the sum over their positions of
lesion area (mm2; the mean where slices share a position) x the position's extent along the normal (mm:
halfway to each neighbouring position, half the series spacing at the ends and beside a gap the lesion does
not cross; without positions, the spacing from SpacingBetweenSlices or SliceThickness) / 1000, in ml. There is
no volume when pixel spacing or slice spacing is unknown, or a slice inside the range has no result.
Otherwise 'no lesion' with volume 0.
Slice numbers are 1-based, in that order. Slices that failed to load or analyse (or were not analysed, or files
of the series that could not be read) are left out and break adjacency; where there are any, a finding on the
slices analysed stands, but a call that needs every slice does not: no verdict instead of the normal class,
'no lesion', or a classifier's mean over all slices (the slices without a result could hold what it rules out)."""


@dataclass
class SliceOutcome:
    """What one model said about one slice (compact: no heatmaps or probability maps are kept)."""

    label: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    lesions: int | None = None
    lesion_area_mm2: float | None = None
    mask: np.ndarray | None = field(default=None, repr=False)  # segmenters: uint8 0/1, for the viewer
    outlines: list = field(default_factory=list, repr=False)  # segmenters: the Lesion outlines, for the viewer
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def unusual(self) -> bool:
        """Whether the model's input check flagged this slice (core.models.novelty)."""
        return flagged_in(self.warnings)

    @property
    def probability(self) -> float | None:
        return self.probabilities.get(self.label) if self.label in self.probabilities else None


@dataclass
class SeriesVerdict:
    model: str
    version: str
    task: str
    label: str | None
    probability: float | None
    first_slice: int | None  # 1-based, position order
    last_slice: int | None
    lesion_volume_ml: float | None
    slices: list[SliceOutcome | None]
    warnings: list[str] = field(default_factory=list)
    runs: list[tuple[int, int]] = field(default_factory=list)  # every qualifying run, 1-based (first, last)
    instances: list[int | None] = field(default_factory=list)  # each slice's InstanceNumber, in slice order
    frames: bool = False  # the slices are frames of one file: their 'instances' are frame numbers (1-based)

    def to_dict(self) -> dict:
        """The verdict as analyze --series --json and the history record it (each adds its own details)."""
        return {"model": self.model, "version": self.version, "task": self.task, "label": self.label,
                "probability": None if self.probability is None else round(self.probability, 6),
                "first_slice": self.first_slice, "last_slice": self.last_slice, "runs": [list(r) for r in self.runs],
                "first_instance": self.instance(self.first_slice), "last_instance": self.instance(self.last_slice),
                "lesion_volume_ml": None if self.lesion_volume_ml is None else round(self.lesion_volume_ml, 4),
                "warnings": self.warnings}

    def instance(self, slice_number: int | None) -> int | None:
        """The InstanceNumber of 1-based slice ``slice_number`` (a PACS numbers images by it), None where unknown."""
        if slice_number is None or not 0 < slice_number <= len(self.instances):
            return None
        return self.instances[slice_number - 1]

    def instances_text(self) -> str:
        """' (images 9-14 by instance number)' where the verdict's slices (position order) are numbered otherwise
        in the files: a reader going to 'slices 5-10' in a PACS would look at other images. Numbers out of order
        are listed ('images 3, 9, 4, 10'); a multi-frame file's are its frames ('frames 9-14')."""
        if self.first_slice is None or self.last_slice is None:
            return ""
        numbers = self.instances[self.first_slice - 1:self.last_slice]
        if not numbers or None in numbers or numbers == list(range(self.first_slice, self.last_slice + 1)):
            return ""
        step = 1 if numbers[-1] >= numbers[0] else -1
        if numbers == list(range(numbers[0], numbers[-1] + step, step)):
            named = f"{min(numbers)}-{max(numbers)}"
        else:
            named = ", ".join(map(str, numbers[:8])) + (", ..." if len(numbers) > 8 else "")
        return f" (frames {named})" if self.frames else f" (images {named} by instance number)"


@dataclass
class SeriesProgress:
    done: int
    total: int
    slice_index: int
    elapsed: float


@dataclass
class SeriesAnalysis:
    series: Series
    results: list[SeriesVerdict]
    warnings: list[str]
    cancelled: bool
    seconds: float
    slices_analysed: int  # slices run through a model in this call (the rest came from the cache)
    unread: str | None = None  # where no slice could be read (so no model was chosen): the first slice's reason
    modality: str = ""  # the modality the slices were read as, where the series states none (a PNG or JPEG)
    failures: list[str] = field(default_factory=list)  # the chosen models that could not run, each once (no verdict)

    @property
    def error(self) -> str | None:
        """What failed, as a single image's error (the command line exits 2 on it): the chosen models that could not
        run (the others' verdicts stand), else why no verdict at all, where no slice could be read or analysed; None
        when every model gave one, or the run was cancelled."""
        if self.failures:
            return "; ".join(self.failures)
        if self.cancelled or any(v.label is not None for v in self.results):
            return None
        reasons = [o.error for v in self.results for o in v.slices if o is not None and o.error]
        reasons += [self.unread] if self.unread else []
        return f"no slice of this series could be analysed: {reasons[0]}" if reasons else None

    def to_dict(self) -> dict:
        """The ``analyze --series --json`` entry for this series."""
        s = self.series
        out = {"series_uid": s.uid or None, "description": s.description, "modality": s.modality or self.modality,
               "plane": s.plane,
               "slices": len(s.slices), "results": [], "warnings": list(s.warnings) + self.warnings}
        if s.kind != "dicom" or not s.uid:
            out["file"] = str(s.slices[0].path) if s.slices else None
        if self.cancelled:
            out["cancelled"] = True
        if self.error:
            out["error"] = self.error
        for v in self.results:
            details = []
            for ref, outcome in zip(s.slices, v.slices):
                p = None if outcome is None else outcome.probability
                entry = {"file": str(ref.path), "instance": ref.instance,
                         "position_mm": None if ref.position_mm is None else round(ref.position_mm, 3),
                         "label": None if outcome is None else outcome.label,
                         "probability": None if p is None else round(p, 6)}
                if s.kind == "multiframe":
                    entry["frame"] = ref.frame
                if v.task == "segmentation" and outcome is not None:
                    area = outcome.lesion_area_mm2
                    entry["lesion_area_mm2"] = None if area is None else round(area, 3)
                if outcome is not None and outcome.error:
                    entry["error"] = outcome.error
                details.append(entry)
            out["results"].append(v.to_dict() | {"slices_detail": details})
        return out


class SliceCache:
    """Per-slice outcomes by (slice, model id, model version); share one across analyses of a series."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str, str], SliceOutcome] = {}
        self._lock = threading.Lock()

    def get(self, ref: SliceRef, model: str, version: str) -> SliceOutcome | None:
        with self._lock:
            return self._data.get((ref.key, model, version))

    def put(self, ref: SliceRef, model: str, version: str, outcome: SliceOutcome) -> None:
        with self._lock:
            self._data[(ref.key, model, version)] = outcome

    def __len__(self) -> int:
        return len(self._data)


# ----------------------------------------------------------------------------------------------- the verdict rule
def normal_class(classes: list[str]) -> str | None:
    return next((c for c in classes if c.lower() in NORMAL_CLASSES), None)


def _runs(flags: list[bool], breaks: set[int]) -> list[tuple[int, int]]:
    """(first, last) 0-based index pairs of runs of True; a break after index i ends a run."""
    runs, start = [], None
    for i, flag in enumerate(flags):
        if flag and start is None:
            start = i
        if start is not None and (not flag or i in breaks):
            end = i if flag else i - 1
            runs.append((start, end))
            start = None
    if start is not None:
        runs.append((start, len(flags) - 1))
    return runs


def _qualifying(flags: list[bool], breaks: set[int], positions: list[int]) -> list[tuple[int, int]]:
    """The runs that count: over at least MIN_RUN positions (``positions``: each slice's, from ``position_numbers``),
    or over the one position a series has: two slices at one position are not two adjacent slices."""
    if not flags:
        return []
    need = min(MIN_RUN, positions[-1] + 1)
    return [(a, b) for a, b in _runs(flags, breaks) if positions[b] - positions[a] + 1 >= need]


def position_numbers(series: Series) -> list[int]:
    """Each slice's position, numbered from 0 in slice order: neighbours less than DUPLICATE_MM apart along the
    normal share one (a series written twice under one UID); without positions each slice has its own."""
    numbers = [0] if series.slices else []
    for before, ref in zip(series.slices, series.slices[1:]):
        at = (before.position_mm, ref.position_mm)
        shared = None not in at and abs(at[1] - at[0]) <= DUPLICATE_MM
        numbers.append(numbers[-1] + (0 if shared else 1))
    return numbers


def _breaks(outcomes: list[SliceOutcome | None], series_breaks: list[int]) -> set[int]:
    """Adjacency breaks: the series' gaps, and around any slice without an outcome."""
    breaks = set(series_breaks)
    for i, o in enumerate(outcomes):
        if o is None or o.error:
            breaks.update({i - 1, i})
    return breaks


def _p_abnormal(normal: str, outcomes: list[SliceOutcome | None]) -> list[float | None]:
    return [None if o is None or o.error or not o.probabilities else 1.0 - o.probabilities.get(normal, 0.0)
            for o in outcomes]


def classifier_runs(classes: list[str], outcomes: list[SliceOutcome | None], series_breaks: list[int],
                    positions: list[int] | None = None) -> list[tuple[int, int]]:
    """Every run of adjacent abnormal slices that counts for the verdict, 1-based (first, last); ``positions``:
    each slice's position number (``position_numbers``; by default each slice at its own)."""
    normal = normal_class(classes)
    if normal is None:
        return []
    flags = [p is not None and p >= ABNORMAL_THRESHOLD for p in _p_abnormal(normal, outcomes)]
    positions = positions or list(range(len(outcomes)))
    return [(a + 1, b + 1) for a, b in _qualifying(flags, _breaks(outcomes, series_breaks), positions)]


def classifier_verdict(classes: list[str], outcomes: list[SliceOutcome | None], series_breaks: list[int],
                       positions: list[int] | None = None) -> tuple[str | None, float | None, int | None, int | None]:
    """(label, probability, first_slice, last_slice) by VERDICT_RULE; slice numbers 1-based."""
    usable = [i for i, o in enumerate(outcomes) if o is not None and not o.error and o.probabilities]
    if not usable:
        return None, None, None, None
    normal = normal_class(classes)
    if normal is None:
        means = {c: float(np.mean([outcomes[i].probabilities.get(c, 0.0) for i in usable])) for c in classes}
        label = max(means, key=means.get)
        return label, means[label], None, None
    p_abnormal = _p_abnormal(normal, outcomes)
    runs = [(a - 1, b - 1) for a, b in classifier_runs(classes, outcomes, series_breaks, positions)]
    if not runs:
        return normal, 1.0 - max(p for p in p_abnormal if p is not None), None, None
    members = [i for a, b in runs for i in range(a, b + 1)]
    abnormal = [c for c in classes if c != normal]
    means = {c: float(np.mean([outcomes[i].probabilities.get(c, 0.0) for i in members])) for c in abnormal}
    label = max(means, key=means.get)
    first, last = max(runs, key=lambda r: (r[1] - r[0], float(np.mean(p_abnormal[r[0]:r[1] + 1]))))
    return label, means[label], first + 1, last + 1


def segmenter_runs(outcomes: list[SliceOutcome | None], series: Series) -> list[tuple[int, int]]:
    """Every run of adjacent lesion slices that counts for the verdict, 0-based (first, last)."""
    flags = [o is not None and not o.error and bool(o.lesions) for o in outcomes]
    return _qualifying(flags, _breaks(outcomes, series.breaks), position_numbers(series))


def segmenter_verdict(outcomes: list[SliceOutcome | None], series: Series
                      ) -> tuple[str | None, int | None, int | None, float | None, list[str]]:
    """(label, first_slice, last_slice, lesion_volume_ml, warnings) by VERDICT_RULE."""
    if not any(o is not None and not o.error for o in outcomes):
        return None, None, None, None, []
    runs = segmenter_runs(outcomes, series)
    if not runs:
        return "no lesion", None, None, 0.0, []
    members = [i for a, b in runs for i in range(a, b + 1)]
    volume, warnings = _lesion_volume(outcomes, series, members)
    return "lesion", members[0] + 1, members[-1] + 1, volume, warnings


def _lesion_volume(outcomes: list[SliceOutcome | None], series: Series, members: list[int]
                   ) -> tuple[float | None, list[str]]:
    """VERDICT_RULE's lesion volume over ``members`` (the lesion slices, 0-based, in order), or None; and the
    warnings that qualify it."""
    first, last = members[0], members[-1]
    unread = [i + 1 for i in range(first, last + 1) if outcomes[i] is None or outcomes[i].error]
    if unread:  # a volume over the rest would read as the lesion's
        what = f"{_slices_text(unread)} {'lies' if len(unread) == 1 else 'lie'}".capitalize()
        has, them = ("has", "that slice") if len(unread) == 1 else ("have", "those slices")
        return None, [f"{what} inside the lesion's slices {first + 1}-{last + 1} but {has} no result: no lesion "
                      f"volume (it would leave {them} out)."]
    areas = [outcomes[i].lesion_area_mm2 for i in members]
    if any(a is None for a in areas):
        return None, ["Pixel spacing unknown: no lesion volume."] + _gap_warnings(series, members, None)
    positions = position_numbers(series)
    lesion = {positions[i] for i in members}
    extents, source = _extents(series, positions, lesion)
    if extents is None:
        return None, ["Slice spacing unknown: no lesion volume."] + _gap_warnings(series, members, None)
    by_position: dict[int, list[float]] = {}  # slices at one position (a repeated acquisition) count once
    for i, area in zip(members, areas):
        by_position.setdefault(positions[i], []).append(area)
    volume = sum(float(np.mean(a)) * extents[k] for k, a in by_position.items()) / 1000.0
    warnings = _gap_warnings(series, members, lesion)
    shared = len(members) - len(by_position)
    if shared:
        warnings.append(f"{shared} lesion slice(s) share a position with another: the volume counts each "
                        "position once (the mean of its slices' areas).")
    if source not in (None, "positions"):
        warnings.append(f"Lesion volume uses the slice spacing from {source} ({extents[0]:.2f} mm), "
                        "not from slice positions.")
    return volume, warnings


def _extents(series: Series, positions: list[int], lesion: set[int]) -> tuple[list[float] | None, str | None]:
    """Each position's extent along the slice normal in mm (by position number), and the tag it rests on where
    not on positions; (None, None) where unknown. From positions: halfway to the neighbouring position on each side,
    so that irregular steps count as they lie; half the series spacing at the ends and on each side of a gap the
    lesion (``lesion``: its position numbers) does not cross, since what lies in the gap is not known."""
    count = positions[-1] + 1
    at = [ref.position_mm for i, ref in enumerate(series.slices) if not i or positions[i] != positions[i - 1]]
    if count > 1 and series.spacing_mm and None not in at:
        half = series.spacing_mm / 2
        gaps = {positions[i] for i in series.breaks}
        reach = [(at[k + 1] - at[k]) / 2 if k not in gaps or {k, k + 1} <= lesion else half for k in range(count - 1)]
        return [below + above for below, above in zip([half] + reach, reach + [half])], None
    spacing, source = (series.spacing_mm, series.spacing_source) if series.spacing_mm else \
        (series.thickness_mm, "SliceThickness")  # one position: its slice's thickness
    return ([spacing] * count, source) if spacing else (None, None)


def _gap_warnings(series: Series, members: list[int], lesion: set[int] | None) -> list[str]:
    """A warning for each gap inside the lesion's slices, saying how the volume counts it (``lesion``: the lesion's
    position numbers; None where there is no volume)."""
    first, last = members[0], members[-1]
    positions = position_numbers(series)
    warnings = []
    for i in (i for i in series.breaks if first <= i < last):
        how = "" if lesion is None else \
            "; the volume counts the lesion across it, halfway from each side" \
            if {positions[i], positions[i + 1]} <= lesion else "; the volume leaves it out"
        warnings.append(f"Gap inside the lesion's slices {first + 1}-{last + 1}: {gap_text(series, i)}{how}.")
    return warnings


def verdict(model: str, version: str, task: str, classes: list[str], outcomes: list[SliceOutcome | None],
            series: Series) -> SeriesVerdict:
    """The series' call for one model by VERDICT_RULE (one rule for series.csv, analyze --series and the window)."""
    called = _verdict(model, version, task, classes, outcomes, series)
    called.instances, called.frames = [ref.instance for ref in series.slices], series.kind == "multiframe"
    return called


def _verdict(model: str, version: str, task: str, classes: list[str], outcomes: list[SliceOutcome | None],
             series: Series) -> SeriesVerdict:
    warnings = _failed_warnings(outcomes)
    untested = [w for o in outcomes if o is not None for w in o.warnings if w.startswith(UNTESTED_SEQUENCE)]
    if untested:  # the series' sequence, said once for the verdict
        warnings.append(f"{untested[0]} ({len(untested)} of {len(outcomes)} slices)")
    warnings += _slice_warnings(outcomes)
    if task == "classification":
        positions = position_numbers(series)
        label, probability, first, last = classifier_verdict(classes, outcomes, series.breaks, positions)
        if first is not None:
            warnings += _unusual_call(model, label, outcomes, first, last)
        if label is not None and first is None and _unanalysed(outcomes, series):  # normal, or a mean over slices
            return SeriesVerdict(model, version, task, None, None, None, None, None, outcomes,
                                 warnings + [_no_whole_verdict(outcomes, series, label)], [])
        return SeriesVerdict(model, version, task, label, probability, first, last, None, outcomes, warnings,
                             classifier_runs(classes, outcomes, series.breaks, positions) if first is not None else [])
    label, first, last, volume, more = segmenter_verdict(outcomes, series)
    if label == "lesion" and first is not None:
        warnings += _unusual_call(model, label, outcomes, first, last)
    runs = [(a + 1, b + 1) for a, b in segmenter_runs(outcomes, series)]
    if label == "no lesion" and _unanalysed(outcomes, series):
        return SeriesVerdict(model, version, task, None, None, None, None, None, outcomes,
                             warnings + more + [_no_whole_verdict(outcomes, series, label)], [])
    return SeriesVerdict(model, version, task, label, None, first, last, volume, outcomes, warnings + more, runs)


def _unanalysed(outcomes: list[SliceOutcome | None], series: Series) -> int:
    """Slices of the series without a result: failed, not analysed, or files of it that could not be read."""
    return sum(1 for o in outcomes if o is None or o.error) + len(series.unread_files)


def _no_whole_verdict(outcomes: list[SliceOutcome | None], series: Series, label: str) -> str:
    total = len(outcomes) + len(series.unread_files)
    unit = "frames" if series.kind == "multiframe" else "slices"
    return (f"{total - _unanalysed(outcomes, series)} of {total} {unit} analysed: no verdict for the whole series "
            f"('{label}' needs every {unit[:-1]})")


def _failed_warnings(outcomes: list[SliceOutcome | None]) -> list[str]:
    """How many slices have no result, and which (each slice's error says why)."""
    failed = [i + 1 for i, o in enumerate(outcomes) if o is None or o.error]
    if not failed:
        return []
    return [f"{len(failed)} of {len(outcomes)} slices have no result for this model.",
            f"No result on {_slices_text(failed)}."]


# ----------------------------------------------------------------------------------------------- running it
def _outcome(result) -> SliceOutcome:
    if result.task == "classification":
        return SliceOutcome(result.label, dict(result.probabilities), warnings=list(result.warnings))
    # A mask is kept for a slice with a lesion only: an empty one draws nothing, and a 1,000-slice CT's empty masks
    # would hold a quarter of a gigabyte for as long as its analysis is kept.
    mask = None if result.mask is None or not result.lesions else result.mask.astype(np.uint8)
    return SliceOutcome("lesion" if result.lesions else "no lesion", lesions=len(result.lesions),
                        lesion_area_mm2=result.lesion_area_mm2, mask=mask, outlines=list(result.lesions),
                        warnings=list(result.warnings))


def analyse_series(series: Series, engine, model_ids: list[str] | None = None,
                   progress: Callable[[SeriesProgress], None] | None = None,
                   cancel: threading.Event | None = None, cache: SliceCache | None = None,
                   stack: SeriesStack | None = None, modality: str | None = None,
                   microns_per_pixel: float | None = None) -> SeriesAnalysis:
    """Run every slice of ``series`` through the models, then call the series by VERDICT_RULE.

    ``engine`` is an ``Engine`` (TensorFlow work goes to its thread; call this from any other thread) or an
    ``Analyzer`` (run here: use it on the Engine's thread, as batch runs do). ``model_ids`` default to the
    bundles for the modality of the first slice that loads. Progress is reported after each slice; when
    ``cancel`` is set the run stops between slices and the verdicts cover the slices done (``cancelled``).
    ``microns_per_pixel``: the user's scale of the slices, for bundles that tile at a physical scale (the
    ``cache`` must then hold outcomes at that scale only).
    """
    from core.inference.analyzer import Analyzer, Cancelled

    started = time.perf_counter()
    cancel = cancel or threading.Event()
    cache = cache if cache is not None else SliceCache()
    stack = stack or SeriesStack(series, modality=modality)
    if isinstance(engine, Analyzer):
        analyzer = engine

        def run(fn, *args, **kwargs):
            return fn(*args, **kwargs)
    else:
        analyzer = engine.analyzer

        def run(fn, *args, **kwargs):
            return engine.call(fn, *args, **kwargs).result()

    warnings: list[str] = []
    n = len(series.slices)
    outcomes: dict[str, list[SliceOutcome | None]] = {}
    bundles = [analyzer.registry.get(m) for m in model_ids] if model_ids else None
    analysed, cancelled = 0, False
    failures: list[str] = []
    unread: str | None = None  # the first slice's reason while none could be read
    modality = ""
    for i, ref in enumerate(series.slices):
        if cancel.is_set():
            cancelled = True
            break
        todo: list = []
        try:
            if bundles is None:
                record, _ = stack.record(i)
                modality = modality or record.modality.value
                bundles = analyzer.bundles_for(record)
                if not bundles:
                    warnings.append(f"No model is installed for {record.modality.label} images; choose a model.")
                    break
            todo = []
            for b in bundles:
                hit = cache.get(ref, b.id, b.version)
                outcomes.setdefault(b.id, [None] * n)[i] = hit
                if hit is None:
                    todo.append(b)
            if todo:
                record, frame = stack.record(i)
                modality = modality or record.modality.value
                # a film scored against the other breast's, as analyze and batch score it (alone it had read otherwise)
                analysis = run(analyzer.analyze, record, frame=frame, model_ids=[b.id for b in todo], gradcam=False,
                               cancel=cancel, microns_per_pixel=microns_per_pixel, find_other_breast=other_breast)
                ran = {result.model_id: result for result in analysis.results}
                for b in todo:
                    if b.id in ran:
                        outcome = _outcome(ran[b.id])
                        outcome.warnings[:0] = analysis.warnings
                        cache.put(ref, b.id, b.version, outcome)
                        outcomes[b.id][i] = outcome
                for failure in analysis.failures:  # a bundle that cannot run fails every slice: said once, dropped
                    failures.append(failure.message)
                    bundles = [b for b in bundles if b.id != failure.model_id]
                analysed += 1
        except Cancelled:
            cancelled = True
            break
        except Exception as exc:  # noqa: BLE001 - one bad slice must not stop the series
            message = str(exc) if isinstance(exc, DiagnosticError) else f"unexpected failure: {described(exc)}"
            if isinstance(exc, ModelError) and todo and analysed:
                # the models left to run all failed on this slice, after slices were analysed: each is said once and
                # dropped (no verdict on part of the series), the others go on
                failures += [f"{b.id} did not run: {message}" for b in todo]
                bundles = [b for b in bundles if b not in todo]
            elif isinstance(exc, ModelError):
                raise  # no model could run from the first slice on: said once, as the series' error
            else:
                for b in bundles or []:
                    outcomes.setdefault(b.id, [None] * n)[i] = SliceOutcome(error=message)
                if bundles is None:
                    warnings.append(f"slice {i + 1}: {message}")
                    unread = unread or message
        if progress is not None:
            progress(SeriesProgress(i + 1, n, i, time.perf_counter() - started))
    if cancelled:
        warnings.append("Cancelled: the verdicts cover only the slices analysed before the cancel.")
    results = [verdict(b.id, b.version, b.task, list(b.classes), outcomes.get(b.id, [None] * n), series)
               for b in bundles or []]
    series_disagreements(results)
    return SeriesAnalysis(series, results, warnings + failures, cancelled, time.perf_counter() - started, analysed,
                          unread=unread if bundles is None else None, modality="" if series.modality else modality,
                          failures=failures)


def _slice_list(slices: list[int]) -> str:
    """1-based slice numbers as ranges: [2, 3, 4, 7] -> '2-4, 7'."""
    parts, start = [], None
    for i, s in enumerate(slices):
        start = s if start is None else start
        if i + 1 == len(slices) or slices[i + 1] != s + 1:
            parts.append(f"{start}-{s}" if s > start else f"{s}")
            start = None
    return ", ".join(parts)


def _slices_text(numbers: list[int]) -> str:
    """'slice 4' or 'slices 2-4, 7' (1-based numbers, in order)."""
    return f"slice {numbers[0]}" if len(numbers) == 1 else f"slices {_slice_list(numbers)}"


def series_disagreements(results: list[SeriesVerdict]) -> None:
    """Warn on a series verdict that another model's slices contradict: a segmenter's lesion slices that a
    classifier calls finding-free (P(not normal) under ``ABNORMAL_THRESHOLD``, as the verdict rule reads it), or a
    classifier's abnormal run on whose slices the segmenter, having read each of them, outlines nothing. The
    per-slice warnings say it slice by slice; a reader of the series verdict alone (series.csv, the Findings
    panel) would otherwise take a segmenter's outline of a normal structure for a lesion the classifiers confirm."""
    from core.inference.results import DISAGREE

    segmenters = [v for v in results if v.task == "segmentation"]
    classifiers = [(v, normal_class(list(next((o.probabilities for o in v.slices if o is not None and o.probabilities),
                                              {})))) for v in results if v.task == "classification"]
    for seg in (v for v in segmenters if v.runs):
        members = [i for a, b in seg.runs for i in range(a, b + 1)]
        for c, normal in classifiers:
            if normal is None:
                continue
            p = _p_abnormal(normal, c.slices)
            free = [i for i in members if p[i - 1] is not None and p[i - 1] < ABNORMAL_THRESHOLD]
            if free:
                seg.warnings.append(f"{DISAGREE}: {c.model} calls '{normal}' {len(free)} of the {len(members)} slices "
                                    f"on which {seg.model} outlines a lesion ({_slices_text(free)}).")
    for c, _ in classifiers:
        for seg in segmenters:
            read = [o is not None and not o.error for o in seg.slices]
            outlined = [r and bool(o.lesions) for r, o in zip(read, seg.slices)]
            for a, b in c.runs:
                if all(read[a - 1:b]) and not any(outlined[a - 1:b]):
                    c.warnings.append(f"{DISAGREE}: {seg.model} outlines no lesion on "
                                      f"{_slices_text(list(range(a, b + 1)))}, which {c.model} calls abnormal.")


def _slice_warnings(outcomes: list[SliceOutcome | None]) -> list[str]:
    """Per-slice warnings about the image (modality, a picture unlike the model's training images) or its reading (a
    film scored alone), grouped by kind: 'Unsure modality on 3 of 24 slices (...)'."""
    kinds: dict[str, list[tuple[int, str]]] = {}
    for i, o in enumerate(outcomes):
        for w in o.warnings if o is not None else []:
            if "modality" in w.lower() or w.startswith((UNTESTED_BODY_PART, UNUSUAL)) or "scored alone" in w:
                kind, _, rest = w.partition(":")
                kinds.setdefault(kind, []).append((i, rest.strip()))
    out = []
    for kind, hits in kinds.items():
        if not kind.startswith(UNUSUAL):
            out.append(f"{kind} on {len(hits)} of {len(outcomes)} slices (slice {hits[0][0] + 1}: {hits[0][1]})")
        elif beyond_chance(len(hits), len(outcomes)):  # each slice's own warning says how far; here, how many
            out.append(f"{kind} on {len(hits)} of {len(outcomes)} slices, more than chance gives: unlike the images "
                       "its network learnt from, its answers there are less reliable.")
    return out


def _unusual_call(model: str, label: str | None, outcomes: list[SliceOutcome | None], first: int, last: int) -> list[str]:
    """A warning where at least half the slices a call rests on (a classifier's finding, a segmenter's lesion;
    ``first``-``last``, 1-based) were unlike the images the model's network learnt from (core.models.novelty): the call
    may be the far-off pictures', not the patient's."""
    unusual = sum(1 for o in outcomes[first - 1:last] if o is not None and o.unusual)
    count = last - first + 1
    if unusual * 2 < count:
        return []
    return [f"{UNUSUAL}s under the call: {unusual} of the {count} slices {first}-{last} on which {model} calls "
            f"'{label}' are unlike the images its network learnt from; read those slices yourself."]


# ----------------------------------------------------------------------------------------------- for the window
@dataclass
class StripCurve:
    """One model's value along the slices, 0..1 (None: no result for that slice), as the strip plot draws it."""

    model: str
    title: str  # what the value is, e.g. "P(not notumor)"
    values: list[float | None]
    threshold: float | None  # the verdict's line (classifiers with a normal class)
    runs: list[tuple[int, int]]  # the verdict's qualifying runs, 1-based (first, last)
    unusual: list[bool] = field(default_factory=list)  # per slice: flagged by the model's input check


def strip_curves(analysis: SeriesAnalysis, classes: dict[str, list[str]] | None = None) -> list[StripCurve]:
    """Per verdict, the value the rule looks at: P(not normal) for classifiers with a normal class, else
    P(series label); for segmenters the lesion area relative to the largest slice area (lesion count where
    pixel spacing is unknown, relative likewise). ``classes``: model id -> classes (default: from the outcomes)."""
    curves = []
    for v in analysis.results:
        usable = [o if o is not None and not o.error else None for o in v.slices]
        unusual = [o is not None and o.unusual for o in usable]
        if v.task == "classification":
            names = (classes or {}).get(v.model) or next((list(o.probabilities) for o in usable if o), [])
            normal = normal_class(names)
            if normal is not None:
                values = [None if o is None else 1.0 - o.probabilities.get(normal, 0.0) for o in usable]
                curves.append(StripCurve(v.model, f"P(not {normal})", values, ABNORMAL_THRESHOLD, list(v.runs), unusual))
            else:
                values = [None if o is None else o.probabilities.get(v.label, 0.0) for o in usable]
                curves.append(StripCurve(v.model, f"P({v.label})", values, None, [], unusual))
            continue
        known = all(o is None or o.lesion_area_mm2 is not None for o in usable)
        raw = [None if o is None else float(o.lesion_area_mm2 if known else o.lesions or 0) for o in usable]
        top = max((r for r in raw if r is not None), default=0.0)
        values = [None if r is None else (r / top if top > 0 else 0.0) for r in raw]
        title = f"lesion area (1 = {top:.0f} mm²)" if known else "lesions (relative)"
        curves.append(StripCurve(v.model, title, values, None, list(v.runs), unusual))
    return curves


def verdict_text(v: SeriesVerdict) -> str:
    """One line for a verdict as the window shows it; slice numbers 1-based."""
    n = len(v.slices)
    if v.label is None:
        analysed = sum(1 for o in v.slices if o is not None and not o.error)
        # withheld (VERDICT_RULE: a call that needs every slice), or nothing to say at all
        return f"{v.model}: no verdict for the whole series ({analysed} of {n} slices analysed)" if analysed else \
            f"{v.model}: no result"
    if v.task == "classification":
        text = f"{v.model}: {v.label}" + ("" if v.probability is None else f" ({v.probability:.0%})")
        if v.first_slice is not None:
            text += f", slices {v.first_slice}-{v.last_slice} of {n}{v.instances_text()}{_runs_text(v)}"
        elif normal_class([v.label]) is not None:
            text += f", no {MIN_RUN} adjacent abnormal slices of {n}" if n > 1 else ""
        return text
    if v.label == "lesion":
        volume = "volume unknown" if v.lesion_volume_ml is None else f"volume {v.lesion_volume_ml:.2f} ml"
        return f"{v.model}: lesion on slices {v.first_slice}-{v.last_slice} of {n}{v.instances_text()}{_runs_text(v)}, " \
            f"{volume}"
    return f"{v.model}: no lesion" + (f" on {MIN_RUN} adjacent slices of {n}" if n > 1 else "")


def _runs_text(v: SeriesVerdict) -> str:
    """' (runs: 14-16, 20-23)' where the verdict's range holds several runs: the slices between are not part of it."""
    return " (runs: " + ", ".join(f"{a}-{b}" for a, b in v.runs) + ")" if len(v.runs) > 1 else ""


def submit_series(series: Series, engine, **options) -> Future:
    """``analyse_series`` on a thread of its own (TensorFlow work still goes to the Engine): for the GUI."""
    future: Future = Future()

    def work() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(analyse_series(series, engine, **options))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the Future
            future.set_exception(exc)

    threading.Thread(target=work, name="series-analysis", daemon=True).start()
    return future
