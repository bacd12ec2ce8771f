"""Grad-CAM and Grad-CAM++ in one forward/backward pass, for targets nested inside sub-models.

The classic "graph disconnected" error comes from asking a nested model's inner tensor to be an
output of the outer model. Instead the chain of layers is re-traced on a fresh input, and the
sub-model that holds the target is replaced by a twin returning (activation, output).
"""

from __future__ import annotations

import numpy as np


def _contains(layer, name: str) -> bool:
    if layer.name == name:
        return True
    return any(_contains(inner, name) for inner in getattr(layer, "layers", []))


def cam_model(model, layer_name: str):
    """A model mapping the input to (activation of ``layer_name``, model output)."""
    import keras

    if not _contains(model, layer_name):
        raise ValueError(f"layer '{layer_name}' not found in model '{model.name}'")
    direct = [layer for layer in model.layers if layer.name == layer_name]
    if direct:
        return keras.Model(model.inputs, [direct[0].output, model.output])
    inputs = keras.Input(shape=model.inputs[0].shape[1:])
    x, activation = inputs, None
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if activation is None and _contains(layer, layer_name):
            activation, x = cam_model(layer, layer_name)(x)
        else:
            x = layer(x)
    return keras.Model(inputs, [activation, x])


class GradCam:
    """Compiled Grad-CAM for one model: class scores, then the heatmap of one class, one pass.

    With ``layer_name`` None the activation is the model's first input: a bundle's rest after its
    shared stem (core.models.stages), whose other inputs (a lesion map) pass through unexplained.
    """

    def __init__(self, model, layer_name: str | None) -> None:
        import tensorflow as tf

        cam = cam_model(model, layer_name) if layer_name else None

        @tf.function(reduce_retracing=True, autograph=False)  # plain tensor code; frozen apps have no source
        def step(inputs, target, plus):
            with tf.GradientTape() as tape:
                if cam is None:
                    activation = inputs[0]
                    tape.watch(activation)
                    logits = model(list(inputs) if len(inputs) > 1 else activation, training=False)
                else:
                    activation, logits = cam(inputs[0], training=False)
                chosen = tf.where(target >= 0, target, tf.argmax(logits, axis=-1, output_type=tf.int32))
                score = tf.gather(logits, chosen, axis=1, batch_dims=1)
            grads = tape.gradient(score, activation)
            if plus:
                # Grad-CAM++ (Chattopadhay et al. 2018) weights with the exponential-score closed form.
                g2, g3 = grads**2, grads**3
                total = tf.reduce_sum(activation, axis=(1, 2), keepdims=True)
                alpha = g2 / (2.0 * g2 + total * g3 + 1e-7)
                weights = tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2))
            else:
                weights = tf.reduce_mean(grads, axis=(1, 2))
            cam_map = tf.nn.relu(tf.einsum("bhwc,bc->bhw", activation, weights))
            return logits, cam_map, chosen

        self._step = step

    def __call__(self, inputs: list[np.ndarray], target: int | None = None, plus: bool = False):
        """(logits (N, K), heatmaps (N, h, w) normalised to 0..1, class index used (N,)) for the model's
        inputs (one array per model input, N rows each)."""
        import tensorflow as tf

        targets = tf.fill([len(inputs[0])], -1 if target is None else int(target))
        tensors = tuple(tf.convert_to_tensor(a, tf.float32) for a in inputs)
        logits, cam, chosen = self._step(tensors, targets, bool(plus))
        cam = cam.numpy()
        peak = cam.reshape(len(cam), -1).max(axis=1).reshape(-1, 1, 1)
        return logits.numpy(), np.where(peak > 0, cam / np.maximum(peak, 1e-12), 0.0), chosen.numpy()
