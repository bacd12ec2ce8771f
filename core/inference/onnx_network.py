"""Bundles run on ONNX Runtime from their export (core.models.exports): no TensorFlow in the process.

``OnnxModel`` has the call of ``core.inference.paths.Compiled`` (arrays in, arrays out) and opens its session on
first use, so a stem file several bundles name is loaded once (by the first bundle that runs it: the Analyzer
keeps one stem per key). ``OnnxGradCam`` has the call of ``core.inference.gradcam.GradCam``: one run gives the
logits, the activation and the chosen class's gradient, and ``heatmaps`` makes the maps as for TensorFlow.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np

from core.errors import ModelError
from core.inference.gradcam import heatmaps
from core.models.exports import CHOSEN, GRADS, TARGET, CamGraph

# Intra-op threads; 0: ONNX Runtime's choice (one per physical core). MIDA_ORT_THREADS overrides (1 runs faster
# where another job holds the other cores: docs/bench/fast_forward.md).
THREADS = int(os.environ.get("MIDA_ORT_THREADS", "0"))
MAX_GRAPH_BYTES = 2**31  # protobuf's limit: no single-file ONNX graph is larger (a bigger file is not read whole)


def available() -> bool:
    """ONNX Runtime is installed (the frozen app and source installs have it; it is optional elsewhere)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def session(path: Path, sha256: str | None = None):
    """An ONNX Runtime CPU session with every graph optimisation and no spin-waiting between runs; a file that
    cannot be loaded (damaged, cut short, removed) is a ModelError, which the Analyzer reports for its model.
    ``sha256``: the file's as exported; the bytes read are checked against it and handed to ONNX Runtime, so a
    graph changed since at its own size (the index's size check passes) is refused, never run."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    source = str(path) if sha256 is None else _verified_bytes(path, sha256)
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own types (InvalidProtobuf, NoSuchFile, Fail)
        raise ModelError(f"the exported network {path} could not be loaded: it is missing, damaged or incomplete; "
                         "export the models again (python main.py models export)") from exc


def _verified_bytes(path: Path, sha256: str) -> bytes:
    """The file's bytes where their sha256 is ``sha256``; else (or unreadable, or over MAX_GRAPH_BYTES) a ModelError."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_GRAPH_BYTES + 1)
    except OSError as exc:
        raise ModelError(f"the exported network {path} could not be read ({exc.strerror or exc}); export the models "
                         "again (python main.py models export)") from exc
    if len(data) > MAX_GRAPH_BYTES:
        raise ModelError(f"the exported network {path} is larger than any ONNX graph file can be - refusing to read "
                         "it; export the models again (python main.py models export)")
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ModelError(f"the exported network {path} was changed after it was exported (sha256 {actual[:12]}... "
                         f"instead of {sha256[:12]}...) - refusing to run it; export the models again "
                         "(python main.py models export)")
    return data


class OnnxModel:
    """One exported graph's forward pass: arrays in (one per graph input), arrays out. ``sha256``: the file's as
    exported, checked when the session opens (None: the exporter's own check of what it just wrote)."""

    def __init__(self, path: Path, sha256: str | None = None) -> None:
        self.path = path
        self.sha256 = sha256
        self._session = None
        self._input_names: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return self.run(None, inputs)

    @property
    def input_names(self) -> list[str]:
        """The graph's input names, in order (the session opens on first use)."""
        self._open()
        return self._input_names

    @property
    def output_shapes(self) -> list[list]:
        """The graph's output shapes; an axis left open is a name or None."""
        return [o.shape for o in self._open().get_outputs()]

    def _open(self):
        with self._lock:
            if self._session is None:
                self._session = session(self.path, self.sha256)
                self._input_names = [i.name for i in self._session.get_inputs()]
        return self._session

    def run(self, outputs: list[str] | None, inputs: list[np.ndarray], extra: dict | None = None) -> list[np.ndarray]:
        """The ``outputs`` named (None: all): ``inputs`` go to the graph's inputs in order, ``extra`` by name."""
        names = [n for n in self.input_names if not extra or n not in extra]
        feed = {n: np.asarray(a, np.float32) for n, a in zip(names, inputs)} | (extra or {})
        return self._session.run(outputs, feed)


class OnnxGradCam:
    """Grad-CAM from an exported graph with its gradient appended (core.models.onnx_grad)."""

    def __init__(self, cam: CamGraph) -> None:
        self.cam = cam
        self._model = OnnxModel(cam.file, cam.sha256)

    def __call__(self, inputs: list[np.ndarray], target: int | None = None, plus: bool = False):
        """(logits (N, K), heatmaps (N, h, w) scaled to a peak of 1, class index used (N,)), as GradCam gives."""
        fed = self.cam.activation in self._model.input_names  # the activation is the graph's first input (the rest's)
        targets = {TARGET: np.full(len(inputs[0]), -1 if target is None else int(target), np.int64)}
        outputs = self._model.run([self.cam.logits, GRADS, CHOSEN] + ([] if fed else [self.cam.activation]),
                                  inputs, targets)
        logits, grads, chosen = outputs[:3]
        activation = np.asarray(inputs[0], np.float32) if fed else outputs[3]
        return logits, heatmaps(activation, grads, plus), chosen
