"""Bundles on ONNX Runtime: Grad-CAM's gradient appended to an ONNX graph (core.models.onnx_grad) against
TensorFlow's, bundle exports (core.inference.onnx_export) analysed as TensorFlow analyses them, found only for the
network they were made from, and a process that runs them with TensorFlow impossible to import."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from core.imaging import load_image
from core.inference.analyzer import Analyzer
from core.models.exports import export_roots, find_export, fingerprint
from core.models.registry import BUILTIN_MODELS, Registry
from tests.conftest import REPO

pytestmark = pytest.mark.slow
SAMPLE = REPO / "resources" / "samples" / "brain_mri_sample.jpg"


def _xception_like(keras):
    """The ops of an Xception top block: a depthwise-separable conv, batch norm, a 3x3/2 max pool beside a strided
    1x1 residual conv, relu, global average pooling, dense logits; the CAM activation is the model's input."""
    keras.utils.set_random_seed(3)
    activation = keras.Input((9, 9, 6), name="cam")
    x = keras.layers.SeparableConv2D(10, 3, padding="same", use_bias=False)(activation)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same")(x)
    skip = keras.layers.BatchNormalization()(keras.layers.Conv2D(10, 1, strides=2, use_bias=False)(activation))
    x = keras.layers.Activation("relu", name="late_act")(keras.layers.Add()([x, skip]))
    x = keras.layers.Conv2D(12, 3, strides=2, padding="same", activation="relu")(x)
    logits = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(activation, logits)
    for layer in model.layers:  # batch norm statistics that are not the identity
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            rng = np.random.default_rng(n)
            layer.set_weights([rng.uniform(0.5, 2, n), rng.normal(0, 0.3, n), rng.normal(0, 0.5, n), rng.uniform(0.5, 2, n)])
    return model


def test_appended_gradient_equals_tensorflows(tmp_path):
    import keras
    import onnxruntime as ort

    from core.inference.gradcam import GradCam, heatmaps
    from core.inference.onnx_export import _convert
    from core.models.exports import CHOSEN, GRADS, TARGET
    from core.models.onnx_grad import add_cam_gradients

    model = _xception_like(keras)
    x = np.random.default_rng(0).normal(0, 1, (3, 9, 9, 6)).astype(np.float32)
    graph = _convert(model, [x], None)
    path = tmp_path / "cam.onnx"
    import onnx

    onnx.save(add_cam_gradients(graph, graph.graph.output[0].name, "in0"), str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for target in (None, 2):
        ref_logits, ref_maps, ref_chosen = GradCam(model, None)([x], target)
        feed = {"in0": x, TARGET: np.full(3, -1 if target is None else target, np.int64)}
        logits, grads, chosen = session.run([graph.graph.output[0].name, GRADS, CHOSEN], feed)
        np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
        assert (chosen == ref_chosen).all()
        for plus in (False, True):
            np.testing.assert_allclose(heatmaps(x, grads, plus), GradCam(model, None)([x], target, plus)[1], atol=1e-5)
    # The gradient itself, not only the maps: TensorFlow's tape on the same rows.
    import tensorflow as tf

    tensor = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(tensor)
        score = tf.gather(model(tensor, training=False), [2, 2, 2], axis=1, batch_dims=1)
    want = tape.gradient(score, tensor).numpy()
    np.testing.assert_allclose(session.run([GRADS], {"in0": x, TARGET: np.full(3, 2, np.int64)})[0], want, atol=1e-5)


def test_lesion_pooling_heads_gradient_equals_tensorflows(tmp_path):
    """The head on a segmenter's encoder (average, maximum and lesion-weighted average of its deepest map, then one
    linear layer): ReduceMax, ReduceSum, Div and Concat gradients against TensorFlow's tape."""
    import keras
    import onnx
    import onnxruntime as ort
    import tensorflow as tf

    from core.inference.onnx_export import _convert
    from core.models.exports import GRADS, TARGET
    from core.models.lesion_pooling import pooling_head
    from core.models.onnx_grad import add_cam_gradients

    keras.utils.set_random_seed(5)
    head = pooling_head((4, 4, 6), 16, 3)
    rng = np.random.default_rng(1)
    head.get_layer("logits").set_weights([rng.normal(0, 1, (18, 3)).astype(np.float32),
                                          rng.normal(0, 1, 3).astype(np.float32)])
    features = rng.normal(0, 1, (2, 4, 4, 6)).astype(np.float32)
    lesion = rng.uniform(0, 1, (2, 16, 16, 1)).astype(np.float32)
    graph = _convert(head, [features, lesion], None)
    path = tmp_path / "head.onnx"
    onnx.save(add_cam_gradients(graph, graph.graph.output[0].name, "in0"), str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    tensor = tf.constant(features)
    for target in (0, 2):
        with tf.GradientTape() as tape:
            tape.watch(tensor)
            score = head([tensor, tf.constant(lesion)], training=False)[:, target]
        want = tape.gradient(score, tensor).numpy()
        got = session.run([GRADS], {"in0": features, "in1": lesion, TARGET: np.full(2, target, np.int64)})[0]
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_an_op_without_a_written_gradient_is_refused():
    import keras

    from core.inference.onnx_export import _convert
    from core.models.onnx_grad import UnsupportedGraph, add_cam_gradients

    activation = keras.Input((4, 4, 3))
    logits = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(keras.layers.Activation("tanh")(activation)))
    graph = _convert(keras.Model(activation, logits), [np.zeros((1, 4, 4, 3), np.float32)], None)
    with pytest.raises(UnsupportedGraph, match="Tanh"):
        add_cam_gradients(graph, graph.graph.output[0].name, "in0")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The shipped brain bundles (one stem: the 4-class network's, shared with the yes/no head and the segmenter's
    decoder) exported into a cache of their own."""
    from core.inference.onnx_export import export_bundle

    cache = tmp_path_factory.mktemp("onnx")
    registry = Registry([BUILTIN_MODELS])
    indexes = {b: export_bundle(registry.get(b), cache)
               for b in ("brain-mri-tumor-4class", "brain-mri-tumor-yesno", "brain-mri-tumor-seg")}
    return cache, indexes


def test_brain_bundles_on_onnx_runtime_match_tensorflow(exported, monkeypatch):
    cache, indexes = exported
    monkeypatch.setenv("MIDA_ONNX_CACHE", str(cache))
    registry = Registry([BUILTIN_MODELS])
    onnx, tf = Analyzer(registry, runtime="onnx"), Analyzer(registry, runtime="tensorflow")
    # One stem file for the three bundles; the segmenter takes the skip maps it taps.
    assert len(list((cache / "stems").iterdir())) == 1
    assert len({i["stem"]["key"] for i in indexes.values()}) == 1
    record = load_image(SAMPLE)
    ids = list(indexes)
    for plus in (False, True):
        got = onnx.analyze(record, model_ids=ids, gradcam=True, gradcam_plus=plus).results
        want = tf.analyze(record, model_ids=ids, gradcam=True, gradcam_plus=plus).results
        for a, b in zip(got, want):
            assert a.model_id == b.model_id and a.device == "CPU (ONNX Runtime)" and b.device == "CPU"
            # Weights stored as float16 where tf2onnx folded batch norm into them: differences of ~1e-3.
            if b.probabilities:
                assert a.label == b.label
                assert max(abs(a.probabilities[c] - b.probabilities[c]) for c in b.probabilities) < 2e-3
                assert np.abs(a.heatmap - b.heatmap).max() < 2e-2
            else:
                assert np.abs(a.probability_map - b.probability_map).max() < 1e-2
                assert (a.mask != b.mask).mean() < 1e-3
    # The heatmap of another class than the decided one, as asked (p = 5e-6 here: its gradient is the most
    # sensitive to the rounded weights, 0.022 at most on this slice).
    other = onnx.analyze(record, model_ids=ids[:1], target_class="meningioma").results[0]
    assert other.heatmap_class == "meningioma"
    assert np.abs(other.heatmap - tf.analyze(record, model_ids=ids[:1], target_class="meningioma")
                  .results[0].heatmap).max() < 5e-2


def test_an_export_serves_only_the_network_it_was_made_from(exported, monkeypatch):
    cache, _ = exported
    monkeypatch.setenv("MIDA_ONNX_CACHE", str(cache))
    registry = Registry([BUILTIN_MODELS])
    four = registry.get("brain-mri-tumor-4class")
    roots = export_roots(registry.folders)
    assert find_export(four, roots) is not None
    before = fingerprint(four)
    four.manifest["gradcam_layer"] = "block14_sepconv2_act"  # another heatmap graph than the one exported
    assert fingerprint(four) != before and find_export(four, roots) is None
    four.manifest["gradcam_layer"] = "block13_sepconv2_act"
    assert find_export(four, roots) is not None
    # Taps change the stem's outputs: without the segmenter installed the 4-class stem is another network.
    alone = Registry([BUILTIN_MODELS])
    del alone.bundles["brain-mri-tumor-seg"]
    untapped = alone.get("brain-mri-tumor-4class")
    untapped.stem_taps = ()
    assert find_export(untapped, roots) is None
    # The choice of runtime: TensorFlow when asked, or where the export is missing.
    assert Analyzer(registry, runtime="tensorflow").export(four) is None
    assert Analyzer(registry, runtime="onnx").export(untapped) is None
    with pytest.raises(Exception, match="unknown runtime"):
        Analyzer(registry, runtime="tpu")


def test_exported_bundles_run_where_tensorflow_cannot_be_imported(exported, tmp_path):
    cache, _ = exported
    script = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
        "from core.cli import main\n"
        f"sys.exit(main(['analyze', {str(SAMPLE)!r}, '--json', '--no-history', '--heatmap-out', "
        f"{str(tmp_path / 'heat.png')!r}]))\n")
    env = {**os.environ, "MIDA_ONNX_CACHE": str(cache), "MIDA_RUNTIME": "onnx"}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout)["results"]
    assert [r["model"] for r in results] == ["brain-mri-tumor-4class", "brain-mri-tumor-seg", "brain-mri-tumor-yesno"]
    assert all(r["device"] == "CPU (ONNX Runtime)" for r in results)
    assert (tmp_path / "heat_brain-mri-tumor-4class.png").is_file()


def test_tiny_bundles_without_a_stem_export_and_match(tiny_models, tmp_path, monkeypatch):
    from core.inference.onnx_export import export_bundle

    monkeypatch.setenv("MIDA_ONNX_CACHE", str(tmp_path))
    registry = Registry([tiny_models])
    for bundle in registry.bundles.values():
        index = export_bundle(bundle, tmp_path)
        assert index["stem"] is None
    onnx, tf = Analyzer(registry, runtime="onnx"), Analyzer(registry, runtime="tensorflow")
    for bundle in registry.bundles.values():
        record = load_image(SAMPLE, modality=bundle.modality.value)
        a = onnx.analyze(record, model_ids=[bundle.id]).results[0]
        b = tf.analyze(record, model_ids=[bundle.id]).results[0]
        assert a.device == "CPU (ONNX Runtime)"
        if b.probabilities:
            assert a.label == b.label and np.abs(a.heatmap - b.heatmap).max() < 2e-2
        else:
            assert (a.mask == b.mask).all()
