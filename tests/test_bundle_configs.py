"""Bundle recipes as data: one JSON file per bundle, checked when read."""

from __future__ import annotations

import json

import pytest

from core.models.preprocessing import PreprocessSpec
from core.training.configs import CONFIG_DIR, CONFIGS, load_config


def test_every_recipe_file_is_a_config_named_after_its_bundle():
    files = sorted(CONFIG_DIR.glob("*.json"))
    assert files and {f.stem for f in files} == set(CONFIGS)
    for f in files:
        config = CONFIGS[f.stem]
        assert config.id == f.stem and isinstance(config.spec, PreprocessSpec) and config.about
    # a segmenter beside its classifier sees images the same way (the split_like bundle's preprocessing)
    assert CONFIGS["brain-mri-tumor-seg"].spec == CONFIGS["brain-mri-tumor-4class"].spec
    assert CONFIGS["breast-histology-2class"].tiling.microns_per_pixel == 0.5


def test_unknown_fields_and_missing_ones_are_refused(tmp_path):
    data = json.loads((CONFIG_DIR / "brain-mri-tumor-seg.json").read_text())
    bad = tmp_path / "typo.json"
    bad.write_text(json.dumps({**data, "epochs_heads": 3}))
    with pytest.raises(ValueError, match="unknown config field.*epochs_heads"):
        load_config(bad)
    del data["reader"]
    bad.write_text(json.dumps(data))
    with pytest.raises(TypeError, match="reader"):
        load_config(bad)
    data["reader"] = "brain_mri_masked"
    data["zoom_out"] = [1, 3]
    bad.write_text(json.dumps(data))
    assert load_config(bad).zoom_out == (1, 3)


def test_a_refitted_classifier_lends_the_backbone_file_of_the_network_it_kept(tmp_path, tiny_models, monkeypatch):
    """After a last-layer refit the network below the Dense is its starting version's: a bundle built on it gets
    that version's backbone file (shipped in models/backbones), not a second copy under the new version's name."""
    import dataclasses
    import shutil

    from core.training import configs

    folder = tmp_path / "models" / "tiny-mr-classifier"
    shutil.copytree(tiny_models / "tiny-mr-classifier", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    origin = {"version": "0.0.1", "weights_sha256": "ab12cd34" + "0" * 56}
    manifest.update(version="0.0.2", training={"refit_dense": {"what": "a refit"}, "network_of": origin})
    (folder / "manifest.json").write_text(json.dumps(manifest))
    shipped = tmp_path / "models" / "backbones" / "xception-tiny-mr-classifier-0.0.1-ab12cd34.keras"
    shipped.parent.mkdir()
    shipped.write_bytes(b"the shipped backbone")
    monkeypatch.setattr(configs, "REPO", tmp_path)
    config = dataclasses.replace(configs.CONFIGS["brain-mri-tumor-seg"], weights="bundle:tiny-mr-classifier")
    assert configs.network_origin(folder) == ("0.0.1", origin["weights_sha256"])
    assert config.backbone_path == shipped
