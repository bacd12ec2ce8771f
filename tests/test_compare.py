"""The paired comparison that decides whether a retrained classifier replaces the shipped one."""

import numpy as np
import pytest

from core.training.compare import metrics_for, paired_differences

CLASSES = ["benign", "malignant", "normal"]


def _calls(y: np.ndarray, right: np.ndarray, confidence: float = 0.8) -> np.ndarray:
    """Probabilities that put ``confidence`` on the true class where ``right``, else on the next class."""
    picked = np.where(right, y, (y + 1) % 3)
    p = np.full((len(y), 3), (1 - confidence) / 2)
    p[np.arange(len(y)), picked] = confidence
    return p


def test_metrics_follow_the_classes():
    assert set(metrics_for(CLASSES)) == {"accuracy", "log_loss", "finding_vs_none_auc", "malignant_vs_benign_auc"}
    assert set(metrics_for(["glioma", "meningioma", "notumor", "pituitary"])) == {
        "accuracy", "log_loss", "finding_vs_none_auc"}
    assert set(metrics_for(["benign", "malignant"])) == {"accuracy", "log_loss", "malignant_vs_benign_auc"}


def test_a_clearly_better_model_has_an_interval_above_zero():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 400)
    groups = [f"p{i // 2}" for i in range(400)]  # two images per patient
    old = _calls(y, rng.random(400) < 0.70)
    new = _calls(y, rng.random(400) < 0.95)
    out = paired_differences(new, old, y, groups, metrics_for(CLASSES), rounds=300)
    low, high = out["accuracy"]["interval"]
    assert out["accuracy"]["diff"] == pytest.approx(out["accuracy"]["new"] - out["accuracy"]["old"])
    assert 0 < low < out["accuracy"]["diff"] < high
    assert out["log_loss"]["interval"][1] < 0  # fewer confident mistakes: lower log-loss


def test_images_without_a_group_are_resampled_one_by_one():
    """Ungrouped images (the Kaggle set's non-figshare slices) are not one patient: their interval has a width."""
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 200)
    old, new = _calls(y, rng.random(200) < 0.7), _calls(y, rng.random(200) < 0.9)
    out = paired_differences(new, old, y, [""] * 200, metrics_for(CLASSES), rounds=300)
    low, high = out["accuracy"]["interval"]
    assert low < out["accuracy"]["diff"] < high and high - low > 0.05


def test_the_same_model_differs_by_nothing_and_small_changes_stay_inside():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 200)
    groups = [f"p{i}" for i in range(200)]
    old = _calls(y, rng.random(200) < 0.8)
    same = paired_differences(old, old, y, groups, metrics_for(CLASSES), rounds=200)
    assert all(m["diff"] == 0 and m["interval"] == [0.0, 0.0] for m in same.values())
    nudged = old.copy()
    flip = np.flatnonzero(old.argmax(1) != y)[:2]  # two more right calls out of 200
    nudged[flip] = _calls(y[flip], np.ones(2, bool))
    small = paired_differences(nudged, old, y, groups, metrics_for(CLASSES), rounds=300)
    low, high = small["accuracy"]["interval"]
    assert small["accuracy"]["diff"] == pytest.approx(0.01)
    assert low <= 0 < high  # two images out of 200 are not an improvement one can claim


def _segmenter_pair(tmp_path, tiny_models, monkeypatch):
    """The tiny segmenter twice: 'old' at a threshold that also marks mid-grey patches (false lesions), 'new' as
    written; validated on 3 slices with a bright outlined square and 3 lesion-free slices with a grey patch."""
    import dataclasses
    import json
    import shutil

    from PIL import Image

    from core.training import configs
    from core.training.plan import split_entries

    entries = []
    for i in range(6):
        picture, mask = np.zeros((48, 48), np.uint8), np.zeros((48, 48), np.uint8)
        lesion = i < 3
        picture[10 + i:26 + i, 12:28] = 255 if lesion else 90
        mask[10 + i:26 + i, 12:28] = 255 if lesion else 0
        Image.fromarray(picture).save(tmp_path / f"s{i}.png")
        Image.fromarray(mask).save(tmp_path / f"s{i}_mask.png")
        entries.append({"path": str(tmp_path / f"s{i}.png"), "label": "lesion" if lesion else "clear",
                        "group": f"p{i}", "mask": str(tmp_path / f"s{i}_mask.png"), "circles": []})
    plan = {"train": [], "val": entries}
    folders = {}
    for name in ("old", "new"):
        folders[name] = tmp_path / name / "tiny-mr-segmenter"
        shutil.copytree(tiny_models / "tiny-us-segmenter", folders[name])
        manifest = json.loads((folders[name] / "manifest.json").read_text())
        manifest.update(id="tiny-mr-segmenter", decision_threshold=0.001 if name == "old" else 0.5)
        (folders[name] / "manifest.json").write_text(json.dumps(manifest))
    (folders["new"] / "split.json").write_text(json.dumps(split_entries(plan)))
    (folders["old"] / "split.json").write_text(json.dumps({"train": [["elsewhere.png", "clear", "q"]], "val": []}))
    monkeypatch.setattr(configs, "CACHE_ROOT", tmp_path / "cache")
    config = dataclasses.replace(configs.CONFIGS["brain-mri-tumor-seg"], id="tiny-mr-segmenter")
    monkeypatch.setitem(configs.CONFIGS, "tiny-mr-segmenter", config)
    config.cache_dir.mkdir(parents=True)
    (config.cache_dir / "split.json").write_text(json.dumps(plan))  # the plan as training cached it, masks and all
    return folders


def test_segmenters_are_compared_on_dice_and_false_lesions(tmp_path, tiny_models, monkeypatch):
    import json

    from core.training.compare import compare_segmenters

    folders = _segmenter_pair(tmp_path, tiny_models, monkeypatch)
    out = compare_segmenters(folders["old"], folders["new"], rounds=100)["all"]
    assert out["false_lesion_rate"]["old"] == 1.0 and out["false_lesion_rate"]["new"] == 0.0
    assert out["false_lesion_rate"]["interval"] == [-1.0, -1.0]
    assert out["dice_lesion"]["new"] > 0.9 and out["dice_lesion"]["old"] > 0.9

    split = json.loads((folders["old"] / "split.json").read_text())
    split["train"].append([str(tmp_path / "s4.png"), "clear", "p4"])  # the old one trained on a validation image
    (folders["old"] / "split.json").write_text(json.dumps(split))
    with pytest.raises(ValueError, match="1 of the new validation images trained the old bundle"):
        compare_segmenters(folders["old"], folders["new"], rounds=10)
    (tmp_path / "cache" / "tiny-mr-segmenter" / "split.json").unlink()
    with pytest.raises(ValueError, match="its masks are not known"):
        compare_segmenters(folders["old"], folders["new"], rounds=10)
    assert not (tmp_path / "cache" / "tiny-mr-segmenter" / "split.json").exists()  # never split afresh here
