"""The training pipeline end to end on tiny synthetic data: deeper fine-tuning cuts for classifiers
and U-Net segmenters, written bundles loaded back through the registry like shipped ones."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.errors import ModelError
from core.imaging import load_image
from core.inference.analyzer import Analyzer
from core.models.preprocessing import PreprocessSpec
from core.models.registry import Registry
from tests.conftest import link_shared_backbone

pytestmark = pytest.mark.slow
SMALL = PreprocessSpec(size=64, color="grey3", crop="none")


def _blob_image(seed: int, lesion: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(20, 90, (96, 96), dtype=np.uint8)
    mask = np.zeros((96, 96), np.uint8)
    if lesion:
        cy, cx = rng.integers(30, 66, 2)
        yy, xx = np.ogrid[:96, :96]
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= 14**2] = 255
        image[mask > 0] = 220
    return image, mask


@pytest.fixture
def busi_tree(tmp_path):
    """The BUSI layout: ``<class>/<class> (n).png`` beside ``<class> (n)_mask.png``."""
    root = tmp_path / "busi"
    for label, lesion in (("benign", True), ("normal", False)):
        (root / label).mkdir(parents=True)
        for n in range(1, 7):
            image, mask = _blob_image(n + 100 * lesion, lesion)
            Image.fromarray(image).save(root / label / f"{label} ({n}).png")
            Image.fromarray(mask).save(root / label / f"{label} ({n})_mask.png")
    return root


# The shipped ultrasound configs read BUSI + BUS-BRA and continue their written network; these tests train
# from ImageNet on a synthetic BUSI-layout folder.
BUSI_ONLY = {"reader": "image_mask_pairs", "init_from_written": False}


@pytest.fixture
def training(tmp_path, monkeypatch):
    """A private cache and models folder (sharing the real backbone file), and a way to shrink configs."""
    from core.training import configs

    monkeypatch.setattr(configs, "CACHE_ROOT", tmp_path / "cache")
    out = tmp_path / "models"
    link_shared_backbone(out)

    def shrink(bundle_id: str, **changes):
        config = dataclasses.replace(configs.CONFIGS[bundle_id], **changes)
        monkeypatch.setitem(configs.CONFIGS, bundle_id, config)
        return config

    return out, shrink


def test_segmenter_fine_tunes_deep_encoder_blocks(busi_tree, training, capsys):
    from core.training import __main__ as training_cli

    out, shrink = training
    config = shrink("breast-us-lesion-seg", **BUSI_ONLY, spec=SMALL, top_from="block12_sepconv1_act", augmented_views=1,
                    epochs_head=1, epochs_finetune=1, lr_finetune=1e-2, epochs_whole=0, batch_size=4, val_fraction=0.34,
                    root=str(busi_tree))
    assert training_cli.main(["train", config.id, "--out", str(out), "--loss", "tversky"]) == 0
    manifest = json.loads((out / config.id / "manifest.json").read_text())
    assert manifest["architecture"]["encoder_layers"][-1] == "block12_sepconv1_act:input"
    assert manifest["training"]["loss"] == "tversky" and manifest["training"]["command"].endswith(" --loss tversky")
    assert manifest["training"]["epochs"] == {"decoder": 1, "decoder+encoder": 1}
    assert 0.0 <= manifest["validation_metrics"]["dice"] <= 1.0
    assert manifest["min_lesion_peak"] in (0.0, 0.6, 0.7, 0.8, 0.9, 0.95)
    card = (out / config.id / "model_card.md").read_text()
    assert "False-lesion gate" in card and "Dice **" in card and "[95 % CI " in card
    # The deep blocks were trained: the bundle's copy differs from the ImageNet weights it started from.
    import keras

    from core.training.configs import BACKBONES

    deep = Registry([out]).get(config.id).load().get_layer("unet_decoder").get_layer("xception_deep")
    imagenet = keras.saving.load_model(BACKBONES["xception"], compile=False)
    for name in ("block12_sepconv1", "block13_sepconv2"):
        trained, start = deep.get_layer(name).get_weights()[1], imagenet.get_layer(name).get_weights()[1]
        assert np.abs(trained - start).max() > 1e-3  # far above float16 rounding
    for trained, start in zip(deep.get_layer("block13_sepconv2_bn").get_weights(),
                              imagenet.get_layer("block13_sepconv2_bn").get_weights()):
        np.testing.assert_array_equal(trained, start)  # BatchNorm stays frozen
    record = load_image(busi_tree / "benign" / "benign (1).png", modality="US")
    result = Analyzer(Registry([out])).analyze(record, model_ids=[config.id]).results[0]
    assert result.mask.shape == (96, 96) and result.probability_map.dtype.kind == "f"

    # 'evaluate' re-picks the inference settings of the written segmenter and leaves its weights alone.
    shrink(config.id, version="9.9.9")
    assert training_cli.main(["evaluate", config.id, "--out", str(out)]) == 0
    again = json.loads((out / config.id / "manifest.json").read_text())
    assert again["version"] == "9.9.9" and again["weights"] == manifest["weights"]
    assert again["validation_metrics"]["dice"] == pytest.approx(manifest["validation_metrics"]["dice"])

    # A classifier on this segmenter's encoder: one linear layer, pinned to the segmenter it was fitted on.
    classifier = shrink("breast-us-3class", **BUSI_ONLY, spec=SMALL, classes=["benign", "normal"], feature_bundle=config.id,
                        epochs_whole=0)
    assert training_cli.main(["train", classifier.id, "--out", str(out)]) == 0
    manifest_seg, manifest = manifest, json.loads((out / classifier.id / "manifest.json").read_text())
    assert manifest["architecture"]["feature_bundle_sha256"] == manifest_seg["weights"]["sha256"]
    assert "backbone_file" not in manifest["architecture"]  # it runs on the segmenter's network
    fit = manifest["training"]["fit"]
    assert str(fit["C"]) in fit["cross_validated_accuracy"] and manifest["gradcam_layer"] == "encoder_features"
    assert json.loads((out / classifier.id / "split.json").read_text()) == json.loads(
        (out / config.id / "split.json").read_text())  # the segmenter's own split
    registry = Registry([out])
    result = Analyzer(registry).analyze(record, model_ids=[classifier.id], gradcam=True).results[0]
    assert set(result.probabilities) == {"benign", "normal"} and result.heatmap.shape == (96, 96)
    assert abs(sum(result.probabilities.values()) - 1) < 1e-5
    encoder = registry.get(config.id).load().layers[1]  # loaded once, for both bundles
    assert any(layer is encoder for layer in registry.get(classifier.id).load().layers[1].layers)
    # Together the pair passes the segmenter's network once per image row and gives what each gives alone.
    stem = registry.get(config.id).stages()
    assert stem.key is not None and registry.get(classifier.id).stages().stem is stem.stem
    both, passes = Analyzer(registry), []
    run = both.stem_rows.run_stem
    both.stem_rows.run_stem = lambda stages, x: passes.append((stages.key, len(x))) or run(stages, x)
    together = both.analyze(record, model_ids=[config.id, classifier.id], gradcam=True).results
    rows = 1 + sum(bool(registry.get(i).manifest.get("flip_average")) for i in (config.id, classifier.id))
    assert sum(n for name, n in passes if name == stem.key) == min(rows, 2)
    for result in together:
        alone = Analyzer(Registry([out])).analyze(record, model_ids=[result.model_id], gradcam=True).results[0]
        if result.mask is not None:
            np.testing.assert_allclose(result.probability_map, alone.probability_map, atol=1e-5)
        else:
            assert result.probabilities == pytest.approx(alone.probabilities, abs=1e-5)
    assert "On the segmenter" in (out / classifier.id / "model_card.md").read_text()
    with pytest.raises(SystemExit):  # a classifier has no segmenter settings to re-pick
        training_cli.main(["evaluate", classifier.id, "--out", str(out)])
    manifest_seg["weights"]["sha256"] = "0" * 64  # as if the segmenter had been retrained
    (out / config.id / "manifest.json").write_text(json.dumps(manifest_seg))
    with pytest.raises(ModelError, match="another version"):
        Registry([out]).get(classifier.id).load()

    # The Tversky run's checkpoint is not resumed by a run of another loss; that run's own is.
    capsys.readouterr()
    assert training_cli.main(["train", config.id, "--out", str(out)]) == 0
    assert "resuming" not in capsys.readouterr().out
    assert training_cli.main(["train", config.id, "--out", str(out)]) == 0
    assert "resuming after epoch 2" in capsys.readouterr().out


def _written_with_own_trunk(folder, card_phrase: str) -> dict:
    """The manifest of a bundle written after ``--whole-epochs 1``: it stores its own trunk, and its command and
    card record the phase."""
    manifest = json.loads((folder / "manifest.json").read_text())
    arch = manifest["architecture"]
    assert arch["trunk_file"] == "trunk.keras" and "backbone_file" not in arch
    assert manifest["training"]["epochs"]["whole"] == 1 and manifest["training"]["command"].endswith("--whole-epochs 1")
    assert card_phrase in (folder / "model_card.md").read_text()
    return manifest


def test_segmenter_whole_network_phase_tunes_its_encoder(busi_tree, training, monkeypatch):
    """``--whole-epochs`` on a segmenter unfreezes the encoder below the cached cut too: the bundle carries its
    own encoder (``trunk.keras``), runs through the Analyzer, and ``--from-written`` continues it - as a snapshot
    ensemble, the continuation's probability map averaged with that of the network it started from."""
    import keras

    from core.training import __main__ as training_cli
    from core.training import segmenter
    from core.training.configs import BACKBONES

    out, shrink = training
    config = shrink("breast-us-lesion-seg", **BUSI_ONLY, spec=SMALL, top_from="block12_sepconv1_act", augmented_views=0,
                    epochs_head=1, epochs_finetune=1, epochs_whole=0, lr_whole=1e-3, snapshot_ensemble=False,
                    batch_size=4, val_fraction=0.34, root=str(busi_tree))
    assert training_cli.main(["train", config.id, "--out", str(out), "--whole-epochs", "1"]) == 0
    folder = out / config.id
    written = _written_with_own_trunk(folder, "fine-tuned whole (its own `trunk.keras`")
    imagenet = keras.saving.load_model(BACKBONES["xception"], compile=False)
    encoder = Registry([out]).get(config.id).load().layers[1]
    trained, start = encoder.get_layer("block2_sepconv1").get_weights()[0], imagenet.get_layer("block2_sepconv1").get_weights()[0]
    assert np.abs(trained - start).max() > 1e-3  # below the cached cut, yet trained: far above float16 rounding
    for trained, start in zip(encoder.get_layer("block2_sepconv1_bn").get_weights(),
                              imagenet.get_layer("block2_sepconv1_bn").get_weights()):
        np.testing.assert_array_equal(trained, start)  # BatchNorm stays frozen
    record = load_image(busi_tree / "benign" / "benign (1).png", modality="US")
    result = Analyzer(Registry([out])).analyze(record, model_ids=[config.id]).results[0]
    assert result.mask.shape == (96, 96)

    def not_again(*args, **kwargs):
        raise AssertionError("phases 1-2 ran again")

    monkeypatch.setattr(segmenter, "prepare", not_again)
    monkeypatch.setattr(segmenter, "fit_decoder", not_again)
    shrink(config.id, snapshot_ensemble=True)
    before = Registry([out]).get(config.id).load()
    assert training_cli.main(["train", config.id, "--out", str(out), "--whole-epochs", "1", "--from-written"]) == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["training"]["started_from"]["weights_sha256"] == written["weights"]["sha256"]
    assert manifest["training"]["started_from"]["whole_epochs"] == 1
    assert manifest["architecture"]["average_with"]["trunk_file"] == "start/trunk.keras"
    card = (folder / "model_card.md").read_text()
    assert "continued from version" in card and "snapshot ensemble" in card
    ensemble = Registry([out]).get(config.id).load()
    continued, start = ensemble.get_layer(config.id), ensemble.get_layer(f"{config.id}_start")
    assert np.abs(continued.layers[1].get_layer("block2_sepconv1").get_weights()[0]
                  - encoder.get_layer("block2_sepconv1").get_weights()[0]).max() > 1e-3
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    start_x, continued_x = (np.asarray(m(x, training=False)) for m in (start, continued))
    np.testing.assert_allclose(start_x, before(x, training=False), atol=1e-5)  # the start is stored as it was
    np.testing.assert_allclose(ensemble(x, training=False), (continued_x + start_x) / 2, atol=1e-6)
    assert Analyzer(Registry([out])).analyze(record, model_ids=[config.id]).results[0].mask.shape == (96, 96)
    assert manifest["training"]["augmentation_whole"] == config.whole_augmentation
    # Continuing the ensemble continues its newer network; the older snapshot drops out. Its phase 3 may draw
    # another augmentation, which the manifest, card and command record.
    from core.training import augment

    drawn = []
    real_build = augment.build_augmentation
    monkeypatch.setattr(augment, "build_augmentation", lambda name, seed=0: drawn.append(name) or real_build(name, seed))
    assert training_cli.main(["train", config.id, "--out", str(out), "--whole-epochs", "1", "--from-written",
                              "--whole-augmentation", "geometric"]) == 0
    assert drawn and set(drawn) == {"geometric"}  # every training batch drew it
    again = json.loads((folder / "manifest.json").read_text())
    assert again["training"]["started_from"]["weights_sha256"] == manifest["weights"]["sha256"]
    assert again["training"]["started_from"]["newer_of_ensemble"] and again["training"]["started_from"]["whole_epochs"] == 2
    assert again["training"]["augmentation_whole"] == "geometric"
    assert again["training"]["command"].endswith("--whole-epochs 1 --whole-augmentation geometric --from-written")
    card = (folder / "model_card.md").read_text()
    assert "the newer network of version" in card and "whole-network phase: geometric, drawn afresh" in card
    newer_start = Registry([out]).get(config.id).load().get_layer(f"{config.id}_start")
    np.testing.assert_allclose(newer_start(x, training=False), continued_x, atol=1e-5)


def test_classifier_with_lower_cut_records_and_uses_it(busi_tree, training):
    from core.training import __main__ as training_cli

    out, shrink = training
    config = shrink("breast-us-3class", **BUSI_ONLY, spec=SMALL, classes=["benign", "normal"], feature_bundle=None,
                    top_from="block13_sepconv1_act", epochs_whole=0,
                    augmented_views=1, epochs_head=1, epochs_finetune=1, batch_size=4, val_fraction=0.34)
    assert training_cli.main(["train", config.id, "--root", str(busi_tree), "--out", str(out)]) == 0
    manifest = json.loads((out / config.id / "manifest.json").read_text())
    assert manifest["architecture"]["top_block_start"] == "block13_sepconv1_act"
    head = Registry([out]).get(config.id).load().get_layer("head")
    assert head.input.shape[-1] == 728  # block 12's output, not block 13's (1024)
    record = load_image(busi_tree / "benign" / "benign (1).png", modality="US")
    result = Analyzer(Registry([out])).analyze(record).results[0]
    assert set(result.probabilities) == {"benign", "normal"}


def test_whole_network_phase_fine_tunes_the_trunk_on_fresh_augmentations(busi_tree, training, monkeypatch):
    """``--whole-epochs`` trains the trunk too; the bundle then carries its own trunk, loads, explains
    (Grad-CAM through its shared-stem split) and records the phase in its manifest, card and command."""
    import keras

    from core.training import __main__ as training_cli
    from core.training.configs import BACKBONES

    out, shrink = training
    config = shrink("breast-us-3class", **BUSI_ONLY, spec=SMALL, classes=["benign", "normal"], feature_bundle=None, epochs_whole=0,
                    augmented_views=0, epochs_head=1, epochs_finetune=1, lr_whole=1e-3, batch_size=4, val_fraction=0.34)
    assert training_cli.main(["train", config.id, "--root", str(busi_tree), "--out", str(out), "--whole-epochs", "1"]) == 0
    folder = out / config.id
    _written_with_own_trunk(folder, "whole network was fine-tuned")
    registry = Registry([out])
    model = registry.get(config.id).load()
    trunk = model.layers[1]
    imagenet = keras.saving.load_model(BACKBONES["xception"], compile=False)
    trained, start = trunk.get_layer("block1_conv1").get_weights()[0], imagenet.get_layer("block1_conv1").get_weights()[0]
    assert np.abs(trained - start).max() > 1e-3  # the first convolution moved: far above float16 rounding
    for trained, start in zip(trunk.get_layer("block1_conv1_bn").get_weights(),
                              imagenet.get_layer("block1_conv1_bn").get_weights()):
        np.testing.assert_array_equal(trained, start)  # BatchNorm stays frozen
    bundle = registry.get(config.id)
    # Its data marks lesions, so training chose the Grad-CAM layer by where the heat falls (core.training.cam_layer).
    assert set(bundle.manifest["gradcam_localisation"]) == {"block14_sepconv2_act", "block13_sepconv2_act"}
    bundle.manifest["gradcam_layer"] = "block14_sepconv2_act"  # the top block's last activation: a stem ends there
    stages = bundle.stages()
    assert stages.stem is not None
    x = np.random.default_rng(0).uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(stages.rest(stages.stem(x)), model(x), atol=1e-5)
    record = load_image(busi_tree / "benign" / "benign (1).png", modality="US")
    result = Analyzer(registry).analyze(record, model_ids=[config.id], gradcam=True).results[0]
    assert set(result.probabilities) == {"benign", "normal"} and result.heatmap.shape == (96, 96)
    # Retrained without the phase, the bundle goes back to the shared backbone and drops its own trunk.
    assert training_cli.main(["train", config.id, "--root", str(busi_tree), "--out", str(out)]) == 0
    assert not (folder / "trunk.keras").exists()
    written = json.loads((folder / "manifest.json").read_text())
    assert "backbone_file" in written["architecture"]
    # --from-written: phase 3 starts from that written bundle; the cached phases do not run again.
    with pytest.raises(SystemExit):
        training_cli.main(["train", config.id, "--root", str(busi_tree), "--out", str(out), "--from-written"])
    from core.training import classifier

    def not_again(*args, **kwargs):
        raise AssertionError("phases 1-2 ran again")

    monkeypatch.setattr(classifier, "prepare", not_again)
    monkeypatch.setattr(classifier, "fit_classifier", not_again)
    before = Registry([out]).get(config.id).load()
    assert training_cli.main(["train", config.id, "--root", str(busi_tree), "--out", str(out), "--whole-epochs", "1",
                              "--from-written"]) == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["training"]["started_from"]["weights_sha256"] == written["weights"]["sha256"]
    assert manifest["training"]["command"].endswith("--whole-epochs 1 --from-written")
    assert f"continued from version {written['version']}" in (folder / "model_card.md").read_text()
    after = Registry([out]).get(config.id).load()
    assert np.abs(after.layers[1].get_layer("block1_conv1").get_weights()[0]
                  - before.layers[1].get_layer("block1_conv1").get_weights()[0]).max() > 1e-3
    # Continued once more, it counts the epochs behind it and draws augmentations it has not seen.
    from core.training import whole_network

    seeds = []
    real_batches = whole_network._augmented_batches
    monkeypatch.setattr(whole_network, "_augmented_batches",
                        lambda *args, seed, **kw: seeds.append(seed) or real_batches(*args, seed=seed, **kw))
    assert training_cli.main(["train", config.id, "--root", str(busi_tree), "--out", str(out), "--whole-epochs", "1",
                              "--from-written"]) == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["training"]["started_from"]["whole_epochs"] == 1
    assert "itself fine-tuned whole for 1 epoch," in (folder / "model_card.md").read_text()
    assert seeds == [(config.seed * 1000 + 2) * 100_000]  # the first continuation drew epoch 1's
    # --distil-mirror: the targets mix the written network's mirror-averaged probabilities with the labels.
    from core.training.configs import DATA_ROOT
    from core.training.evaluate import softmax
    from core.training.mirror import predict_with_mirror

    teacher_bundle = Registry([out]).get(config.id)
    plan = json.loads((folder / "split.json").read_text())
    train_paths = [DATA_ROOT / p for p, _, _ in plan["train"]]
    plain, mirrored = predict_with_mirror(teacher_bundle.load(), train_paths, teacher_bundle.spec)
    temperature = teacher_bundle.manifest["calibration"]["temperature"]
    expected_teacher = softmax((plain + mirrored) / 2 / temperature)
    targets = []
    monkeypatch.setattr(whole_network, "_augmented_batches", lambda *args, seed, **kw: (
        (targets.append((kw["teacher"], batch[1])), batch)[1] for batch in real_batches(*args, seed=seed, **kw)))
    with pytest.raises(SystemExit):  # it learns from a written network
        training_cli.main(["train", config.id, "--root", str(busi_tree), "--out", str(out), "--distil-mirror", "0.5"])
    with pytest.raises(SystemExit):  # a weight, at most the whole target
        training_cli.main(["train", config.id, "--root", str(busi_tree), "--out", str(out), "--whole-epochs", "1",
                           "--from-written", "--distil-mirror", "1.5"])
    assert training_cli.main(["train", config.id, "--root", str(busi_tree), "--out", str(out), "--whole-epochs", "1",
                              "--from-written", "--distil-mirror", "0.5"]) == 0
    teacher = targets[0][0]
    np.testing.assert_allclose(teacher, expected_teacher, atol=2e-3)  # float16-stored weights, other batching
    labels = np.array([config.classes.index(lab) for _, lab, _ in plan["train"]])
    for _, batch_targets in targets:
        rows = [np.flatnonzero(np.isclose(0.5 * teacher + 0.5 * np.eye(2)[labels], row, atol=1e-6).all(axis=1))
                for row in batch_targets]
        assert all(len(r) for r in rows)  # every target is some training image's mix, none a bare label
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["training"]["distil_mirror"]["weight"] == 0.5
    assert manifest["training"]["command"].endswith("--from-written --distil-mirror 0.5")
    # --size: the network continues at another input side, taught by the written one at its own.
    written = Registry([out]).get(config.id)
    plain, mirrored = predict_with_mirror(written.load(), train_paths, written.spec)
    expected_teacher = softmax((plain + mirrored) / 2 / written.manifest["calibration"]["temperature"])
    targets.clear()
    size = written.spec.size + 8
    assert training_cli.main(["train", config.id, "--root", str(busi_tree), "--out", str(out), "--whole-epochs", "1",
                              "--from-written", "--distil-mirror", "0.5", "--size", str(size)]) == 0
    np.testing.assert_allclose(targets[0][0], expected_teacher, atol=2e-3)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["preprocessing"]["size"] == size
    assert manifest["training"]["command"].endswith(f"--distil-mirror 0.5 --size {size}")


def test_transfer_bundle_takes_its_features_from_a_whole_tuned_parent(busi_tree, training):
    """A transfer bundle (yes/no on the 4-class network) fits on the written parent's own network: after the
    parent's trunk was fine-tuned, the shared backbone's features would be wrong for it."""
    import keras

    from core.models.preprocessing import prepare_display, preprocess
    from core.training import __main__ as training_cli
    from core.training.transfer import _parent_features

    out, shrink = training
    mapping = {"benign": "yes", "normal": "no"}
    parent = shrink("brain-mri-tumor-4class", spec=SMALL, classes=["benign", "normal"], root=str(busi_tree),
                    reader="class_folders", init_from_written=False, augmented_views=0, epochs_head=1, epochs_finetune=1, epochs_whole=1, lr_whole=1e-3, batch_size=4,
                    val_fraction=0.34)
    child = shrink("brain-mri-tumor-yesno", spec=SMALL, root=str(busi_tree), folder_to_class=mapping,
                   feature_class_map=mapping, augmented_views=1, epochs_head=2, batch_size=4, val_fraction=0.34)
    assert training_cli.main(["train", parent.id, "--out", str(out)]) == 0
    assert training_cli.main(["train", child.id, "--out", str(out)]) == 0
    manifest = json.loads((out / child.id / "manifest.json").read_text())
    parent_manifest = json.loads((out / parent.id / "manifest.json").read_text())
    assert "trunk_file" in parent_manifest["architecture"]
    assert manifest["architecture"]["feature_bundle_sha256"] == parent_manifest["weights"]["sha256"]
    assert "backbone_file" not in manifest["architecture"]  # it runs on the parent's network, not the shared file
    features = _parent_features(out / parent.id)
    cached = np.load(child.cache_dir / features.name / "val_v0.npy").astype(np.float32)
    entries = json.loads((child.cache_dir / "split.json").read_text())["val"]
    registry = Registry([out])
    trunk, head = registry.get(parent.id).load().layers[1:]
    pooled = keras.Model(head.input, head.get_layer("gap").output)
    x = np.stack([preprocess(prepare_display(load_image(e["path"]).display(0), SMALL), SMALL) for e in entries])
    np.testing.assert_allclose(cached, pooled(trunk(x)), atol=2e-2, rtol=2e-2)  # float16 cache of the same vectors
    from core.models.backbones import build_backbone, split_backbone
    from core.training.configs import BACKBONES

    shared, _ = split_backbone(build_backbone("xception", BACKBONES["xception"]), "xception", parent.top_block_start)
    assert not np.allclose(cached, pooled(shared(x)), atol=2e-2, rtol=2e-2)  # what the shared trunk would have given
    record = load_image(busi_tree / "benign" / "benign (2).png", modality="MR")
    results = Analyzer(registry).analyze(record, model_ids=[parent.id, child.id], gradcam=True).results
    assert [set(r.probabilities) for r in results] == [{"benign", "normal"}, {"no", "yes"}]
    assert registry.get(child.id).stages().stem is registry.get(parent.id).stages().stem
    with pytest.raises(SystemExit):  # nothing of its own to cache or cross-validate
        training_cli.main(["cv", child.id, "--out", str(out)])


def test_a_written_network_continues_on_new_data_validated_where_it_was(busi_tree, training, tmp_path):
    """``init_from_written``: phases 1-2 start from the written bundle (its trunk frozen and kept, its top block
    and head continued) on a larger data set, and every image the written bundle was validated on stays a
    validation image (a continued network is never validated on images it was fitted on)."""
    import shutil

    from core.training import __main__ as training_cli

    out, shrink = training
    small = tmp_path / "small"
    for label in ("benign", "normal"):
        (small / label).mkdir(parents=True)
        for path in sorted((busi_tree / label).glob("*[!k].png"))[:4]:
            shutil.copy(path, small / label / path.name)
    first = shrink("brain-mri-tumor-4class", spec=SMALL, classes=["benign", "normal"], reader="class_folders",
                   root=str(small), init_from_written=False, augmented_views=0, epochs_head=1, epochs_finetune=1,
                   epochs_whole=0, batch_size=4, val_fraction=0.5)
    assert training_cli.main(["train", first.id, "--out", str(out)]) == 0
    folder = out / first.id
    written = json.loads((folder / "manifest.json").read_text())
    written_val = {e[0] for e in json.loads((folder / "split.json").read_text())["val"]}
    trunk_before = Registry([out]).get(first.id).trunk_and_head()[0].get_weights()
    for label in ("benign", "normal"):  # more data in the same folder
        for path in sorted((busi_tree / label).glob("*[!k].png"))[4:]:
            shutil.copy(path, small / label / path.name)
    shrink("brain-mri-tumor-4class", spec=SMALL, classes=["benign", "normal"], reader="class_folders",
           root=str(small), init_from_written=True, augmented_views=0, epochs_head=1, epochs_finetune=1,
           epochs_whole=0, batch_size=4, val_fraction=0.5)
    import core.training.configs as configs

    shutil.rmtree(configs.CONFIGS[first.id].cache_dir)
    assert training_cli.main(["train", first.id, "--out", str(out)]) == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    split = json.loads((folder / "split.json").read_text())
    assert written_val <= {e[0] for e in split["val"]} and not written_val & {e[0] for e in split["train"]}
    assert len(split["train"]) + len(split["val"]) > 8  # the new data joined
    start = manifest["training"]["started_from"]
    assert start["mode"] == "init" and start["weights_sha256"] == written["weights"]["sha256"]
    assert "kept frozen" in (folder / "model_card.md").read_text()
    trunk_after = Registry([out]).get(first.id).trunk_and_head()[0].get_weights()
    assert all(np.allclose(a, b) for a, b in zip(trunk_before, trunk_after))


def test_resnet50v2_from_random_weights_is_one_option_away(busi_tree, training, tmp_path):
    """No ImageNet ResNet50V2 weights exist offline: ``--weights none`` trains it from random weights,
    materialised once so cached features, training and the written bundle share the same trunk."""
    from core.training import __main__ as training_cli

    out, shrink = training
    config = shrink("breast-us-3class", **BUSI_ONLY, spec=SMALL, classes=["benign", "normal"], feature_bundle=None, augmented_views=0,
                    epochs_head=1, epochs_finetune=1, epochs_whole=0, batch_size=4, val_fraction=0.34)
    assert training_cli.main(["train", config.id, "--root", str(busi_tree), "--out", str(out),
                              "--arch", "resnet50v2", "--weights", "none"]) == 0
    manifest = json.loads((out / config.id / "manifest.json").read_text())
    arch = manifest["architecture"]
    assert arch["backbone"] == "resnet50v2" and arch["backbone_file"] == "../backbones/resnet50v2-random.keras"
    assert arch["top_block_start"] == "conv5_block3_preact_bn" and "randomly initialised" in arch["weights_origin"]
    assert manifest["training"]["command"].endswith("--arch resnet50v2 --weights none")
    record = load_image(busi_tree / "normal" / "normal (1).png", modality="US")
    result = Analyzer(Registry([out])).analyze(record, gradcam=True).results[0]
    assert set(result.probabilities) == {"benign", "normal"} and result.heatmap.shape == (96, 96)


def test_set_trainable_reaches_every_layer_of_a_freshly_loaded_backbone():
    """The backbone file stores its layers frozen; unfreezing must reach each convolution (a resumed
    fine-tune once trained only the Dense layer because it did not)."""
    import keras

    from core.models.backbones import build_backbone, split_backbone
    from core.training.networks import set_trainable
    from core.training.configs import BACKBONES

    _, top = split_backbone(build_backbone("xception", BACKBONES["xception"]), "xception", "block13_sepconv1_act")
    set_trainable(top, True)
    norms = [layer for layer in top.layers if isinstance(layer, keras.layers.BatchNormalization)]
    convs = [layer for layer in top.layers if layer.weights and layer not in norms]
    assert len(convs) == 5 and all(layer.trainable for layer in convs)
    assert norms and not any(layer.trainable for layer in norms)
    assert len(top.trainable_weights) == sum(len(layer.trainable_weights) for layer in convs)
    set_trainable(top, False)
    assert not top.trainable_weights


def test_training_resumes_only_its_own_recipe(tmp_path, capsys):
    """A checkpoint left by another recipe (here: MixUp, or other features of the same shape) is not resumed; the
    same recipe with more epochs is."""
    from core.training.classifier import fit_classifier
    from core.training.configs import CONFIGS

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 2, 2, 1024)).astype(np.float16), np.array([0, 1] * 4)
    base = dataclasses.replace(CONFIGS["breast-us-3class"], classes=["a", "b"], feature_bundle=None, top_from=None,
                               epochs_head=1, epochs_finetune=1, epochs_whole=0, batch_size=4)

    def run(config) -> str:
        fit_classifier(config, x, y, x[:4], y[:4], tmp_path)
        return capsys.readouterr().out

    assert "resuming" not in run(base)
    mixed = dataclasses.replace(base, mix="mixup")
    assert "resuming" not in run(mixed)
    assert "resuming after epoch 2" in run(dataclasses.replace(mixed, epochs_finetune=2))
    x = x[::-1].copy()  # another view's features in the same files: a new run
    assert "resuming" not in run(dataclasses.replace(mixed, epochs_finetune=2))


def test_cached_features_of_another_input_size_are_made_again(tmp_path):
    """A feature cache is resumed only for the trunk and input it was made with: another ``--size`` starts over."""
    import keras

    from core.training.datasets import Sample
    from core.training.features import cache_features

    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((40, 50), 60 * i, np.uint8)).save(paths[-1])
    samples = [Sample(p, "a", str(i)) for i, p in enumerate(paths)]
    image = keras.Input((None, None, 3))
    trunk = keras.Model(image, keras.layers.AveragePooling2D(8)(image), name="tiny_trunk")
    out = tmp_path / "features.npy"
    for size in (64, 80, 64):
        cache_features(samples, dataclasses.replace(SMALL, size=size), trunk, out)
        assert np.load(out).shape == (3, size // 8, size // 8, 3)


def test_tile_mask_is_cut_from_the_whole_image_mask(tmp_path):
    """Annotation circles are in whole-image coordinates: a tile's mask is the same window of them."""
    from core.training.datasets import Circle, Sample
    from core.training.features import model_inputs

    path = tmp_path / "mammo.png"
    Image.fromarray(np.full((96, 96), 100, np.uint8)).save(path)
    spec = PreprocessSpec(size=32, color="grey3", crop="none")
    circle = (Circle(x=70.0, y=70.0, r=6.0),)
    lesion_tile = Sample(path, "abnormal", circles=circle, extra={"box": [48, 80, 48, 80], "shape": [96, 96]})
    empty_tile = Sample(path, "normal", circles=circle, extra={"box": [0, 32, 0, 32], "shape": [96, 96]})
    _, mask = model_inputs(lesion_tile, spec, with_mask=True)
    assert mask[22, 22] == 1 and mask[0, 0] == 0  # the circle's centre sits at (22, 22) of this tile
    assert not model_inputs(empty_tile, spec, with_mask=True)[1].any()


def _faint_and_sure_blobs(tiny_models: Path, tmp_path: Path) -> tuple[Path, list[dict]]:
    """A copy of the tiny ultrasound segmenter, and split entries of a normal image with a faint blob and a lesion
    image with a sure one."""
    import shutil

    folder = tmp_path / "tiny-us-segmenter"
    shutil.copytree(tiny_models / "tiny-us-segmenter", folder)
    entries = []
    for name, level in (("normal", 135), ("lesion", 255)):
        image, mask = np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.uint8)
        image[20:40, 20:40] = level
        if name == "lesion":
            mask[20:40, 20:40] = 255
        Image.fromarray(image).save(tmp_path / f"{name}.png")
        Image.fromarray(mask).save(tmp_path / f"{name}_mask.png")
        entries.append({"path": str(tmp_path / f"{name}.png"), "label": name, "group": name,
                        "mask": str(tmp_path / f"{name}_mask.png"), "circles": []})
    return folder, entries


def test_segmenter_evaluation_picks_the_false_lesion_gate_on_validation(tiny_models, tmp_path):
    """A normal image with a faint blob and a lesion image with a sure one: gating at 0.8 or above
    removes the false lesion and keeps the true one, so the lowest such level is chosen."""
    from core.training.seg_eval import evaluate_segmenter

    folder, entries = _faint_and_sure_blobs(tiny_models, tmp_path)
    settings, metrics, _ = evaluate_segmenter(folder, {"train": [], "val": entries})
    assert settings["min_lesion_peak"] == 0.8
    assert metrics["by_min_lesion_peak"]["0.0"]["false_positive_rate_normal"] == 1.0
    assert metrics["false_positive_rate_normal"] == 0.0 and metrics["dice"] > 0.95 and metrics["dice_all"] > 0.95


def test_held_out_records_measure_a_segmenter_at_its_own_settings_and_pool(tiny_models, tmp_path):
    """Cross-validation folds measure each fold's segmenter on its held-out images at the settings the fold
    chose (not re-chosen there), per image, so that folds pool: the false lesion on the normal image counts at a
    gate of 0 and not at 0.8, and the pooled Dice is the mean of the images' own."""
    from core.training.evaluate import dice
    from core.training.seg_eval import image_records, pooled_summary

    folder, entries = _faint_and_sure_blobs(tiny_models, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    found = {}
    for gate in (0.0, 0.8):
        manifest.update(min_lesion_peak=gate, flip_average=False)
        (folder / "manifest.json").write_text(json.dumps(manifest))
        found[gate] = image_records(folder, entries)
    assert [r["false_lesion"] for r in found[0.0]] == [True, False]
    assert [r["false_lesion"] for r in found[0.8]] == [False, False]
    assert found[0.8][1]["lesion"] and found[0.8][1]["dice"] > 0.5 and found[0.8][0]["dice"] == 1.0
    pooled = pooled_summary(found[0.0] + found[0.8])
    assert pooled["all"]["n"] == 4 and pooled["all"]["n_lesion"] == 2
    assert pooled["all"]["false_positive_rate_normal"] == 0.5
    assert pooled["all"]["dice"] == np.mean([found[0.0][1]["dice"], found[0.8][1]["dice"]])
    assert dice(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0


def test_a_whole_network_run_is_keyed_to_its_images():
    """The whole-network phase's checkpoints are resumed only by a run on the same images and labels (a
    cross-validation fold must not resume another fold's run of the same recipe)."""
    from core.training.checkpoints import samples_digest
    from core.training.datasets import Sample

    a = [Sample(Path(f"img{i}.png"), "benign") for i in range(4)]
    assert samples_digest(a[:3], a[3:]) == samples_digest(list(a[:3]), list(a[3:]))
    assert samples_digest(a[:3], a[3:]) != samples_digest(a[1:], a[:1])
    assert samples_digest(a) != samples_digest([Sample(s.path, "malignant") for s in a])


def test_card_intervals_are_wide_on_few_images_and_narrow_on_many():
    """A perfect score on 12 images still admits ~76 % (Wilson); the Dice interval brackets its mean."""
    from core.models.intervals import accuracy_interval
    from core.training.evaluate import segmentation_metrics

    low, high = accuracy_interval(1.0, 12)
    assert high == 1.0 and 0.75 < low < 0.76
    low, high = accuracy_interval(932 / 965, 965)
    assert 0.95 < low < 932 / 965 < high < 0.98
    rng = np.random.default_rng(0)
    truths = [rng.random((16, 16)) > 0.5 for _ in range(40)]
    preds = [t if i % 2 else ~t for i, t in enumerate(truths)]  # half perfect, half all wrong: Dice 0.5
    metrics = segmentation_metrics(preds, truths)
    low, high = metrics["dice_ci95"]
    assert metrics["dice"] == 0.5 and 0.3 < low < 0.5 < high < 0.7


def test_segmenter_cross_validation_pools_folds_into_both_cards(tmp_path, monkeypatch):
    """Two folds' held-out records pool into the segmenter's out-of-fold Dice and the 3-class head's out-of-fold
    metrics per source, in the formats the two cards print."""
    from core.training import seg_crossval
    from core.training.cards import _cross_validation_section, _segmenter_cv_section

    rng = np.random.default_rng(0)
    classes = ["benign", "malignant", "normal"]
    for fold in (1, 2):
        records = []
        for i in range(12):
            label = classes[i % 3]
            logits = [0.0, 0.0, 0.0]
            logits[i % 3 if i % 4 else (i + 1) % 3] = 2.0  # every fourth image called wrong
            records.append({"path": f"{'busi' if i < 8 else 'other'}/{label}/{fold}-{i}.png", "label": label,
                            "group": f"{fold}-{i // 2}", "lesion": label != "normal",
                            "dice": float(rng.uniform(0.5, 0.9)) if label != "normal" else 1.0,
                            "false_lesion": label == "normal" and i == 2, "logits": logits})
        (tmp_path / f"fold{fold}.json").write_text(json.dumps({
            "records": records, "segmenter_settings": {"decision_threshold": 0.4, "flip_average": True,
                                                       "min_lesion_peak": 0.9}}))
    monkeypatch.setattr(seg_crossval, "_work", lambda config, folds: tmp_path)
    result = seg_crossval.pool(2)
    seg, cls = result["segmenter"], result["classifier"]
    lesion = [r["dice"] for k in (1, 2) for r in json.loads((tmp_path / f"fold{k}.json").read_text())["records"]
              if r["lesion"]]
    assert seg["n"] == 24 and seg["n_lesion"] == 16 and seg["dice"] == pytest.approx(np.mean(lesion))
    assert seg["false_positive_rate_normal"] == pytest.approx(2 / 8) and set(seg["by_source"]) == {"busi", "other"}
    assert cls["n"] == 24 and cls["accuracy"] == pytest.approx(18 / 24) and len(cls["per_fold"]) == 2
    assert cls["by_source"]["busi"]["n"] == 16 and "malignant_recall" in cls["by_source"]["busi"]
    text = _segmenter_cv_section(seg)
    assert "2 folds" in text and f"Dice **{np.mean(lesion):.4f}**" in text and "fold 2: threshold 0.4" in text
    assert "0.7500" in _cross_validation_section(cls) and "version 1.2's network whole" in _cross_validation_section(cls)


def test_cross_validation_section_goes_before_the_limits_and_replaces_an_earlier_one():
    """Cards carry sections written by hand: recording cross-validation edits the card in place."""
    from core.training.seg_crossval import with_section

    card = "# x\n\n## Validation\nv\n\n## Screen captures\ns\n\n## Limits\nl\n"
    once = with_section(card, "\n## Grouped cross-validation (2 folds)\nA\n### Per source\nt\n")
    assert once.index("## Screen captures") < once.index("## Grouped") < once.index("## Limits")
    again = with_section(once, "\n## Grouped cross-validation (3 folds)\nB\n")
    assert "(2 folds)" not in again and "### Per source" not in again and again.count("## Grouped") == 1
    assert again.index("## Grouped") < again.index("## Limits") and "## Screen captures\ns" in again
