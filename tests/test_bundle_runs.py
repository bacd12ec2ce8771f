"""Bundles that cannot run as their manifest says, on tiny real models: one damaged bundle is reported for that model
while the others' results stand (command line, batch, window), a manifest whose classes are not the network's outputs
is refused, an ONNX export cut short is never trusted and one that does not load is a ModelError, and the shared stem
file is written whole and again where it is damaged or another backbone's (each test failed before its fix)."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from core.cli import main
from core.errors import ModelError
from core.imaging import load_image
from core.inference.analyzer import Analyzer
from core.models.exports import export_roots, find_export
from core.models.registry import Registry

pytestmark = pytest.mark.slow
CLASSIFIER = "tiny-mr-classifier"
DAMAGED = "tiny-mr-damaged"


def _copy(source: Path, root: Path, bundle_id: str, **changes) -> Path:
    """The bundle in ``source`` copied to ``root / bundle_id`` as that id, its manifest changed by ``changes``."""
    folder = root / bundle_id
    shutil.copytree(source, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(id=bundle_id, **changes)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture
def with_damaged(tiny_models, tmp_path):
    """The tiny MR classifier and a copy of it whose weights were cut short (a damaged download)."""
    root = tmp_path / "models"
    shutil.copytree(tiny_models / CLASSIFIER, root / CLASSIFIER)
    weights = _copy(tiny_models / CLASSIFIER, root, DAMAGED) / "model.keras"
    weights.write_bytes(weights.read_bytes()[:1000])
    return root


def test_a_damaged_bundle_is_reported_for_its_model_and_the_others_results_stand(with_damaged, planted_png, tmp_path,
                                                                                  monkeypatch, capsys):
    monkeypatch.setenv("MIDA_USER_MODELS", str(with_damaged))
    monkeypatch.setenv("MIDA_HOME", str(tmp_path / "home"))
    argv = ["analyze", str(planted_png[0]), "--model", DAMAGED, "--model", CLASSIFIER, "--no-history"]
    assert main(argv + ["--json"]) == 2
    said = json.loads(capsys.readouterr().out)
    assert [(r["model"], r["label"]) for r in said["results"]] == [(CLASSIFIER, "lesion")]
    assert [f["model"] for f in said["failures"]] == [DAMAGED]
    assert "model.keras does not match its manifest" in said["failures"][0]["error"]
    assert said["error"] == f"{DAMAGED} did not run: {said['failures'][0]['error']}"
    assert main(argv) == 2
    printed = capsys.readouterr().out
    assert f"{CLASSIFIER} [CPU]: lesion" in printed and f"error: {DAMAGED} did not run: model '{DAMAGED}'" in printed
    # Batch: the damaged model's own row with its error; the other model's row and label stand.
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(planted_png[0], images / "planted.png")
    from core.batch.runner import BatchRun

    analyzer = Analyzer(Registry([with_damaged]))
    summary = BatchRun(images, tmp_path / "out", analyzer=analyzer, model_ids=[DAMAGED, CLASSIFIER]).run()
    with (tmp_path / "out" / "results.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["model"], r["model_version"], r["label"]) for r in rows] == [(CLASSIFIER, "0.0.1", "lesion"),
                                                                           (DAMAGED, "0.0.1", "")]
    assert not rows[0]["error"] and "does not match its manifest" in rows[1]["error"]
    assert summary["errors"] == 1 and summary["labels_by_model"] == {CLASSIFIER: {"lesion": 1}}
    record = load_image(planted_png[0], modality="MR")
    with pytest.raises(ModelError, match="does not match its manifest"):  # none ran: nothing to report but that
        analyzer.analyze(record, model_ids=[DAMAGED])
    # A series: the damaged model is said once and has no verdict; the other model's verdict stands.
    from core.series.analysis import analyse_series
    from core.series.index import index_folder
    from tests.series_data import write_series
    from tests.tiny_models import planted_images

    write_series(tmp_path / "series", list(planted_images(3)[0]))
    (series,) = index_folder(tmp_path / "series").series
    result = analyse_series(series, analyzer, model_ids=[CLASSIFIER, DAMAGED])
    assert [v.model for v in result.results] == [CLASSIFIER] and all(o is not None for o in result.results[0].slices)
    failures = [w for w in result.warnings if "did not run" in w]
    assert len(failures) == 1 and failures[0].startswith(f"{DAMAGED} did not run: ")


def test_the_window_warns_of_a_model_that_did_not_run_and_lists_bundles_skipped(qtbot, with_damaged, planted_png,
                                                                              tmp_path):
    pytest.importorskip("pytestqt")
    from tests.conftest import open_window

    (with_damaged / "unfinished").mkdir()
    (with_damaged / "unfinished" / "manifest.json").write_text("{")
    window = open_window(qtbot, with_damaged, tmp_path)
    window.open_path(planted_png[0])
    qtbot.waitUntil(lambda: window.state.record is not None and not window.is_busy, timeout=20000)
    window.modality_box.setCurrentIndex(1)  # Brain MRI: both classifiers
    window._modality_chosen()
    window.analyse()
    qtbot.waitUntil(lambda: window.state.analysis is not None and not window.is_busy, timeout=60000)
    assert (CLASSIFIER, "lesion") in window.probabilities.bars
    warnings = [window.warnings.item(i).text() for i in range(window.warnings.count())]
    assert any(w.startswith(f"⚠ {DAMAGED} did not run: ") for w in warnings), warnings
    assert "unfinished: " in window.model_info.toPlainText()


def test_classes_that_are_not_the_networks_outputs_are_refused(tiny_models, planted_png, tmp_path):
    from tests.tiny_models import _write_bundle

    root = tmp_path / "models"
    _copy(tiny_models / CLASSIFIER, root, "tiny-five", classes=["a", "b", "c", "d", "e"])
    _copy(tiny_models / CLASSIFIER, root, "tiny-one", classes=["only"])
    import keras

    from core.models.preprocessing import PreprocessSpec

    image = keras.Input((None, None, 3))
    two_maps = keras.Model(image, keras.layers.Conv2D(2, 1, activation="sigmoid")(image))
    _write_bundle(root / "tiny-two-maps", two_maps, PreprocessSpec(size=64, color="grey3", crop="none", scale="unit"),
                  "MR", "segmentation", classes=["lesion"])
    analyzer = Analyzer(Registry([root]))
    record = load_image(planted_png[0], modality="MR")
    for bundle_id, said in (("tiny-five", "its manifest lists 5 classes (a, b, c, d, e), but its network outputs 2"),
                            ("tiny-one", "its manifest lists 1 class (only), but its network outputs 2"),
                            ("tiny-two-maps", "a segmenter's network outputs one lesion probability map, this one outputs 2")):
        with pytest.raises(ModelError, match=rf"^model '{bundle_id}': {re.escape(said)}"):
            analyzer.analyze(record, model_ids=[bundle_id], target_class="e" if bundle_id == "tiny-five" else None)


def test_an_export_cut_short_is_not_used_and_one_that_does_not_load_is_a_model_error(tiny_models, planted_png,
                                                                                     tmp_path, monkeypatch):
    import onnx

    from core.inference.onnx_export import export_bundle

    cache = tmp_path / "onnx"
    monkeypatch.setenv("MIDA_ONNX_CACHE", str(cache))
    registry = Registry([tiny_models])
    bundle = registry.get(CLASSIFIER)
    roots = export_roots(registry.folders)
    export_bundle(bundle, cache)
    rest = find_export(bundle, roots).rest
    whole = rest.read_bytes()
    rest.write_bytes(whole[: len(whole) // 2])  # an export killed while it wrote (the index written before)
    assert find_export(bundle, roots) is None
    rest.write_bytes(b"\0" * len(whole))  # damaged at its own size: its sha256 tells
    assert find_export(bundle, roots) is None
    record = load_image(planted_png[0], modality="MR")
    index = rest.parent / "index.json"  # an index that vouches for the damaged bytes: ONNX Runtime cannot load them
    written = index.read_text()
    index.write_text(written.replace(json.loads(written)["rest"]["sha256"], hashlib.sha256(rest.read_bytes()).hexdigest()))
    with pytest.raises(ModelError, match=rf"exported network {re.escape(str(rest))} could not be loaded"):
        Analyzer(registry, runtime="onnx").analyze(record, model_ids=[CLASSIFIER])
    index.write_text(written)
    rest.write_bytes(whole)
    bundle.manifest["classes"] = ["a", "b", "c"]  # the export's network gives 2 logits
    with pytest.raises(ModelError, match="lists 3 classes"):
        Analyzer(registry, runtime="onnx").analyze(record, model_ids=[CLASSIFIER])
    bundle.manifest["classes"] = ["clear", "lesion"]
    # Written under a temporary name: an export that stops while it writes leaves no file an index could name.
    shutil.rmtree(cache)

    def interrupted(model, path, *args, **kwargs):
        Path(path).write_bytes(b"half a network")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx, "save", interrupted)
    with pytest.raises(OSError):
        export_bundle(bundle, cache)
    assert [p.name for p in cache.rglob("*") if p.is_file()] == []


def _edited_in_place(graph: Path) -> None:
    """``graph``'s largest weight changed where it lies in the file (the file keeps its size and still loads)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(graph))
    tensor = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    values = numpy_helper.to_array(tensor)
    tensor.CopyFrom(numpy_helper.from_array((values * -1).astype(values.dtype), tensor.name))
    size = graph.stat().st_size
    onnx.save(model, str(graph))
    assert graph.stat().st_size == size


def test_an_export_edited_in_place_or_a_bundle_whose_weights_changed_since_is_not_run(tiny_models, planted_png,
                                                                                     tmp_path, monkeypatch, capsys):
    """Each file's sha256 in the index is checked when an export is looked for and again when ONNX Runtime opens
    it, and the bundle's own files when its export runs (both had run a network no manifest describes: only sizes
    were compared, the bundle not at all)."""
    from core.inference.onnx_export import export_bundle
    from core.inference.onnx_network import OnnxModel

    cache = tmp_path / "onnx"
    monkeypatch.setenv("MIDA_ONNX_CACHE", str(cache))
    root = tmp_path / "models"
    shutil.copytree(tiny_models / CLASSIFIER, root / CLASSIFIER)
    registry = Registry([root])
    bundle = registry.get(CLASSIFIER)
    export_bundle(bundle, cache)
    record = load_image(planted_png[0], modality="MR")
    before = Analyzer(registry, runtime="onnx").analyze(record, model_ids=[CLASSIFIER]).results[0].probabilities
    export = find_export(bundle, export_roots(registry.folders))
    graphs = [export.rest, *(cam.file for cam in export.cams.values())]
    for graph in graphs:
        whole = graph.read_bytes()
        _edited_in_place(graph)  # changed after the export was found: refused when its session opens
        with pytest.raises(ModelError, match=rf"{re.escape(str(graph))} was changed after it was exported"):
            OnnxModel(graph, export.hashes[graph]).input_names
        assert find_export(bundle, export_roots(registry.folders)) is None  # and no export for the next analysis
        graph.write_bytes(whole)
    assert Analyzer(registry, runtime="onnx").analyze(record, model_ids=[CLASSIFIER]).results[0].probabilities == before
    _edited_in_place(export.rest)  # what the refusal advises mends it: 'models export' had said 'exported already'
    monkeypatch.setenv("MIDA_USER_MODELS", str(root))
    assert main(["models", "export", "--model", CLASSIFIER]) == 0
    assert "exported already" not in capsys.readouterr().out
    assert find_export(bundle, export_roots(registry.folders)) is not None
    assert Analyzer(registry, runtime="onnx").analyze(record, model_ids=[CLASSIFIER]).results[0].probabilities == before

    weights = root / CLASSIFIER / "model.keras"  # replaced after the export; the manifest still names the old one
    weights.write_bytes(weights.read_bytes()[:-1] + b"x")
    with pytest.raises(ModelError, match="model.keras does not match its manifest"):
        Analyzer(registry, runtime="onnx").analyze(record, model_ids=[CLASSIFIER])
    weights.unlink()  # not there at all (the frozen app ships exports without the Keras files): the export runs
    assert Analyzer(registry, runtime="onnx").analyze(record, model_ids=[CLASSIFIER]).results[0].probabilities == before


def _stem_bundle(root: Path) -> Path:
    """A classifier on a frozen trunk file of its own, cut at its Grad-CAM layer: its export has a stem file, as the
    shipped Xception bundles' have."""
    import keras

    from core.models.preprocessing import PreprocessSpec
    from tests.tiny_models import _write_bundle

    keras.utils.set_random_seed(0)
    features = keras.Input((None, None, 4))
    conv = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="last_conv")(features)
    head = keras.Model(features, keras.layers.Dense(2, name="logits")(keras.layers.GlobalAveragePooling2D()(conv)))
    folder = _write_bundle(root / "tiny-stem", head, PreprocessSpec(size=64, color="grey3", crop="none"), "MR",
                           "classification", classes=["clear", "lesion"], gradcam_layer="last_conv")
    _new_trunk(folder, seed=0)
    return folder


def _new_trunk(folder: Path, seed: int) -> None:
    """``folder``'s bundle on a trunk of other weights (a backbone replaced; its head file unchanged)."""
    import keras

    from core.models.storage import save_keras_fp16

    keras.utils.set_random_seed(seed)
    image = keras.Input((None, None, 3))
    trunk = keras.Model(image, keras.layers.Conv2D(4, 3, padding="same", activation="relu")(image), name="trunk")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["architecture"] = {"trunk_file": "trunk.keras", "trunk_sha256": save_keras_fp16(trunk, folder / "trunk.keras")}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_the_stem_file_is_written_again_where_it_is_cut_short_or_of_another_trunk(tmp_path):
    from core.inference.onnx_export import export_bundle

    root, cache = tmp_path / "models", tmp_path / "onnx"
    folder = _stem_bundle(root)
    first = export_bundle(Registry([root]).get("tiny-stem"), cache)
    stem = cache / first["stem"]["file"]
    whole = stem.read_bytes()
    stem.write_bytes(whole[: len(whole) // 2])  # an export killed while it wrote the stem (older versions)
    again = export_bundle(Registry([root]).get("tiny-stem"), cache)
    assert again["stem"]["file"] == first["stem"]["file"] and again["stem"]["size"] == stem.stat().st_size > len(whole) / 2
    assert find_export(Registry([root]).get("tiny-stem"), [cache]) is not None
    _new_trunk(folder, seed=1)
    bundle = Registry([root]).get("tiny-stem")
    other = export_bundle(bundle, cache)  # the old trunk's stem would differ from TensorFlow: refused
    assert other["stem"]["file"] != first["stem"]["file"] and other["check"]["stem_max_rel_diff"] < 1e-2
    assert sorted(p.name for p in (cache / "stems").iterdir()) == sorted(Path(i["stem"]["file"]).name
                                                                      for i in (first, other))
    assert find_export(bundle, [cache]).stem == cache / other["stem"]["file"]


def test_models_that_stop_running_part_way_through_a_series_are_said_and_nothing_is_raised():
    """Model A fails from slice 3 on, model B from slice 5: the whole series analysis had raised at slice 5."""
    from concurrent.futures import Future
    from types import SimpleNamespace as NS

    from core.inference.results import Analysis, ModelFailure
    from core.inference.results import ModelResult as Result
    from core.series.analysis import analyse_series
    from core.series.index import Series, SliceRef

    series = Series("k", "1.2.3", "dicom", slices=[SliceRef(f"s{i}.dcm", position_mm=3.0 * i) for i in range(8)],
                    spacing_mm=3.0, spacing_source="positions")
    bundles = {m: NS(id=m, version="1", task="classification", classes=["no", "yes"]) for m in ("a", "b")}
    fails_from = {"a": 2, "b": 4}

    class Stub:
        registry = NS(get=bundles.get)

        def bundles_for(self, record, ids=None):
            return list(bundles.values())

        def analyze(self, record, frame=0, model_ids=None, **_):
            analysis = Analysis("x", "MR", "dicom", 0)
            for m in model_ids:
                if record.i >= fails_from[m]:
                    analysis.failures.append(ModelFailure(m, "1", "classification", f"model '{m}': cannot load"))
                else:
                    analysis.results.append(Result(m, "1", "classification", "cpu", ["no", "yes"],
                                                   {"no": 0.9, "yes": 0.1}, "no"))
            if analysis.failures and not analysis.results:
                raise ModelError("; ".join(f.error for f in analysis.failures))
            return analysis

    class Engine:
        analyzer = Stub()

        def call(self, fn, *args, **kwargs):
            done = Future()
            done.set_result(fn(*args, **kwargs))
            return done

    stack = NS(record=lambda i: (NS(i=i, modality=NS(value="MR", label="MR")), 0))
    result = analyse_series(series, Engine(), stack=stack)
    assert result.results == [] and result.failures == ["a did not run: model 'a': cannot load",
                                                        "b did not run: model 'b': cannot load"]
    assert result.error == "; ".join(result.failures) and all(f in result.warnings for f in result.failures)
