"""Grad-CAM and Grad-CAM++: the heatmap from a layer's activation and the chosen class's gradient.

``GradCam`` takes both from TensorFlow in one forward/backward pass (for layers nested inside sub-models:
core.models.stages.cam_model); the ONNX runtime (core.inference.onnx_network) takes them from the graph's
appended gradient (core.models.onnx_grad). Either way ``heatmaps`` makes the maps.
"""

from __future__ import annotations

import numpy as np

from core.models.stages import cam_model


def heatmaps(activation: np.ndarray, grads: np.ndarray, plus: bool) -> np.ndarray:
    """Grad-CAM (or Grad-CAM++) maps (N, h, w), each scaled to a peak of 1, from the activation (N, h, w, c) and
    the chosen class's logit gradient with respect to it: the one formula whichever runtime gave the gradient."""
    activation, grads = activation.astype(np.float64), grads.astype(np.float64)
    if plus:
        # Grad-CAM++ (Chattopadhay et al. 2018) weights with the exponential-score closed form.
        g2, g3 = grads**2, grads**3
        total = activation.sum(axis=(1, 2), keepdims=True)
        alpha = g2 / (2.0 * g2 + total * g3 + 1e-7)
        weights = (alpha * np.maximum(grads, 0.0)).sum(axis=(1, 2))
    else:
        weights = grads.mean(axis=(1, 2))
    cam = np.maximum(np.einsum("bhwc,bc->bhw", activation, weights), 0.0)
    peak = cam.reshape(len(cam), -1).max(axis=1).reshape(-1, 1, 1)
    return np.where(peak > 0, cam / np.maximum(peak, 1e-12), 0.0).astype(np.float32)


class GradCam:
    """Compiled Grad-CAM for one model: class scores, then the heatmap of one class, one pass.

    With ``layer_name`` None the activation is the model's first input: a bundle's rest after its
    shared stem (core.models.stages), whose other inputs (a lesion map) pass through unexplained.
    """

    def __init__(self, model, layer_name: str | None) -> None:
        import tensorflow as tf

        cam = cam_model(model, layer_name) if layer_name else None

        @tf.function(reduce_retracing=True, autograph=False)  # plain tensor code; frozen apps have no source
        def step(inputs, target):
            with tf.GradientTape() as tape:
                if cam is None:
                    activation = inputs[0]
                    tape.watch(activation)
                    logits = model(list(inputs) if len(inputs) > 1 else activation, training=False)
                else:
                    activation, logits = cam(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
                chosen = tf.where(target >= 0, target, tf.argmax(logits, axis=-1, output_type=tf.int32))
                score = tf.gather(logits, chosen, axis=1, batch_dims=1)
            return logits, activation, tape.gradient(score, activation), chosen

        self._step = step

    def __call__(self, inputs: list[np.ndarray], target: int | None = None, plus: bool = False):
        """(logits (N, K), heatmaps (N, h, w) normalised to 0..1, class index used (N,)) for the model's
        inputs (one array per model input, N rows each)."""
        import tensorflow as tf

        targets = tf.fill([len(inputs[0])], -1 if target is None else int(target))
        tensors = tuple(tf.convert_to_tensor(a, tf.float32) for a in inputs)
        logits, activation, grads, chosen = self._step(tensors, targets)
        return logits.numpy(), heatmaps(activation.numpy(), grads.numpy(), plus), chosen.numpy()
