"""A classifier head on a trained U-Net segmenter: the encoder's deepest features pooled three ways.

The segmenter's encoder was fine-tuned to find lesions, and its own lesion probability says where
to look. The head pools the deepest feature map over the whole image (average and maximum) and
under that probability (a weighted average), and one linear layer turns the three pooled vectors
into class logits. Training and inference build the head from this one module. It imports Keras,
so callers import it lazily; loading a saved head needs it imported (it registers MaskedAverage).
"""

from __future__ import annotations

import keras
from keras import layers, ops

# The U-Net decoder layer that consumes the encoder's deepest map (core.training.segmenter names it).
DEEPEST_CONSUMER = "bottleneck_reduce"
CAM_LAYER = "encoder_features"
POOLED_LAYER = "pooled"


@keras.saving.register_keras_serializable(package="mida")
class MaskedAverage(keras.layers.Layer):
    """Mean of a feature map weighted by a probability map on the same grid."""

    def call(self, features, weights):
        return ops.sum(features * weights, axis=(1, 2)) / (ops.sum(weights, axis=(1, 2)) + 1e-3)

    def compute_output_shape(self, features_shape, weights_shape):
        return (features_shape[0], features_shape[-1])


def segmenter_features(segmenter):
    """image -> (deepest encoder map, lesion probability map) of a segmenter composed by the registry
    as image -> encoder -> U-Net decoder."""
    parts = segmenter.layers
    if len(parts) != 3 or parts[2].name != "unet_decoder":
        raise ValueError(f"{segmenter.name} is not an encoder + U-Net decoder composition")
    encoder, decoder = parts[1], parts[2]
    inner = keras.Model(decoder.inputs, [decoder.get_layer(DEEPEST_CONSUMER).input, decoder.output],
                        name="deepest_and_mask")
    image = keras.Input(shape=segmenter.inputs[0].shape[1:], name="image")
    return keras.Model(image, inner(encoder(image)), name=f"{segmenter.name}_features")


def pooling_head(feature_shape: tuple[int, int, int], mask_size: int, n_classes: int):
    """(deepest map, probability map) -> logits; the Dense layer's weights are set after fitting.

    The probability map is brought to the feature grid by block averaging (area resampling; TensorFlow
    has no gradient for its area resize, and Grad-CAM needs one through this graph).
    """
    features = keras.Input(shape=feature_shape, name="deepest")
    probability = keras.Input(shape=(mask_size, mask_size, 1), name="lesion_probability")
    x = layers.Identity(name=CAM_LAYER)(features)
    weights = layers.AveragePooling2D(mask_size // feature_shape[0], name="probability_on_grid")(probability)
    pooled = layers.Concatenate(name=POOLED_LAYER)([
        layers.GlobalAveragePooling2D(name="image_average")(x),
        layers.GlobalMaxPooling2D(name="image_max")(x),
        MaskedAverage(name="lesion_average")(x, weights),
    ])
    logits = layers.Dense(n_classes, name="logits")(pooled)
    return keras.Model([features, probability], logits, name="lesion_pooling_head")


def pooled_part(head):
    """The head up to its pooled vector (what the linear layer is fitted on)."""
    return keras.Model(head.inputs, head.get_layer(POOLED_LAYER).output, name="lesion_pooling")
