"""``python main.py models export``: each bundle's network as ONNX files that ONNX Runtime runs without TensorFlow.

Why: on a CPU, ONNX Runtime runs these networks faster than TensorFlow at the same probabilities (float32 both;
docs/bench/fast_forward.md), a process that needs no TensorFlow starts in a fraction of the time, and a frozen
app without it is a fraction of the size. Each bundle's stages (core.models.stages) are converted with tf2onnx:
the stem (shared by the bundles whose stems share a key: one file), the rest, and a Grad-CAM graph per layer its
heatmaps explain (core.models.onnx_grad). Every export is checked against TensorFlow on random inputs before its
index is written; the index records the differences. Where a graph cannot be exported (an op whose gradient
is not written), the bundle keeps running on TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from core.errors import ModelError
from core.models.exports import EXPORT_FORMAT, STEMS_FOLDER, CamGraph, export_folder, fingerprint
from core.models.stages import cam_model, cam_site
from core.models.storage import sha256_file

OPSET = 17
# Refused above these differences from TensorFlow (the weights stored as float16 move logits by ~1e-3): the
# exported network would not be the bundle's. Stem outputs are compared relative to their largest value.
MAX_LOGIT_DIFF = 1e-2
MAX_STEM_DIFF = 1e-2
MAX_HEATMAP_DIFF = 2e-2  # heatmaps peak-scaled to 1
HALVED_FROM = 1024  # weights of at least this many values are stored as float16


def export_bundle(bundle, root: Path) -> dict:
    """Writes ``bundle``'s export under ``root`` (``<id>/<fingerprint>/``, stems in ``stems/``); returns its index.
    Each file is written under a temporary name and renamed when whole, so a killed export leaves no file cut short
    under a name an index gives."""
    import tf2onnx

    from core.inference.gradcam import GradCam
    from core.inference.onnx_network import OnnxGradCam, OnnxModel
    from core.models.onnx_grad import add_cam_gradients

    info = bundle.info
    stages, model = bundle.stages(), bundle.load()
    key = fingerprint(bundle)
    folder = export_folder(root, info.id, key)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (2, *info.input_size)).astype(np.float32)
    index: dict = {"format": EXPORT_FORMAT, "bundle": info.id, "fingerprint": key,
                   "exporter": f"tf2onnx {tf2onnx.__version__}, opset {OPSET}", "stem": None, "picks": None, "cam": stages.cam,
                   "cams": {}, "check": {}}
    if stages.stem is not None:
        stem_outputs = _as_list(stages.stem(image, training=False))
        index["stem"], index["check"]["stem_max_rel_diff"] = _shared_stem(stages, image, stem_outputs, Path(root))
        index["picks"] = list(stages.picks) if stages.picks is not None else None
        rest_inputs = stages.pick(stem_outputs)
    else:
        rest_inputs = [image]
    rest_inputs = [np.asarray(a, np.float32) for a in rest_inputs]
    _convert(stages.rest, rest_inputs, folder / "rest.onnx", static=False)
    index["rest"] = _written(folder, "rest.onnx")
    expected = np.asarray(_as_list(stages.rest(rest_inputs if len(rest_inputs) > 1 else rest_inputs[0], training=False))[0])
    got = OnnxModel(folder / "rest.onnx")(rest_inputs)[0]
    index["check"]["rest_max_abs_diff"] = float(np.abs(got - expected).max())
    if info.task == "classification":
        for layer in {bundle.cam_layer(False), bundle.cam_layer(True)} - {None}:
            site = cam_site(stages, layer, info.gradcam_layer)
            if site == "input":  # the rest's first input is the activation: the rest itself, gradient appended
                key, net, inputs, activation_output = "", stages.rest, rest_inputs, None
            elif site == "rest":
                key, net, inputs, activation_output = layer, cam_model(stages.rest, layer), rest_inputs, 0
            else:
                key, net, inputs, activation_output = layer, cam_model(model, layer), [image], 0
            name = f"cam-{key or 'input'}.onnx"
            graph = _convert(net, inputs, None)
            outputs = [o.name for o in graph.graph.output]
            logits = outputs[-1]
            activation = graph.graph.input[0].name if activation_output is None else outputs[activation_output]
            _save(add_cam_gradients(graph, logits, activation), folder / name)
            on = "rest" if inputs is rest_inputs else "image"
            index["cams"][key] = _written(folder, name, on=on, logits=logits, activation=activation)
            got_logits, maps, got_chosen = OnnxGradCam(CamGraph(folder / name, on == "rest", logits, activation))(inputs)
            ref_logits, ref_maps, ref_chosen = GradCam(model if on == "image" else stages.rest, None if key == "" else layer)(inputs)
            index["check"][f"cam {key or 'rest input'}"] = {
                "logits_max_abs_diff": float(np.abs(got_logits - ref_logits).max()),
                "heatmap_max_abs_diff": float(np.abs(maps - ref_maps).max()),
                "same_class": bool((got_chosen == ref_chosen).all())}
    _refuse_if_off(info.id, index["check"])
    (folder / "index.json.tmp").write_text(json.dumps(index, indent=1) + "\n")
    os.replace(folder / "index.json.tmp", folder / "index.json")
    return index


def _shared_stem(stages, image: np.ndarray, outputs: list, root: Path) -> tuple[dict, float]:
    """(the stem's index entry, its largest difference from TensorFlow relative to each output's largest value).

    Bundles on one stem share its file: the key names every file of its network and its cut, the outputs its taps.
    A file there already (another bundle's export) is used where it loads and matches TensorFlow; one that does not
    (cut short, damaged) is written again."""
    from core.inference.onnx_network import OnnxModel

    shapes = [list(np.shape(o)[1:]) for o in outputs]
    stem_id = hashlib.sha256(json.dumps([EXPORT_FORMAT, stages.key, shapes]).encode()).hexdigest()[:16]
    name = f"{STEMS_FOLDER}/{stem_id}.onnx"

    def difference() -> float:
        got = OnnxModel(root / name)([image])
        return max(float(np.abs(g - np.asarray(e)).max() / max(np.abs(e).max(), 1e-6)) for g, e in zip(got, outputs))

    try:
        diff = difference() if (root / name).is_file() else None
    except ModelError:  # a file that does not load
        diff = None
    if diff is None or diff > MAX_STEM_DIFF:
        _convert(stages.stem, [image], root / name, static=False)
        diff = difference()
    return _written(root, name, key=f"{stages.key}#{stem_id}"), diff


def _written(base: Path, name: str, **entry) -> dict:
    """An index entry for the file ``name`` under ``base``: its name, the size and sha256 it was written with,
    ``entry``."""
    return {"file": name, "size": (base / name).stat().st_size, "sha256": sha256_file(base / name), **entry}


def _refuse_if_off(bundle_id: str, check: dict) -> None:
    off = [name for name, value in check.items()
           if (value > (MAX_STEM_DIFF if name.startswith("stem") else MAX_LOGIT_DIFF) if isinstance(value, float) else
               value["logits_max_abs_diff"] > MAX_LOGIT_DIFF or value["heatmap_max_abs_diff"] > MAX_HEATMAP_DIFF
               or not value["same_class"])]
    if off:
        raise ValueError(f"{bundle_id}: the ONNX export differs from TensorFlow ({', '.join(off)}: {check})")


def _convert(net, inputs: list[np.ndarray], path: Path | None, static: bool = True):
    """``net`` (a Keras model) through tf2onnx with inputs shaped like ``inputs`` (any batch); saved where ``path``.

    ``static``: the spatial sizes fixed as in ``inputs`` (what the gradient graph needs); else left open, so that
    tf2onnx gives each Resize its output size rather than a float scale (a scale of 125/62 gives 124 rows)."""
    import tensorflow as tf
    import tf2onnx

    specs = tuple(tf.TensorSpec([None, *(np.shape(a)[1:] if static else [None] * (np.ndim(a) - 2) + [np.shape(a)[-1]])],
                                tf.float32, name=f"in{i}") for i, a in enumerate(inputs))
    if len(specs) == 1:
        fn = tf.function(lambda a: net(a, training=False))
    else:
        fn = tf.function(lambda *a: net(list(a), training=False))
    graph, _ = tf2onnx.convert.from_function(fn, input_signature=specs, opset=OPSET)
    if path is not None:
        _save(graph, path)
    return graph


def _halved(model):
    """``model`` with each large float32 weight stored as float16 and cast back when ONNX Runtime loads it (its
    constant folding turns the Cast into float32 weights: the arithmetic stays float32). Half the size on disk;
    the bundles' own weights are float16 already, so only what tf2onnx folded into them (batch norm) is rounded."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    kept = []
    for tensor in graph.initializer:
        if tensor.data_type != TensorProto.FLOAT or np.prod(tensor.dims) < HALVED_FROM:
            kept.append(tensor)
            continue
        values = numpy_helper.to_array(tensor)
        kept.append(numpy_helper.from_array(values.astype(np.float16), f"{tensor.name}__float16"))
        graph.node.insert(0, helper.make_node("Cast", [f"{tensor.name}__float16"], [tensor.name], to=TensorProto.FLOAT,
                                              name=f"{tensor.name}__cast"))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return model


def _save(model, path: Path) -> None:
    """``model`` halved (``_halved``) in ``path``, written under a temporary name and renamed when whole."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        onnx.save(_halved(model), str(temporary))
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _as_list(outputs) -> list:
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
