"""A faster forward pass for the brain 4-class network? A probe, measured only (nothing here is wired into core).

    pip install onnxruntime tf2onnx onnx
    python bench/fast_forward.py [--rounds 30] [--eval 240] [--calib 50] [--no-int8] [--no-bf16] [--tf-threads N] [--keep DIR]
                                 [--int8-variants] [--bf16-rewrite] [--openvino] [--openvino-mixed K [K ...]]

Paths, each fed what the bundle's analysis path (``core.inference.paths.ClassifierPath``) feeds the network
(the preprocessed image and its mirror in one batch of 2, as the bundle's ``flip_average`` asks), each giving
logits that are averaged over the two views and turned into probabilities with the bundle's temperature, as the
product does:

* TensorFlow float32: the Keras model the bundle loads (``Bundle.load``) in a ``tf.function``, as
  ``core.inference.paths.Compiled`` runs it (the reference);
* ONNX Runtime float32: that model exported to ONNX with tf2onnx (Keras 3 ``model.export(format="onnx")`` when
  tf2onnx is missing), run by the CPU execution provider with its default threads, and with one thread (threads do not
  spin-wait between runs);
* ONNX Runtime int8: post-training static quantisation of that ONNX model (QDQ, per-channel int8 weights,
  uint8 activations, ``reduce_range`` as ONNX Runtime advises on x86 without VNNI; MinMax calibration over
  ``--calib`` validation slices disjoint from the evaluated ones);
* with ``--int8-variants``, also: static QDQ at full 8-bit range (ONNX Runtime's advice where the CPU has VNNI),
  static QOperator (QLinearConv etc. written out, full range) and dynamic quantisation (int8 weights, activations
  quantised per run: ConvInteger / MatMulInteger), all run by the same CPU execution provider, whose MLAS kernels
  pick the AVX-512 VNNI int8 dot products by cpuid where the CPU has them;
* TensorFlow bfloat16: the same model rebuilt with Keras' ``mixed_bfloat16`` policy on every layer (oneDNN
  emulates bf16 on CPUs without AVX-512 BF16 / AMX);
* with ``--bf16-rewrite``, also: the float32 graph (variables frozen to constants) run in a TF1 session whose
  Grappler config turns on ``auto_mixed_precision_onednn_bfloat16`` (oneDNN's bf16 auto-mixed-precision rewrite),
  next to the same frozen graph in a session without the rewrite (its control: frozen graph vs ``tf.function``);
* with ``--openvino`` (``pip install openvino``), also: the same ONNX file compiled by OpenVINO's CPU plugin with
  ``INFERENCE_PRECISION_HINT`` f32 and bf16 (bf16 runs on AMX tiles or AVX-512 BF16 where the CPU has them);
* with ``--openvino-mixed K ...``, also: that ONNX file cut after its K-th residual Add (``onnx.utils.extract_model``),
  the part before the cut compiled by OpenVINO in f32 and the part after it in bf16 (bf16's error on this network
  comes mostly from its first blocks), one path per K.

Speed: each path once per round in a fixed order (bench/stats.py ``interleave``), ``--rounds`` rounds on the
bundled brain sample, printed as median ms and the median of per-round ratios to TensorFlow float32 with a
bootstrap 95 % interval. Agreement: ``--eval`` slices of the bundle's validation split (evenly spaced through
split.json "val", paths relative to the shared data folder, preprocessed as the product does): the largest
|p - p_float32| over all classes and slices, and how many labels change. Floor: FLOPs per classification over
the best float32 matmul rate measured here, on all threads and on one (bench/floor.py). ``--tf-threads 1`` runs
the TensorFlow reference on one intra-op thread, to tell a faster runtime from a better thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.stats import interleave, median, table  # noqa: E402

BUNDLE = REPO / "models" / "brain-mri-tumor-4class"
DATA = Path(os.environ.get("MIDA_DATA", REPO.parent / "shared" / "data"))
SAMPLE = REPO / "resources" / "samples" / "brain_mri_sample.jpg"
TF32 = "TensorFlow float32 (as Analyzer)"


# ------------------------------------------------------------------------------------------------ inputs
def product_batch(path: Path, bundle) -> "np.ndarray":  # noqa: F821
    """What ``ClassifierPath.run`` feeds the network for the image file: (2, H, W, 3) image + mirror (or (1, ...))."""
    import numpy as np

    from core.imaging import load_image
    from core.models.preprocessing import prepare_display, preprocess

    x = preprocess(prepare_display(load_image(path).display(0), bundle.spec), bundle.spec)[None]
    return np.ascontiguousarray(np.concatenate([x, x[:, :, ::-1]]) if bundle.info.flip_average else x, np.float32)


def validation_picks(bundle, n_eval: int, n_calib: int) -> tuple[list[Path], list[Path]]:
    """(evaluated, calibration) files: evenly spaced through the bundle's split.json "val" entries, disjoint."""
    val = [DATA / entry[0] for entry in json.loads((bundle.folder / "split.json").read_text())["val"]]
    step = max(1, len(val) // n_eval)
    evaluated = val[::step][:n_eval]
    rest = [p for p in val if p not in set(evaluated)]
    calibration = rest[:: max(1, len(rest) // n_calib)][:n_calib]
    return evaluated, calibration


def probabilities(logits, temperature: float):
    """The product's probabilities: logits averaged over the views, softmax at the bundle's temperature."""
    import numpy as np

    z = logits.mean(axis=0) / temperature
    e = np.exp(z - z.max())
    return e / e.sum()


# ------------------------------------------------------------------------------------------------ the paths
def tensorflow_path(model) -> Callable:
    import numpy as np
    import tensorflow as tf

    fn = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True, autograph=False)
    return lambda x: np.asarray(fn(x), np.float32)


def export_onnx(model, size: int, path: Path) -> str:
    """The Keras model as an ONNX file with input "image" (N, size, size, 3); returns how it was exported."""
    import tensorflow as tf

    try:
        import tf2onnx
    except ImportError:
        model.export(str(path), format="onnx")
        return "keras model.export(format='onnx')"
    fn = tf.function(lambda image: model(image, training=False))
    tf2onnx.convert.from_function(fn, input_signature=(tf.TensorSpec([None, size, size, 3], tf.float32, name="image"),),
                                  opset=17, output_path=str(path))
    return f"tf2onnx {tf2onnx.__version__}, opset 17"


def onnx_path(path: Path, threads: int = 0) -> Callable:
    """ONNX Runtime CPU execution provider, all graph optimisations, no spinning; ``threads`` 0: its default (one
    per core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    # No spin-waiting after a run: spinning threads would take CPU from the next path of the round (and, in
    # the app, from the window and other work).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _prepared(source: Path) -> Path:
    """``source`` after ONNX Runtime's quantisation pre-processing (shape inference, graph optimisation), cached."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = source.with_name(source.stem + "_prepared.onnx")
    if not prepared.exists():
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    return prepared


def quantise_int8(source: Path, target: Path, batches: list, quant_format: str = "QDQ",
                  reduce_range: bool = True) -> str:
    """Static int8 quantisation of ``source`` calibrated on ``batches`` (each a model input); ``quant_format``
    "QDQ" or "QOperator"; ``reduce_range``: 7-bit weights (x86 without VNNI) or the full 8 bits."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(batches)

        def get_next(self):
            x = next(self.items, None)
            return None if x is None else {"image": x}

    quantize_static(str(_prepared(source)), str(target), Reader(), quant_format=QuantFormat[quant_format],
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    reduce_range=reduce_range)
    return (f"{quant_format}, per-channel int8 weights ({'reduce_range' if reduce_range else 'full range'}), "
            f"uint8 activations, MinMax over {len(batches)} calibration batches")


def quantise_int8_dynamic(source: Path, target: Path) -> str:
    """Dynamic quantisation of ``source``: int8 weights stored, activations quantised to uint8 on every run."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(_prepared(source)), str(target), weight_type=QuantType.QInt8, per_channel=False,
                     reduce_range=False)
    return "dynamic, per-tensor int8 weights (full range), uint8 activations quantised per run"


def _with_policy(config, policy: str):
    """A Keras model config with every layer's dtype policy replaced by ``policy``."""
    if isinstance(config, dict):
        out = {}
        for key, value in config.items():
            if key == "dtype" and isinstance(value, dict) and value.get("class_name") == "DTypePolicy":
                value = {**value, "config": {**value["config"], "name": policy}}
            out[key] = _with_policy(value, policy)
        return out
    if isinstance(config, list):
        return [_with_policy(v, policy) for v in config]
    return config


def bfloat16_path(model) -> Callable:
    """The model rebuilt with the mixed_bfloat16 policy (bf16 compute, float32 variables), same weights."""
    import keras

    mixed = keras.Model.from_config(_with_policy(model.get_config(), "mixed_bfloat16"))
    mixed.set_weights(model.get_weights())
    return tensorflow_path(mixed)


def openvino_path(path: Path, precision: str) -> Callable:
    """The ONNX file compiled by OpenVINO for the CPU at ``precision`` ("f32" or "bf16"), latency hint."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                          "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: x})[0].copy()


def mixed_openvino_path(path: Path, after_add: int, folder: Path) -> tuple[Callable, str]:
    """The ONNX file cut after its ``after_add``-th residual Add: the part before in OpenVINO f32, the rest in bf16."""
    import onnx
    from onnx.utils import extract_model

    graph = onnx.load(str(path)).graph
    adds = [n.output[0] for n in graph.node if n.op_type == "Add" and "add" in n.name.lower()]
    cut = adds[after_add - 1]
    first, rest = folder / f"first{after_add}.onnx", folder / f"rest{after_add}.onnx"
    extract_model(str(path), str(first), [graph.input[0].name], [cut])
    extract_model(str(path), str(rest), [cut], [graph.output[0].name])
    run_first, run_rest = openvino_path(first, "f32"), openvino_path(rest, "bf16")
    return (lambda x: run_rest(run_first(x))), cut


def frozen_session_path(model, size: int, bf16_rewrite: bool) -> Callable:
    """The float32 model frozen to a GraphDef and run in its own TF1 session; with ``bf16_rewrite`` that session's
    Grappler runs oneDNN's bfloat16 auto-mixed-precision pass (only this session: the other paths are untouched)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import rewriter_config_pb2
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    concrete = tf.function(lambda image: model(image, training=False)).get_concrete_function(
        tf.TensorSpec([None, size, size, 3], tf.float32, name="image"))
    frozen = convert_variables_to_constants_v2(concrete)
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(frozen.graph.as_graph_def(), name="")
    config = tf.compat.v1.ConfigProto()
    rewrite = config.graph_options.rewrite_options
    rewrite.auto_mixed_precision_onednn_bfloat16 = (rewriter_config_pb2.RewriterConfig.ON if bf16_rewrite
                                                    else rewriter_config_pb2.RewriterConfig.OFF)
    session = tf.compat.v1.Session(graph=graph, config=config)
    feed, fetch = frozen.inputs[0].name, frozen.outputs[0].name
    return lambda x: session.run(fetch, {feed: x})


def agreement(paths: dict[str, Callable], batches: list, temperature: float) -> None:
    """Print, per path, the largest and mean |p - p_reference| over ``batches`` and how many labels change; the
    reference is the first path."""
    import numpy as np

    base = next(iter(paths))
    started = time.perf_counter()
    probs = {name: np.stack([probabilities(fn(x), temperature) for x in batches])
             for name, fn in paths.items()}
    print(f"\nagreement over {len(batches)} validation slices ({time.perf_counter() - started:.0f} s), "
          f"vs {base}:")
    reference = probs[base]
    for name, p in probs.items():
        if name == base:
            continue
        delta = np.abs(p - reference)
        changed = int((p.argmax(1) != reference.argmax(1)).sum())
        print(f"  {name:<40} max |dp| {delta.max():.2e}  mean |dp| {delta.mean():.2e}  labels changed "
              f"{changed} of {len(p)}")


# ------------------------------------------------------------------------------------------------ main
def cpu_flags() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8"]
    return ", ".join(f"{f}{'' if f in flags else ' (no)'}" for f in wanted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="interleaved timed rounds (default 30)")
    parser.add_argument("--eval", type=int, default=240, help="validation slices compared (default 240; 0: speed only)")
    parser.add_argument("--calib", type=int, default=50, help="validation slices calibrating int8 (default 50)")
    parser.add_argument("--no-int8", action="store_true")
    parser.add_argument("--no-bf16", action="store_true")
    parser.add_argument("--int8-variants", action="store_true",
                        help="also static QDQ full range, static QOperator full range and dynamic int8")
    parser.add_argument("--bf16-rewrite", action="store_true",
                        help="also a frozen-graph session with oneDNN's bf16 auto-mixed-precision rewrite (and one "
                             "without, its control)")
    parser.add_argument("--openvino", action="store_true", help="also OpenVINO float32 and bf16 on the ONNX file")
    parser.add_argument("--openvino-mixed", type=int, nargs="*", default=[], metavar="K",
                        help="also OpenVINO f32 up to the K-th residual Add and bf16 after it (one path per K)")
    parser.add_argument("--no-floor", action="store_true", help="skip the FLOPs / peak floor")
    parser.add_argument("--keep", type=Path, help="write the ONNX files here (default: a temporary folder)")
    parser.add_argument("--tf-threads", type=int, default=0,
                        help="TensorFlow intra-op threads (default 0: TensorFlow's choice, as the app runs it); "
                             "1 compares single-threaded TensorFlow with single-threaded ONNX Runtime")
    args = parser.parse_args()

    import numpy as np
    import onnxruntime as ort
    import tensorflow as tf

    if args.tf_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.tf_threads)

    from core.models.registry import Bundle

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {cpu_flags()}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"TensorFlow {tf.__version__}, ONNX Runtime {ort.__version__}")
    bundle = Bundle.from_folder(BUNDLE)
    model = bundle.load()
    size = bundle.spec.size
    evaluated, calibration = validation_picks(bundle, max(args.eval, 1), args.calib)
    evaluated = evaluated[:args.eval]  # --eval 0: speed only
    started = time.perf_counter()
    eval_batches = [product_batch(p, bundle) for p in evaluated]
    print(f"{bundle.id} {bundle.version}: {len(eval_batches)} evaluated validation slices "
          f"(preprocessed in {time.perf_counter() - started:.0f} s), batch of {1 + bundle.info.flip_average} per image "
          f"(flip_average {bundle.info.flip_average}), temperature {bundle.temperature:.3f}")

    reference = f"TensorFlow float32, {args.tf_threads} intra-op thread(s)" if args.tf_threads else TF32
    paths: dict[str, Callable] = {reference: tensorflow_path(model)}
    with tempfile.TemporaryDirectory(prefix="fast-forward-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        onnx_file = folder / f"{bundle.id}.onnx"
        started = time.perf_counter()
        how = export_onnx(model, size, onnx_file)
        print(f"ONNX export: {how}, {time.perf_counter() - started:.0f} s, {onnx_file.stat().st_size / 1e6:.0f} MB")
        paths["ONNX Runtime float32"] = onnx_path(onnx_file)
        paths["ONNX Runtime float32, 1 thread"] = onnx_path(onnx_file, threads=1)
        if not args.no_int8:
            int8_file = folder / f"{bundle.id}.int8.onnx"
            started = time.perf_counter()
            how = quantise_int8(onnx_file, int8_file, [product_batch(p, bundle) for p in calibration])
            print(f"int8: {how}; {time.perf_counter() - started:.0f} s, {int8_file.stat().st_size / 1e6:.0f} MB")
            paths["ONNX Runtime int8 (static)"] = onnx_path(int8_file)
            if args.int8_variants:
                calib_batches = [product_batch(p, bundle) for p in calibration]
                for name, fmt, stem in [("ONNX Runtime int8 (static QDQ, full range)", "QDQ", "int8-qdq-full"),
                                        ("ONNX Runtime int8 (static QOperator, full range)", "QOperator",
                                         "int8-qop-full")]:
                    target = folder / f"{bundle.id}.{stem}.onnx"
                    started = time.perf_counter()
                    how = quantise_int8(onnx_file, target, calib_batches, quant_format=fmt, reduce_range=False)
                    print(f"int8: {how}; {time.perf_counter() - started:.0f} s, {target.stat().st_size / 1e6:.0f} MB")
                    paths[name] = onnx_path(target)
                target = folder / f"{bundle.id}.int8-dynamic.onnx"
                started = time.perf_counter()
                how = quantise_int8_dynamic(onnx_file, target)
                print(f"int8: {how}; {time.perf_counter() - started:.0f} s, {target.stat().st_size / 1e6:.0f} MB")
                paths["ONNX Runtime int8 (dynamic)"] = onnx_path(target)
        if args.openvino:
            paths["OpenVINO float32"] = openvino_path(onnx_file, "f32")
            paths["OpenVINO bf16"] = openvino_path(onnx_file, "bf16")
        for k in args.openvino_mixed:
            paths[f"OpenVINO f32 to residual add {k}, then bf16"], cut = mixed_openvino_path(onnx_file, k, folder)
            print(f"mixed OpenVINO: cut after residual add {k} ({cut})")
        if not args.no_bf16:
            paths["TensorFlow bfloat16 (mixed_bfloat16)"] = bfloat16_path(model)
            if args.bf16_rewrite:
                paths["TensorFlow float32 frozen graph, session"] = frozen_session_path(model, size, False)
                paths["TensorFlow bf16 oneDNN AMP rewrite, session"] = frozen_session_path(model, size, True)

        # ---- agreement with float32 over the validation slices
        if eval_batches:
            agreement(paths, eval_batches, bundle.temperature)

        # ---- speed, interleaved on the sample
        x = product_batch(SAMPLE, bundle)
        times = interleave({name: (lambda fn=fn: fn(x)) for name, fn in paths.items()}, args.rounds)
        print(f"\nforward pass per image (batch of {x.shape[0]}: image + mirror), {args.rounds} interleaved rounds on "
              f"{SAMPLE.name}, load average {os.getloadavg()[0]:.2f}:")
        for line in table(times, reference):
            print("  " + line)
        fastest = min(times, key=lambda n: median(times[n]))
        print(f"  fastest by median: {fastest}")
        if not args.no_floor:
            from bench.floor import floor_lines, flops_per_image

            print("\nfloor (FLOPs / best measured matmul rate):")
            for line in floor_lines(x.shape[0] * flops_per_image(bundle), {n: median(t) for n, t in times.items()}):
                print("  " + line)


if __name__ == "__main__":
    main()
