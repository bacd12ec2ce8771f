"""Refitting only a classifier's last layer (core.training.refit_dense), on a tiny bundle."""

import hashlib
import json

import numpy as np
import pytest

from core.training import refit_dense
from core.training.configs import network_origin
from core.training.refit_dense import (changed_layers, fit_dense, point_segmenter, stand_in_entries, swap_in,
                                       write_refit)


def test_fit_dense_gives_the_dense_layers_weights():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int) + 2 * (x[:, 2] > 1)
    kernel, bias = fit_dense(x, y, np.ones(len(y)), c=1.0)
    assert kernel.shape == (6, 4) and bias.shape == (4,)
    assert ((x @ kernel + bias).argmax(axis=1) == y).mean() > 0.9
    two = (x[:, 0] > 0).astype(int)
    kernel, bias = fit_dense(x, two, np.ones(len(two)), c=1.0)  # two classes: one logistic fit, two logits
    assert kernel.shape == (6, 2) and ((x @ kernel + bias).argmax(axis=1) == two).mean() > 0.95


def test_weighted_samples_pull_the_fit():
    """A weight on a few samples moves the boundary towards calling them right (what the stand-ins rely on)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    odd = (x[:, 0] > 0.2) & (x[:, 0] < 1.0) & (x[:, 1] > 0.8)  # relabelled: a group the plain fit calls wrong
    y[odd] = 0
    right = lambda k, b: ((x[odd] @ k + b).argmax(axis=1) == 0).mean()  # noqa: E731
    plain, weighted = right(*fit_dense(x, y, np.ones(len(y)), 1.0)), right(*fit_dense(x, y, np.where(odd, 8.0, 1.0), 1.0))
    assert plain < 0.5 < weighted


def test_refit_changes_only_the_dense(tmp_path, tiny_models):
    import keras

    old = tiny_models / "tiny-mr-classifier"
    new = tmp_path / "models" / "tiny-mr-classifier"
    kernel = np.arange(32, dtype=np.float32).reshape(16, 2) / 32
    bias = np.array([0.25, -0.25], np.float32)
    split = {"train": [["a.png", "clear", "g1"]], "val": [["b.png", "lesion", "g2"]]}
    sha = write_refit(old, new, "0.0.2", {"logits": [kernel, bias]}, split, {"what": "test"})
    manifest = json.loads((new / "manifest.json").read_text())
    assert manifest["version"] == "0.0.2" and manifest["training"]["refit_dense"]["what"] == "test"
    assert manifest["training"]["refit_dense"]["started_from"]["version"] == "0.0.1"
    assert manifest["training"]["counts"] == {"train": {"clear": 1}, "val": {"lesion": 1}}
    assert sha == manifest["weights"]["sha256"] == hashlib.sha256((new / "model.keras").read_bytes()).hexdigest()
    assert json.loads((new / "split.json").read_text()) == split
    model = keras.saving.load_model(new / "model.keras", compile=False, safe_mode=True)
    stored_kernel, stored_bias = model.get_layer("logits").get_weights()
    np.testing.assert_allclose(stored_kernel, kernel, atol=1e-3)  # stored as float16
    np.testing.assert_allclose(stored_bias, bias, atol=1e-3)
    assert json.loads((old / "manifest.json").read_text())["version"] == "0.0.1"  # the old bundle untouched
    assert changed_layers(old, new) == ["logits"]
    assert manifest["training"]["network_of"] == {
        "version": "0.0.1", "weights_sha256": json.loads((old / "manifest.json").read_text())["weights"]["sha256"]}
    again = tmp_path / "again" / "tiny-mr-classifier"  # a refit of the refit: its network is still 0.0.1's
    write_refit(new, again, "0.0.3", {"logits": [kernel, bias]}, split, {"what": "test"})
    assert network_origin(again) == network_origin(new) == ("0.0.1", manifest["training"]["network_of"]["weights_sha256"])
    tuned = tmp_path / "tuned" / "tiny-mr-classifier"  # a version whose network changed: its own again
    conv_weights = [w + 1 for w in model.get_layer("tiny_backbone").get_layer("last_conv").get_weights()]
    write_refit(new, tuned, "0.0.4", {"last_conv": conv_weights}, split, {"what": "test"}, record="tune_block14")
    tuned_training = json.loads((tuned / "manifest.json").read_text())["training"]
    assert "refit_dense" not in tuned_training and tuned_training["tune_block14"]["started_from"]["version"] == "0.0.2"
    assert network_origin(tuned) == ("0.0.4", json.loads((tuned / "manifest.json").read_text())["weights"]["sha256"])
    assert network_origin(old) == ("0.0.1", json.loads((old / "manifest.json").read_text())["weights"]["sha256"])

    conv = model.get_layer("tiny_backbone").get_layer("last_conv")
    conv.set_weights([w + 1 for w in conv.get_weights()])
    model.save(new / "model.keras")
    assert changed_layers(old, new) == ["last_conv", "logits"]


def test_a_head_with_fewer_layers_is_not_the_same_encoder(tmp_path, tiny_models):
    """Layers are compared in order and in number: a head cut short is not the same network."""
    import keras

    old = tiny_models / "tiny-mr-classifier"
    new = tmp_path / "tiny-mr-classifier"
    write_refit(old, new, "0.0.2", {"logits": [np.zeros((16, 2), np.float32), np.zeros(2, np.float32)]},
                {"train": [], "val": []}, {})
    short = keras.Sequential([keras.Input((16,)), keras.layers.Dense(2, name="logits")])
    short.save(new / "model.keras")
    assert changed_layers(old, new) is None


def test_swap_in_replaces_the_folder_and_leaves_nothing_beside(tmp_path):
    final, staging = tmp_path / "models" / "b", tmp_path / ".b-refit"
    final.mkdir(parents=True)
    (final / "old.txt").write_text("old")
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    swap_in(staging, final)
    assert [p.name for p in final.iterdir()] == ["new.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["models"]
    staging.mkdir()
    swap_in(staging, tmp_path / "models" / "c")  # nothing there yet
    assert (tmp_path / "models" / "c").is_dir()


def test_refit_refuses_a_kernel_of_another_shape(tmp_path, tiny_models):
    with pytest.raises(ValueError, match="layer logits holds"):
        write_refit(tiny_models / "tiny-mr-classifier", tmp_path / "x", "0.0.2",
                    {"logits": [np.zeros((5, 2), np.float32), np.zeros(2, np.float32)]}, {"train": [], "val": []}, {})


def test_segmenter_pointed_at_the_new_version_only_from_the_old(tmp_path):
    folder = tmp_path / refit_dense.SEGMENTER
    folder.mkdir()
    manifest = {"architecture": {"encoder_bundle_sha256": "a" * 64, "weights_origin": "the 3.0.0 network"}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    point_segmenter(tmp_path, "b" * 64, "c" * 64, "3.1.0")  # on another version: left alone
    assert json.loads((folder / "manifest.json").read_text()) == manifest
    point_segmenter(tmp_path, "a" * 64, "c" * 64, "3.1.0")
    arch = json.loads((folder / "manifest.json").read_text())["architecture"]
    assert arch["encoder_bundle_sha256"] == "c" * 64 and "3.1.0 refitted only its last layer" in arch["weights_origin"]


def test_stand_ins_take_their_slices_side_label_and_group(tmp_path, monkeypatch):
    rows = [{"file": "Tr-gl_0001.jpg", "label": "glioma", "group": "figshare-P1", "used": 1},
            {"file": "Tr-me_0002.jpg", "label": "meningioma", "group": "figshare-P2", "used": 1},
            {"file": "Tr-me_0003.jpg", "label": "meningioma", "group": "figshare-P2", "used": 0}]
    monkeypatch.setattr("core.training.refit_dense.write_stand_ins", lambda folder, part: rows)
    written = {"train": [["brain_mri_4class/train/glioma/Tr-gl_0001.jpg", "glioma", "figshare-P1"]],
               "val": [["brain_mri_4class/train/meningioma/Tr-me_0002.jpg", "meningioma", "figshare-P2"],
                       ["brain_mri_4class/train/meningioma/Tr-me_0003.jpg", "meningioma", "figshare-P2"]]}
    entries = stand_in_entries(written, tmp_path)
    assert entries["train"] == [[str(tmp_path / "healthy" / "Tr-gl_0001.png"), "notumor", "figshare-P1"],
                                [str(tmp_path / "tumour" / "Tr-gl_0001.png"), "glioma", "figshare-P1"]]
    assert entries["val"] == [[str(tmp_path / "healthy" / "Tr-me_0002.png"), "notumor", "figshare-P2"],
                              [str(tmp_path / "tumour" / "Tr-me_0002.png"), "meningioma", "figshare-P2"]]


def test_stand_ins_are_a_source_of_their_own():
    """Per-source validation rows keep the stand-ins apart from the figshare slices they were made from."""
    from core.training.sources import source_of

    stand_in = refit_dense.STAND_INS / "healthy" / "Tr-gl_0001.png"
    assert source_of(str(stand_in), "figshare-P1") == "figshare-mirrored"
    assert source_of("brain_mri_4class/train/glioma/Tr-gl_0001.jpg", "figshare-P1") == "figshare"


def test_mirror_features_are_computed_once_then_read_from_the_cache(tmp_path, tiny_models):
    import keras
    from PIL import Image

    from core.training.refit_dense import mirror_features

    paths = []
    for i in range(3):
        picture = np.zeros((40, 40), np.uint8)
        picture[5:20, 5 + 5 * i:20 + 5 * i] = 255  # off-centre: the mirror image differs
        Image.fromarray(picture).save(tmp_path / f"{i}.png")
        paths.append([str(tmp_path / f"{i}.png"), "clear", f"g{i}"])
    image = keras.Input((None, None, 3))
    model = keras.Model(image, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3, name="c")(image)))
    cache = tmp_path / "cache" / "train_x"
    plain, mirrored = mirror_features(lambda: model, tiny_models / "tiny-mr-classifier", paths, cache, np.float16)
    assert plain.shape == mirrored.shape == (3, 2) and plain.dtype == np.float16
    assert sorted(p.name for p in cache.parent.iterdir()) == ["train_x_mirrored.npy", "train_x_plain.npy"]

    def never():
        raise AssertionError("cached: no model needed")

    again = mirror_features(never, tiny_models / "tiny-mr-classifier", paths, cache)
    np.testing.assert_array_equal(again[0], plain)
    np.testing.assert_array_equal(again[1], mirrored)
