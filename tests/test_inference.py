"""Inference layer with tiny real models: Grad-CAM, calibration, flags, integrity, safe loading, CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pydicom
import pytest
from PIL import Image

from core.errors import ModelError
from core.imaging import Modality, load_image
from core.inference.analyzer import UNSURE_GUESS, WRONG_MODALITY, Analyzer, Cancelled, Engine
from core.inference.device import configure_device
from core.inference.paths import Request
from core.inference.results import Lesion, ModelResult, disagreements
from core.models.registry import Registry
from tests.conftest import REPO


@pytest.fixture(scope="module")
def analyzer(tiny_models):
    return Analyzer(Registry([tiny_models]))


def test_gradcam_on_nested_model_peaks_inside_planted_lesion(analyzer, planted_png):
    path, (cx, cy) = planted_png
    analysis = analyzer.analyze(load_image(path, modality="MR"))
    result = analysis.results[0]
    assert result.label == "lesion" and result.probabilities["lesion"] > 0.9
    assert result.heatmap.shape == (64, 64) and result.heatmap_class == "lesion"
    py, px = np.unravel_index(np.argmax(result.heatmap), result.heatmap.shape)
    assert np.hypot(px - cx, py - cy) <= 8, (px, py, cx, cy)
    assert result.heatmap[cy, cx] > 0.5 and np.median(result.heatmap) < 0.3


def test_gradcam_for_a_chosen_class_and_plus_variant(analyzer, planted_png):
    record = load_image(planted_png[0], modality="MR")
    other = analyzer.analyze(record, target_class="clear").results[0]
    assert other.heatmap_class == "clear" and other.label == "lesion"
    plus = analyzer.analyze(record, gradcam_plus=True).results[0]
    cx, cy = planted_png[1]
    py, px = np.unravel_index(np.argmax(plus.heatmap), plus.heatmap.shape)
    assert plus.heatmap.max() > 0.95 and np.hypot(px - cx, py - cy) <= 8
    with pytest.raises(ModelError):
        analyzer.analyze(record, target_class="banana")


def test_cam_model_avoids_graph_disconnected(tiny_models):
    from core.models.stages import cam_model

    model = Registry([tiny_models]).get("tiny-mr-classifier").load()
    activation, logits = cam_model(model, "last_conv")(np.zeros((1, 64, 64, 3), np.float32))
    assert activation.shape == (1, 32, 32, 16) and logits.shape == (1, 2)


def test_temperature_and_low_confidence_flag(tiny_models, tmp_path, planted_png):
    folder = tmp_path / "hot"
    shutil.copytree(tiny_models / "tiny-mr-classifier", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(id="tiny-hot", calibration={"temperature": 500.0})
    (folder / "manifest.json").write_text(json.dumps(manifest))
    result = Analyzer(Registry([tmp_path])).analyze(load_image(planted_png[0], modality="MR")).results[0]
    assert max(result.probabilities.values()) < 0.55
    assert any("Low confidence" in w for w in result.warnings)


def test_wrong_modality_is_flagged(analyzer, shared):
    us = load_image(shared / "busi/malignant/malignant (1).png")
    flagged = analyzer.analyze(us, model_ids=["tiny-mr-classifier"]).results[0]
    assert any("wrong modality" in w.lower() for w in flagged.warnings)
    mri = load_image(next((shared / "brain_mri_4class/train/glioma").glob("*.jpg")))
    clean = analyzer.analyze(mri, model_ids=["tiny-mr-classifier"]).results[0]
    assert not any("modality" in w.lower() for w in clean.warnings)


def test_another_modality_preferred_below_the_guard_is_noted(analyzer, tmp_path):
    """Grey noise: the guesser prefers histology at only p 0.54, too low for the wrong-modality warning; a model
    of another modality run on it still says the image does not look like what it was trained on."""
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8)).save(noise)
    record = load_image(noise)
    assert record.modality == Modality.SM and record.modality_confidence < WRONG_MODALITY
    warnings = analyzer.analyze(record, model_ids=["tiny-mr-classifier"]).results[0].warnings
    assert any(w.startswith("Unsure modality: the image looks more like") for w in warnings)
    assert not any("wrong modality" in w.lower() for w in warnings)


def test_unsure_modality_guess_is_flagged(analyzer, shared):
    """A brain slice the guesser takes for MR at only 69 %: the analysis it was routed by says so, once."""
    mri = load_image(shared / "brain_mri_4class/train/glioma/Tr-gl_1101.jpg")
    assert mri.modality_source == "guess" and mri.modality == Modality.MR and mri.modality_confidence < UNSURE_GUESS
    analysis = analyzer.analyze(mri)
    assert "tiny-mr-classifier" in [r.model_id for r in analysis.results]
    assert any("Unsure modality" in w for w in analysis.warnings)


def test_a_blank_picture_is_analysed_with_a_warning(analyzer, tmp_path, planted_png):
    """A slice above the head (one grey level): the models still answer (a batch keeps its row), the analysis says
    their answers mean nothing; a picture with content gets no such warning."""
    blank = np.full((128, 128), 3, np.uint8)
    blank[::17, ::13] = 5  # a few noisy pixels are still nothing
    Image.fromarray(blank).save(tmp_path / "blank.png")
    analysis = analyzer.analyze(load_image(tmp_path / "blank.png", modality="MR"))
    assert analysis.results and any(w.startswith("Blank picture") for w in analysis.warnings)
    shown = analyzer.analyze(load_image(planted_png[0], modality="MR"))
    assert not any(w.startswith("Blank picture") for w in shown.warnings)


def test_a_sliver_is_analysed_with_a_warning(analyzer, tmp_path):
    """A 3000 x 1 line of noise (the guesser may still name a modality): the models answer, the analysis says their
    answers mean nothing; a 64 x 600 strip is as thin as a picture may be without the warning."""
    noise = np.random.default_rng(0).integers(0, 255, (1, 3000), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "line.png")
    analysis = analyzer.analyze(load_image(tmp_path / "line.png", modality="MR"))
    assert analysis.results and any(w.startswith("Implausible picture: 3000 x 1") for w in analysis.warnings)
    strip = np.random.default_rng(1).integers(0, 255, (64, 600), dtype=np.uint8)
    Image.fromarray(strip).save(tmp_path / "strip.png")
    shown = analyzer.analyze(load_image(tmp_path / "strip.png", modality="MR"))
    assert not any(w.startswith("Implausible picture") for w in shown.warnings)


def test_dicom_modality_mismatch_is_flagged(analyzer, pydicom_file):
    ct = load_image(pydicom_file("CT_small.dcm"), modality="US")
    result = analyzer.analyze(ct, model_ids=["tiny-mr-classifier"]).results[0]
    assert any("Wrong modality" in w for w in result.warnings)


def test_tta_reports_agreement(analyzer, planted_png):
    result = analyzer.analyze(load_image(planted_png[0], modality="MR"), tta=True).results[0]
    assert 0.0 <= result.tta_agreement <= 1.0


def _dicom_with_square(tmp_path, spacing=0.5):
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("MR_small.dcm"))
    pixels = np.full((64, 64), 100, np.uint16)
    pixels[20:30, 10:30] = 2000  # 10 x 20 px bright block
    ds.PixelData = pixels.tobytes()
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 15, 0
    ds.Modality = "US"
    ds.PixelSpacing = [spacing, spacing]
    del ds.WindowCenter, ds.WindowWidth
    path = tmp_path / "square.dcm"
    ds.save_as(path)
    return path


def test_segmentation_lesions_in_pixels_and_mm(analyzer, tmp_path):
    record = load_image(_dicom_with_square(tmp_path))
    result = analyzer.analyze(record).results[0]
    assert result.task == "segmentation" and result.mask.shape == (64, 64)
    assert len(result.lesions) == 1
    lesion = result.lesions[0]
    assert abs(lesion.area_px - 200) <= 30
    assert lesion.area_mm2 == pytest.approx(lesion.area_px * 0.25)
    assert lesion.max_diameter_mm == pytest.approx(lesion.max_diameter_px * 0.5, rel=0.01)
    x, y, w, h = lesion.bbox
    assert abs(x - 10) <= 2 and abs(y - 20) <= 2 and abs(w - 20) <= 3 and abs(h - 10) <= 3
    assert lesion.width_mm == pytest.approx(w * 0.5) and lesion.depth_mm == pytest.approx(h * 0.5)
    assert lesion.to_dict()["depth_to_width"] == pytest.approx(h / w, abs=1e-3)


def test_sonographer_calipers_use_each_axis_spacing():
    """Width across and depth along the beam, each in its own axis' spacing; taller than wide above 1."""
    from core.inference.lesions import find_lesions

    mask = np.zeros((100, 100), np.uint8)
    mask[10:50, 30:50] = 1  # 40 rows deep, 20 columns wide
    tall = find_lesions(mask, (0.1, 0.4), calipers=True)[0]  # rows 0.1 mm apart, columns 0.4 mm
    assert tall.depth_mm == pytest.approx(4.0) and tall.width_mm == pytest.approx(8.0)
    assert tall.depth_to_width == pytest.approx(0.5)  # 40 px deep looks taller, but in mm it is wider
    assert "4.0" in tall.size_text() and "taller than wide" not in tall.size_text()
    unknown = find_lesions(mask, None, calipers=True)[0]
    assert unknown.width_mm is None and unknown.depth_to_width == pytest.approx(2.0)
    assert "taller than wide" in unknown.size_text() and "spacing unknown" in unknown.size_text()


def test_lesions_off_ultrasound_have_a_diameter_but_no_calipers():
    """An MR or mammography outline: area and the longest diameter with its two ends; no beam, so no W x D."""
    from core.inference.lesions import find_lesions

    mask = np.zeros((100, 100), np.uint8)
    mask[10:50, 30:50] = 1
    lesion = find_lesions(mask, (0.5, 0.5))[0]
    assert lesion.width_mm is None and lesion.depth_mm is None and lesion.depth_to_width is None
    assert "W x D" not in lesion.size_text() and "D/W" not in lesion.overlay_text()
    (x0, y0), (x1, y1) = lesion.diameter_ends
    assert {round(x0), round(x1)} == {30, 50} and {round(y0), round(y1)} == {10, 50}  # the diagonal, edge to edge
    assert np.hypot(x1 - x0, y1 - y0) * 0.5 == pytest.approx(lesion.max_diameter_mm)
    # Non-square pixels: the longest diameter is the longest in millimetres, not in pixels.
    wide = np.zeros((100, 100), np.uint8)
    wide[40:42, 10:90] = 1  # 80 columns at 0.1 mm = 8 mm wide
    wide[10:90, 60:62] = 1  # 80 rows at 1 mm = 80 mm tall
    (_, ya), (_, yb) = find_lesions(wide, (1.0, 0.1))[0].diameter_ends
    assert abs(ya - yb) >= 70
    assert lesion.to_dict()["depth_to_width"] is None and lesion.to_dict()["diameter_ends"] is not None


def test_a_bundle_path_is_built_once_and_follows_its_manifest(analyzer, planted_png):
    """Analyses reuse the bundle's path; a manifest changed in place gives a new path on the same network."""
    record = load_image(planted_png[0], modality="MR")
    bundle = analyzer.registry.get("tiny-mr-classifier")
    first = analyzer.analyze(record, model_ids=[bundle.id]).results[0]
    path = analyzer.path(bundle)
    again = analyzer.analyze(record, model_ids=[bundle.id]).results[0]
    assert analyzer.path(bundle) is path and again.probabilities == first.probabilities
    bundle.manifest["flip_average"] = True
    try:
        flipped = analyzer.path(bundle)
        assert flipped is not path and flipped.flip_average and not path.flip_average
        assert flipped.network is path.network
    finally:
        bundle.manifest.pop("flip_average")
    assert not analyzer.path(bundle).flip_average


def test_flip_averaged_segmentation_maps_back_to_the_image(analyzer, tmp_path):
    """The mirrored pass is mirrored back: for a pixel-wise model the average equals the plain map."""
    record = load_image(_dicom_with_square(tmp_path))  # the square is off-centre, so a missed un-flip shows
    bundle = analyzer.registry.get("tiny-us-segmenter")
    plain = analyzer.path(bundle).run(record.display(0), Request()).probability_map
    bundle.manifest["flip_average"] = True
    try:
        averaged = analyzer.path(bundle).run(record.display(0), Request()).probability_map
    finally:
        bundle.manifest.pop("flip_average")
    np.testing.assert_allclose(averaged, plain, atol=1e-5)
    assert plain[25, 15] > 0.5 and plain[25, 45] < 0.5


def test_screen_capture_analysed_inside_its_scan_area(analyzer):
    """The screen's bright text and grey bar are 'lesion' to a model that marks bright pixels; cut to the scan
    area, the mask lies inside the picture, in screen coordinates, on the picture's bright spot."""
    from core.training.us_screens import scanner_screen

    picture = np.full((200, 260), 60, np.uint8)
    picture[80:120, 100:150] = 230  # the 'lesion'
    screen, (y0, y1, x0, x1) = scanner_screen(picture, np.random.default_rng(0))
    bundle = analyzer.registry.get("tiny-us-segmenter")
    uncut = analyzer.path(bundle).run(screen, Request()).mask
    bundle.manifest["preprocessing"]["crop"] = "scan"
    try:
        cut = analyzer.path(bundle).run(screen, Request()).mask
    finally:
        bundle.manifest["preprocessing"]["crop"] = "none"
    outside = np.ones(screen.shape, bool)
    outside[y0:y1, x0:x1] = False
    assert uncut[outside].sum() > 100 and cut[outside].sum() == 0
    ys, xs = np.nonzero(cut)
    sy, sx = (y1 - y0) / 200, (x1 - x0) / 260
    assert abs(ys.mean() - (y0 + 100 * sy)) < 4 and abs(xs.mean() - (x0 + 125 * sx)) < 4


def test_sha256_mismatch_is_refused(tiny_models, tmp_path):
    folder = tmp_path / "tampered"
    shutil.copytree(tiny_models / "tiny-mr-classifier", folder)
    with open(folder / "model.keras", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelError, match="does not match"):
        Registry([tmp_path]).get("tiny-mr-classifier").load()


def test_safe_mode_refuses_lambda_layer(tmp_path):
    import keras

    from core.models.storage import save_keras_fp16

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0)(inputs))
    folder = tmp_path / "lambda"
    sha = save_keras_fp16(model, folder / "model.keras")
    manifest = {"id": "lambda", "version": "1", "modality": "MR", "task": "classification", "classes": ["a"],
                "weights": {"file": "model.keras", "sha256": sha}, "preprocessing": {}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="could not be loaded safely"):
        Registry([tmp_path]).get("lambda").load()


def test_float16_storage_keeps_out_of_range_arrays_exact(tmp_path):
    """Weights are halved on disk, except an array float16 cannot hold (it would turn into inf)."""
    import keras

    from core.models.storage import save_keras_fp16

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="dense")(inputs))
    kernel = np.full((4, 2), 0.1, np.float32)
    bias = np.array([1e6, -3.0], np.float32)  # beyond float16's 65504
    model.get_layer("dense").set_weights([kernel, bias])
    save_keras_fp16(model, tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False).get_layer("dense").get_weights()
    np.testing.assert_array_equal(loaded[1], bias)
    np.testing.assert_allclose(loaded[0], kernel, rtol=1e-3)  # halved: within float16 precision


def test_cpu_path_and_engine_cancel(analyzer, planted_png):
    import tensorflow as tf

    record = load_image(planted_png[0], modality="MR")
    engine = Engine(analyzer)
    result = engine.submit(record).result(timeout=120).results[0]
    if not tf.config.list_physical_devices("GPU"):
        assert result.device == "CPU" == configure_device()
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        engine.submit(record, cancel=cancel).result(timeout=60)
    engine.shutdown()


def test_analyze_cli_json_and_files(tiny_models, planted_png, tmp_path):
    env = dict(os.environ, MIDA_USER_MODELS=str(tiny_models))
    run = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "analyze", str(planted_png[0]), "--modality", "MR", "--json",
         "--model", "tiny-mr-classifier", "--heatmap-out", str(tmp_path / "heat.png")],
        capture_output=True, text=True, cwd=REPO, env=env,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout)
    result = out["results"][0]
    assert result["model"] == "tiny-mr-classifier" and result["label"] == "lesion"
    assert set(result["probabilities"]) == {"clear", "lesion"} and result["device"]
    assert (tmp_path / "heat.png").exists() and result["heatmap_file"].endswith("heat.png")


def test_analyze_cli_bad_input_is_clean_json(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    run = subprocess.run([sys.executable, str(REPO / "main.py"), "analyze", str(tmp_path / "x.png"), "--json"],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "x.png" in json.loads(run.stdout)["error"]


def test_analyze_cli_all_frames(tiny_models, pydicom_file, tmp_path):
    env = dict(os.environ, MIDA_USER_MODELS=str(tiny_models))
    run = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "analyze", str(pydicom_file("SC_rgb_rle_2frame.dcm")), "--modality", "MR",
         "--model", "tiny-mr-classifier", "--all-frames", "--json", "--heatmap-out", str(tmp_path / "h.png")],
        capture_output=True, text=True, cwd=REPO, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    frames = json.loads(run.stdout)["frames"]
    assert [f["frame"] for f in frames] == [0, 1]
    assert (tmp_path / "h_f0.png").exists() and (tmp_path / "h_f1.png").exists()
    bad = subprocess.run([sys.executable, str(REPO / "main.py"), "analyze", str(pydicom_file("SC_rgb_rle_2frame.dcm")),
                          "--frame", "5", "--json"], capture_output=True, text=True, cwd=REPO, env=env)
    assert bad.returncode == 2 and "frame 5" in json.loads(bad.stdout)["error"]


def test_analyze_cli_all_frames_keeps_the_frames_read_before_a_missing_one(tiny_models, tmp_path):
    """NumberOfFrames says 4, the pixel data holds 2: frames 0 and 1 are reported with the error for frame 2."""
    from tests.series_data import bare_mr_dicom

    ds = bare_mr_dicom(32, 32, frames=4)
    ds.PixelData = np.random.default_rng(1).integers(0, 255, (2, 32, 32), dtype=np.uint8).tobytes()
    ds.save_as(tmp_path / "short.dcm", enforce_file_format=True)
    env = dict(os.environ, MIDA_USER_MODELS=str(tiny_models))
    base = [sys.executable, str(REPO / "main.py"), "analyze", str(tmp_path / "short.dcm"), "--model",
            "tiny-mr-classifier", "--all-frames", "--no-history"]
    run = subprocess.run(base + ["--json"], capture_output=True, text=True, cwd=REPO, env=env)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    out = json.loads(run.stdout)
    assert [f["frame"] for f in out["frames"]] == [0, 1]
    assert all(f["results"] for f in out["frames"])
    assert out["error"].startswith("frame 2 of 4:") and "not analysed" in out["error"]
    text = subprocess.run(base, capture_output=True, text=True, cwd=REPO, env=env)
    assert text.returncode == 2 and "frame 1" in text.stdout and "error: frame 2 of 4" in text.stdout


def test_false_lesion_gate_drops_only_faint_components():
    from core.inference.lesions import drop_unsure_components

    prob = np.zeros((40, 40), np.float32)
    prob[5:15, 5:15] = 0.6  # faint everywhere
    prob[20:35, 20:35] = 0.7
    prob[27, 27] = 0.97  # one sure pixel keeps its whole component
    mask = (prob >= 0.5).astype(np.uint8)
    gated = drop_unsure_components(mask, prob, 0.9)
    assert gated[5:15, 5:15].sum() == 0 and gated[20:35, 20:35].all()
    assert gated.sum() == 15 * 15 and gated.dtype == mask.dtype
    np.testing.assert_array_equal(drop_unsure_components(mask, prob, 0.0), mask)


def test_segmenter_applies_its_manifest_false_lesion_gate(analyzer):
    """The tiny segmenter maps grey level to probability: a 255 square is sure, a 135 square is faint."""
    image = np.zeros((64, 64), np.uint8)
    image[5:20, 5:20] = 255
    image[35:55, 35:55] = 135
    bundle = analyzer.registry.get("tiny-us-segmenter")
    plain = analyzer.path(bundle).run(image, Request())
    bundle.manifest["min_lesion_peak"] = 0.9
    try:
        gated = analyzer.path(bundle).run(image, Request())
    finally:
        bundle.manifest.pop("min_lesion_peak")
    assert len(plain.lesions) == 2 and 0.5 < plain.probability_map[45, 45] < 0.9
    assert len(gated.lesions) == 1 and gated.mask[45, 45] == 0 and gated.mask[10, 10] == 1
    np.testing.assert_array_equal(gated.probability_map, plain.probability_map)


def test_shipped_transfer_bundle_runs_on_its_parents_loaded_network():
    """The yes/no bundle reuses the 4-class bundle's loaded trunk and head (one copy of the backbone in
    memory) and, standalone, still finds its parent beside it; either way the same logits."""
    from core.models.registry import BUILTIN_MODELS, Bundle

    registry = Registry([BUILTIN_MODELS])
    parent = registry.get("brain-mri-tumor-4class").load()
    child = registry.get("brain-mri-tumor-yesno").load()
    assert child.layers[1] is parent.layers[1]  # the frozen trunk, shared
    folder = BUILTIN_MODELS / "brain-mri-tumor-yesno"
    standalone = Bundle.from_folder(folder).load()
    assert standalone.layers[1] is not parent.layers[1]
    x = np.random.default_rng(0).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    np.testing.assert_allclose(child.predict_on_batch(x), standalone.predict_on_batch(x), atol=1e-5)
    # Split for the Analyzer: one stem object for both, and stem + rest compute the whole model.
    stages, parent_stages = registry.get("brain-mri-tumor-yesno").stages(), registry.get("brain-mri-tumor-4class").stages()
    assert stages.stem is parent_stages.stem and stages.key == parent_stages.key
    assert parent_stages.stem is not None  # cut inside the trained top block at block 13 (tests/test_stages.py)
    shared = stages.stem(x, training=False)
    np.testing.assert_allclose(stages.rest(stages.pick(shared), training=False), child(x, training=False), atol=1e-5)
    np.testing.assert_allclose(parent_stages.rest(parent_stages.pick(shared), training=False), parent(x, training=False),
                               atol=1e-5)


def test_shipped_bundles_state_the_interval_of_their_headline_metric():
    """12 of 12 right is not 100 %: the summary (window, `models`) gives the Wilson interval beside it."""
    from core.models.registry import BUILTIN_MODELS, metrics_text

    registry = Registry([BUILTIN_MODELS])
    for bundle_id in ("breast-histology-2class", "brain-mri-tumor-yesno"):  # 112 and 30 validation images
        summary = registry.get(bundle_id).summary()
        low, high = summary["interval"]
        accuracy = summary["metrics"]["accuracy"]
        assert low < accuracy <= high and high - low > 0.1
        assert metrics_text(summary).startswith(f"accuracy {accuracy:.3f} [95 % CI {low:.3f}-{high:.3f}]")
    segmenter = registry.get("breast-us-lesion-seg").summary()
    assert segmenter["interval"][0] < segmenter["metrics"]["dice"] < segmenter["interval"][1]


def _seg_result(lesions: int) -> ModelResult:
    lesion = Lesion(1, 40, None, (0, 0, 8, 5), 9.4, None, np.zeros((4, 2)))
    return ModelResult("us-seg", "1", "segmentation", "cpu", lesions=[lesion] * lesions)


def _call(label: str) -> ModelResult:
    return ModelResult("us-3class", "1", "classification", "cpu", ["benign", "malignant", "normal"],
                       {"benign": 0.1, "malignant": 0.1, "normal": 0.8} if label == "normal" else
                       {"benign": 0.7, "malignant": 0.2, "normal": 0.1}, label)


@pytest.mark.parametrize("seg_first", [True, False])
def test_an_outline_on_a_picture_called_finding_free_is_warned_of_on_the_later_result(seg_first):
    seg, call = _seg_result(2), _call("normal")
    first, later = (seg, call) if seg_first else (call, seg)
    (warning,) = disagreements(later, [first])
    assert warning.startswith("Models disagree") and "us-3class" in warning and "'normal' (80%)" in warning
    assert "2 lesion(s)" in warning and "us-seg" in warning


def test_agreeing_models_raise_no_warning():
    assert disagreements(_seg_result(1), [_call("benign")]) == []  # an outline and a finding
    assert disagreements(_seg_result(0), [_call("normal")]) == []  # no outline on a normal picture
    assert disagreements(_call("normal"), [_call("normal")]) == []  # two classifiers
