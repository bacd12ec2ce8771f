"""core.models.stages: a classifier cut at its Grad-CAM layer, also inside a nested sub-model with a residual
branch that skips the cut (Xception block 13), and a transfer bundle on such a cut sharing its stem."""

from __future__ import annotations

import numpy as np
import pytest

from core.imaging import load_image
from core.inference.analyzer import Analyzer
from core.inference.gradcam import GradCam
from core.models.preprocessing import preprocess
from core.models.stages import split_stages
from tests.conftest import REPO

CAM = "mid_act"


def _residual_classifier():
    """image -> frozen trunk -> head (an inner top block whose CAM layer lies before a residual add, then
    pooling, dropout, logits), the shape of the brain 4-class network; and a transfer model on its pooling."""
    import keras

    keras.utils.set_random_seed(0)
    image = keras.Input((None, None, 3))
    trunk = keras.Model(image, keras.layers.Conv2D(8, 3, padding="same", activation="relu")(image), name="trunk")
    top_in = keras.Input((None, None, 8))
    x = keras.layers.Activation("relu", name="top_act")(top_in)
    x = keras.layers.Conv2D(8, 3, padding="same", name="top_conv")(x)
    x = keras.layers.Add(name="add_a")([x, top_in])
    mid = keras.layers.Activation("relu", name=CAM)(keras.layers.Conv2D(12, 3, padding="same", name="mid_conv")(x))
    y = keras.layers.MaxPooling2D(name="mid_pool")(keras.layers.Conv2D(16, 3, padding="same", name="after")(mid))
    skip = keras.layers.BatchNormalization(name="skip_bn")(keras.layers.Conv2D(16, 1, strides=2, name="skip")(x))
    out = keras.layers.Activation("relu", name="top_out")(keras.layers.Add(name="add_b")([y, skip]))
    top = keras.Model(top_in, out, name="inner_top")
    features = keras.Input((None, None, 8), name="trunk_features")
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(top(features))
    logits = keras.layers.Dense(3, name="logits")(keras.layers.Dropout(0.3, name="dropout")(pooled))
    head = keras.Model(features, logits, name="head")
    whole_image = keras.Input((None, None, 3), name="image")
    model = keras.Model(whole_image, head(trunk(whole_image)), name="tiny_residual")
    # The transfer bundle as the registry composes it: trunk, the head up to its pooling, a part of its own.
    at_gap = keras.Model(head.input, head.get_layer("gap").output, name="features")
    part_in = keras.Input((16,))
    part = keras.Model(part_in, keras.layers.Dense(2, name="yes_no")(part_in), name="part")
    child_image = keras.Input((None, None, 3), name="image")
    child = keras.Model(child_image, part(at_gap(trunk(child_image))), name="tiny_transfer")
    return model, child


def _images(n: int = 2, size: int = 32) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


def test_cut_inside_a_nested_block_carries_the_residual_branch():
    model, child = _residual_classifier()
    arch = {"trunk_file": "trunk.keras"}
    stages = split_stages("tiny", "ab" * 32, "classification", arch, CAM, model, None)
    assert stages.stem is not None and stages.key == f"tiny@{'ab' * 8}:{CAM}" and stages.cam == CAM
    assert len(stages.rest.inputs) == 2 and stages.rest.inputs[0].name == CAM  # Grad-CAM explains the first
    x = _images()
    shared = stages.stem(x, training=False)
    assert shared[0].shape == (2, 32, 32, 12) and shared[1].shape == (2, 16, 16, 16)  # CAM map, skip branch
    np.testing.assert_allclose(stages.rest(shared, training=False), model(x, training=False), atol=1e-5)
    # The transfer bundle shares the stem object and runs the parent's rest graph up to its pooling.
    transfer = split_stages("tiny-child", "cd" * 32, "classification",
                            {"feature_bundle": "tiny", "feature_layer": "gap"}, "top_out", child, stages)
    assert transfer.stem is stages.stem and transfer.key == stages.key and transfer.cam == CAM
    np.testing.assert_allclose(transfer.rest(shared, training=False), child(x, training=False), atol=1e-5)
    # Grad-CAM through the rest alone is Grad-CAM of the whole network at the CAM layer.
    through_rest = GradCam(stages.rest, None)([np.asarray(t) for t in shared])
    whole = GradCam(model, CAM)([x])
    np.testing.assert_allclose(through_rest[0], whole[0], atol=1e-5)
    np.testing.assert_allclose(through_rest[1], whole[1], atol=1e-5)


def test_cut_at_the_end_of_the_nested_block_and_no_cut_after_the_output():
    model, _ = _residual_classifier()
    x = _images(1)
    stages = split_stages("tiny", "ab" * 32, "classification", {"trunk_file": "t"}, "top_out", model, None)
    assert len(stages.rest.inputs) == 1  # nothing else crosses a cut at the block's last layer
    np.testing.assert_allclose(stages.rest(stages.stem(x)), model(x), atol=1e-5)
    # A CAM layer the network does not have, or one no output depends on: the whole model, no stem.
    assert split_stages("tiny", "ab" * 32, "classification", {"trunk_file": "t"}, "nowhere", model, None).stem is None


@pytest.fixture(scope="module")
def brain():
    from core.models.registry import BUILTIN_MODELS, Registry

    registry = Registry([BUILTIN_MODELS])
    return registry.get("brain-mri-tumor-4class"), registry.get("brain-mri-tumor-yesno")


def _brain_inputs(bundle) -> np.ndarray:
    display = load_image(REPO / "resources" / "samples" / "brain_mri_sample.jpg").display(0)
    x = preprocess(display, bundle.spec)[None]
    noisy = np.clip(x + np.random.default_rng(1).normal(0, 0.02, x.shape), -1, 1)
    return np.concatenate([x, x[:, :, ::-1], noisy]).astype(np.float32)


def test_shipped_brain_bundles_share_a_stem_cut_inside_the_top_block(brain):
    four, yesno = brain
    assert four.gradcam_layer == "block13_sepconv2_act"  # inside xception_top, before block 13's residual add
    stages, child = four.stages(), yesno.stages()
    assert stages.stem is not None and child.stem is stages.stem and child.key == stages.key
    assert stages.rest.inputs[0].name == "block13_sepconv2_act" and len(stages.rest.inputs) == 2
    x = _brain_inputs(four)
    shared = stages.stem(x, training=False)
    np.testing.assert_allclose(stages.rest(shared, training=False), four.load()(x, training=False), atol=1e-4)
    np.testing.assert_allclose(child.rest(shared, training=False), yesno.load()(x, training=False), atol=1e-4)


def test_shipped_brain_gradcam_through_the_rest_matches_the_whole_network(brain):
    four, yesno = brain
    x = _brain_inputs(four)
    logits, cams, chosen = Analyzer().path(four).gradcam(x, None, False)
    whole_logits, whole_cams, whole_chosen = GradCam(four.load(), four.gradcam_layer)([x])
    np.testing.assert_allclose(logits, whole_logits, atol=1e-4)
    assert np.abs(cams - whole_cams).max() < 1e-3 and (chosen == whole_chosen).all()
    # The yes/no bundle is explained at block 14, not its shared stem's cut: through its whole network.
    assert yesno.gradcam_layer != yesno.stages().cam
    _, cams, _ = Analyzer().path(yesno).gradcam(x[:1], None, False)
    assert cams.shape == (1, 7, 7)
