"""Fine-tuning only a classifier's top block and Dense (core.training.tune_block14), on a head named as Xception's."""

import numpy as np

from core.training.tune_block14 import BLOCK14, TOP, TUNED, split_head, tune


def _head(channels: int = 8, classes: int = 2):
    """A head laid out as the brain classifier's: trunk features -> nested 'xception_top' (a block 13 stand-in, then
    block 14's layers) -> gap -> dropout -> logits."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(3)
    inner_in = keras.Input((None, None, channels))
    x = layers.SeparableConv2D(channels, 3, padding="same", name="block13_sepconv2")(inner_in)
    x = layers.Add(name="add_11")([x, inner_in])
    for name in BLOCK14:
        if name.endswith("_bn"):
            x = layers.BatchNormalization(name=name)(x)
        elif name.endswith("_act"):
            x = layers.Activation("relu", name=name)(x)
        else:
            x = layers.SeparableConv2D(channels, 3, padding="same", use_bias=False, name=name)(x)
    inner = keras.Model(inner_in, x, name=TOP)
    features = keras.Input((None, None, channels), name="trunk_features")
    y = inner(features)
    y = layers.GlobalAveragePooling2D(name="gap")(y)
    y = layers.Dropout(0.3, name="dropout")(y)
    return keras.Model(features, layers.Dense(classes, name="logits")(y))


def test_below_then_top_is_the_head():
    head = _head()
    below, top = split_head(head)
    x = np.random.default_rng(0).normal(size=(4, 7, 7, 8)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(top(below(x))), np.asarray(head(x)), atol=1e-5)


def test_tuning_trains_block14s_convolutions_and_the_dense_only():
    head = _head()
    below, top = split_head(head)
    rng = np.random.default_rng(1)
    images = rng.normal(size=(64, 7, 7, 8)).astype(np.float32)
    y = (images[:, :, :, 0].mean(axis=(1, 2)) > 0).astype(int)  # a class the head can learn from channel 0
    x = np.asarray(below(images)).astype(np.float16)
    before = {layer.name: [np.array(w) for w in layer.get_weights()] for layer in top.layers}
    below_before = [np.array(w) for w in below.get_layer("block13_sepconv2").get_weights()]
    start = float(np.mean(np.asarray(top(x.astype(np.float32))).argmax(1) == y))
    weights = tune(head, x, y, epochs=30, lr=1e-2, batch_size=16)
    assert set(weights) == set(TUNED)
    for layer in top.layers:
        same = all(np.array_equal(a, b) for a, b in zip(before[layer.name], layer.get_weights()))
        assert same == (layer.name not in TUNED or not before[layer.name]), layer.name
    for a, b in zip(below_before, below.get_layer("block13_sepconv2").get_weights()):
        np.testing.assert_array_equal(a, b)  # block 13 and below: untouched
    after = float(np.mean(np.asarray(head(images)).argmax(1) == y))  # trained in place: the head itself learnt it
    assert after > max(start, 0.85)
