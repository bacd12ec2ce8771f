"""core.models.stages: a classifier cut at its Grad-CAM layer, also inside a nested sub-model with a residual
branch that skips the cut (Xception block 13), a transfer bundle on such a cut sharing its stem, and a segmenter
whose encoder is the classifier's network running on that stem too (skip maps tapped below the cut)."""

from __future__ import annotations

import numpy as np
import pytest

from core.imaging import load_image
from core.inference.analyzer import Analyzer
from core.inference.gradcam import GradCam
from core.inference.paths import Request, StemRows
from core.models.preprocessing import preprocess
from core.models.registry import Bundle
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


def _classifier_and_segmenter():
    """One tiny backbone (trunk, then a top block whose CAM layer lies before a residual add) made two networks
    as the registry composes them: a classifier (trunk -> head holding the top block) and a U-Net segmenter
    (the backbone's multi-scale encoder -> a decoder), the shape of the 4-class and the brain segmenter."""
    import keras

    from core.models.backbones import encoder, split_backbone

    keras.utils.set_random_seed(0)
    image = keras.Input((32, 32, 3), name="image")
    fine = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="fine_act")(image)
    x = keras.layers.BatchNormalization(name="half_bn")(keras.layers.Conv2D(8, 3, strides=2, padding="same",
                                                                            name="half")(fine))
    top_in = keras.layers.Activation("relu", name="top_act")(x)
    mid = keras.layers.Activation("relu", name=CAM)(keras.layers.Conv2D(8, 3, padding="same", name="mid_conv")(top_in))
    deep = keras.layers.BatchNormalization(name="deep_bn")(keras.layers.Conv2D(8, 3, padding="same", name="deep")(mid))
    out = keras.layers.Activation("relu", name="top_out")(keras.layers.Add(name="add")([deep, x]))
    backbone = keras.Model(image, out, name="tiny_backbone")
    for layer in backbone.layers:  # batch statistics that are not the identity
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([np.random.default_rng(1).uniform(0.5, 1.5, w.shape).astype(np.float32)
                               for w in layer.get_weights()])
    trunk, top = split_backbone(backbone, "tiny", "top_act")
    features = keras.Input(trunk.output.shape[1:], name="trunk_features")
    head = keras.Model(features, keras.layers.Dense(3, name="logits")(
        keras.layers.GlobalAveragePooling2D(name="gap")(top(features))), name="head")
    classifier_image = keras.Input((None, None, 3), name="image")
    classifier = keras.Model(classifier_image, head(trunk(classifier_image)), name="tiny_classifier")
    skips = ["fine_act", "half_bn", "deep_bn"]
    frozen = encoder(backbone, "tiny", skips)
    maps = [keras.Input(t.shape[1:]) for t in frozen.outputs]
    up = keras.layers.UpSampling2D(2)(keras.layers.Concatenate()([maps[1], maps[2]]))
    mask = keras.layers.Conv2D(1, 1, activation="sigmoid")(keras.layers.Concatenate()([up, maps[0]]))
    decoder = keras.Model(maps, mask, name="unet_decoder")
    seg_image = keras.Input((32, 32, 3), name="image")
    return classifier, keras.Model(seg_image, decoder(frozen(seg_image)), name="tiny_segmenter"), tuple(skips)


def test_segmenter_on_the_classifier_network_shares_its_stem():
    classifier, segmenter, skips = _classifier_and_segmenter()
    arch = {"trunk_file": "trunk.keras"}
    parent = split_stages("tiny", "ab" * 32, "classification", arch, CAM, classifier, None, skips)
    assert parent.key == f"tiny@{'ab' * 8}:{CAM}" and parent.taps == ("fine_act", "half_bn")  # deep_bn: above
    assert parent.picks == (0, 1) and len(parent.stem.outputs) == 4
    seg = split_stages("tiny-seg", "cd" * 32, "segmentation", {"encoder_bundle": "tiny"}, None, segmenter, parent)
    assert seg.stem is parent.stem and seg.key == parent.key and seg.picks == (0, 2, 3)
    assert seg.rest.inputs[0].name == CAM
    # One stem pass per image row serves both, and each gives what its whole network gives.
    rows, passes = StemRows(), []
    run = rows.run_stem
    rows.run_stem = lambda stages, x: passes.append(len(x)) or run(stages, x)
    x = _images()
    np.testing.assert_allclose(parent.rest(rows.inputs(parent, x)), classifier(x), atol=1e-5)
    np.testing.assert_allclose(seg.rest(rows.inputs(seg, x)), segmenter(x), atol=1e-5)
    assert passes == [2]
    # A parent that taps nothing: the same rest, so the same Grad-CAM through it; the segmenter then runs its
    # own encoder (its features stem), never an error.
    untapped = split_stages("tiny", "ab" * 32, "classification", arch, CAM, classifier, None)
    through_rest = GradCam(parent.rest, None)(rows.inputs(parent, x))
    np.testing.assert_allclose(through_rest[1], GradCam(untapped.rest, None)(untapped.stem(x))[1], atol=1e-5)
    alone = split_stages("tiny-seg", "cd" * 32, "segmentation", {"encoder_bundle": "tiny"}, None, segmenter, untapped)
    assert alone.key is None  # its whole network: the tiny decoder lacks the layer its features stem ends at


@pytest.fixture(scope="module")
def brain():
    from core.models.registry import BUILTIN_MODELS, Registry

    registry = Registry([BUILTIN_MODELS])
    return registry.get("brain-mri-tumor-4class"), registry.get("brain-mri-tumor-yesno")


@pytest.fixture(scope="module")
def brain_registry():
    from core.models.registry import BUILTIN_MODELS, Registry

    return Registry([BUILTIN_MODELS])


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
    np.testing.assert_allclose(stages.rest(stages.pick(shared), training=False), four.load()(x, training=False),
                               atol=1e-4)
    np.testing.assert_allclose(child.rest(child.pick(shared), training=False), yesno.load()(x, training=False),
                               atol=1e-4)


def test_shipped_brain_gradcam_through_the_rest_matches_the_whole_network(brain):
    four, yesno = brain
    x = _brain_inputs(four)
    logits, cams, chosen = Analyzer().path(four).gradcam(x, None, False)
    whole_logits, whole_cams, whole_chosen = GradCam(four.load(), four.gradcam_layer)([x])
    np.testing.assert_allclose(logits, whole_logits, atol=1e-4)
    assert np.abs(cams - whole_cams).max() < 1e-3 and (chosen == whole_chosen).all()
    # The yes/no bundle is explained at block 14, above its shared stem's cut: through the rest alone.
    assert yesno.gradcam_layer != yesno.stages().cam
    _, cams, _ = Analyzer().path(yesno).gradcam(x[:1], None, False)
    assert cams.shape == (1, 7, 7)


def test_shipped_brain_segmenter_runs_on_the_4class_stem(brain_registry):
    four, seg = brain_registry.get("brain-mri-tumor-4class"), brain_registry.get("brain-mri-tumor-seg")
    assert seg.info.architecture["encoder_bundle"] == four.id
    stages, own = four.stages(), seg.stages()
    assert own.stem is stages.stem and own.key == stages.key and stages.rest.inputs[0].name == four.gradcam_layer
    assert stages.taps == ("block1_conv2_act", "block3_sepconv2_bn", "block4_sepconv2_bn")
    # The three MR bundles on one slice: one pass of the shared network per image row (image and mirror).
    analyzer, passes = Analyzer(brain_registry), []
    run = analyzer.stem_rows.run_stem
    analyzer.stem_rows.run_stem = lambda s, x: passes.append((s.key, len(x))) or run(s, x)
    record = load_image(REPO / "resources" / "samples" / "brain_mri_sample.jpg")
    ids = [four.id, "brain-mri-tumor-yesno", seg.id]
    together = analyzer.analyze(record, model_ids=ids, gradcam=True).results
    assert passes == [(stages.key, 2)]
    x = _brain_inputs(seg)
    whole = seg.load()(x, training=False)
    np.testing.assert_allclose(own.rest(own.pick(stages.stem(x, training=False)), training=False), whole, atol=1e-5)
    # The same slice through the segmenter's own encoder (its manifest without ``encoder_bundle``): the same map.
    arch = {k: v for k, v in seg.manifest["architecture"].items() if not k.startswith("encoder_bundle")}
    unshared = Bundle(seg.folder, {**seg.manifest, "architecture": arch})
    assert unshared.stages().key != stages.key
    alone = Analyzer(brain_registry).path(unshared).run(record.display(0), Request(), record)
    shared = next(r for r in together if r.model_id == seg.id)
    assert np.abs(shared.probability_map - alone.probability_map).max() < 1e-5
    assert (shared.mask == alone.mask).all()
