"""A fine-tuned classifier's trunk and top block assembled into one backbone (the brain segmenter's encoder)."""

from __future__ import annotations

import numpy as np
import pytest

from core.models.backbones import assemble_backbone, build_backbone, split_backbone


def test_trunk_and_top_become_one_backbone_with_their_weights():
    import keras

    source = build_backbone("xception", None)
    trunk, top = split_backbone(source, "xception", "block11_sepconv1_act")
    conv = top.get_layer("block13_sepconv2")
    conv.set_weights([w + 0.5 for w in conv.get_weights()])  # the "fine-tuned" part differs from a fresh net
    head = keras.Sequential([top, keras.layers.GlobalAveragePooling2D()])  # nested, as a bundle's head is
    assembled = assemble_backbone("xception", [trunk, head])
    for name in ("block1_conv1", "block13_sepconv2", "block14_sepconv2_bn"):
        for a, b in zip(assembled.get_layer(name).get_weights(), source.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 96, 96, 3)).astype(np.float32)
    np.testing.assert_allclose(assembled(x), source(x), atol=1e-5)


def test_a_missing_layer_is_refused():
    source = build_backbone("xception", None)
    trunk, _ = split_backbone(source, "xception", "block11_sepconv1_act")
    with pytest.raises(ValueError, match="no weights for"):
        assemble_backbone("xception", [trunk])  # blocks 11-14 have no source
