"""The DICOM objects this program writes are valid and read back, by highdicom and by this program: a SEG of an
image loaded downsampled, a SEG of a multi-frame image reopened on its frame, a SEG of an image without a frame of
reference, one UID per instance, the attributes an IOD requires kept (empty) when de-identified, de-identified file
names, and each output's failure said beside the results (each case found by driving the exports; each test failed
before its fix)."""

from __future__ import annotations

import json
import shutil

import highdicom as hd
import numpy as np
import pydicom

from core.export.dicom_export import export_overlay_sc, export_seg, source_dataset
from core.export.structured_report import export_sr
from core.imaging import load_image
from core.inference.results import Analysis, ModelResult
from core.series.segmentation_file import open_segmentation
from tests.conftest import bright_block_ultrasound

PATIENT, MRN = "Doe^Jane", "MRN-4471"


def _ultrasound(path, pydicom_file, frame_of_reference: bool = True):
    """MR_small's header as a 64x64 ultrasound picture with a bright block, identified, its scan area stated."""
    ds = bright_block_ultrasound(pydicom_file)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.UltrasoundImageStorage
    ds.PatientName, ds.PatientID = PATIENT, MRN
    if not frame_of_reference:  # as a scanner's screen capture: a picture with no patient geometry
        del ds.FrameOfReferenceUID, ds.ImagePositionPatient, ds.ImageOrientationPatient
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)
    return path


def _segmentation(record, rows=slice(8, 14), columns=slice(6, 15)) -> ModelResult:
    mask = np.zeros((record.rows, record.columns), np.uint8)
    mask[rows, columns] = 1
    return ModelResult("tiny-us-segmenter", "1.0", "segmentation", "cpu", mask=mask)


def test_a_seg_of_an_image_loaded_downsampled_has_the_files_matrix(pydicom_file, tmp_path, monkeypatch):
    """The mask of an image read at half its size was handed to highdicom at that size: ValueError, no SEG."""
    monkeypatch.setattr("core.imaging.dicom.downsample_factor", lambda rows, columns: 2)
    image = _ultrasound(tmp_path / "study" / "image.dcm", pydicom_file)
    record = load_image(image)
    assert record.downsample == 2 and (record.rows, record.columns) == (32, 32)
    result = _segmentation(record)
    seg_path = export_seg(record, result, tmp_path / "study" / "seg.dcm", anonymise=False)
    seg = hd.seg.segread(seg_path)
    assert (seg.Rows, seg.Columns) == (64, 64)
    stored = np.asarray(seg.pixel_array).reshape(64, 64)
    np.testing.assert_array_equal(stored, np.kron(result.mask, np.ones((2, 2), np.uint8)))  # nearest neighbour
    _, analysis = open_segmentation(seg_path)  # reopened at the size the image is loaded at
    np.testing.assert_array_equal(analysis.results[0].mask, result.mask)


def _enhanced_mr(folder, planted_series):
    """The planted series as one enhanced (legacy converted) multi-frame MR image, frames in slice order."""
    slices = [pydicom.dcmread(p) for p in sorted(planted_series.rglob("*.dcm"))]
    for ds in slices:
        ds.FrameOfReferenceUID = slices[0].FrameOfReferenceUID  # one volume
    enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(slices, series_instance_uid=hd.UID(), series_number=5,
                                                        sop_instance_uid=hd.UID(), instance_number=1)
    folder.mkdir(parents=True, exist_ok=True)
    enhanced.save_as(folder / "enhanced.dcm")
    return folder / "enhanced.dcm"


def test_a_seg_of_a_multi_frame_image_reopens_on_the_frame_it_segments(planted_series, tmp_path):
    """Every source frame is in the SEG (the others empty); reopening showed the first one, empty."""
    image = _enhanced_mr(tmp_path / "study", planted_series)
    record = load_image(image)
    assert record.frames == 10
    result = _segmentation(record, slice(20, 30), slice(25, 40))
    seg_path = export_seg(record, result, tmp_path / "study" / "seg.dcm", frame=6, anonymise=False)
    shown, analysis = open_segmentation(seg_path)
    assert shown.path == image and analysis.frame == 6
    np.testing.assert_array_equal(analysis.results[0].mask, result.mask)
    empty = ModelResult("tiny-us-segmenter", "1.0", "segmentation", "cpu", mask=np.zeros_like(result.mask))
    seg_path = export_seg(record, empty, tmp_path / "study" / "empty.dcm", frame=4, anonymise=False)
    assert open_segmentation(seg_path)[1].frame == 0  # nothing outlined anywhere: the first frame, as before


def test_a_seg_of_an_image_without_a_frame_of_reference_reads_back(pydicom_file, tmp_path):
    """A calibrated picture without a frame of reference: highdicom wrote a Pixel Measures Sequence holding only the
    pixel spacing, which its reader (and so this program) refused."""
    image = _ultrasound(tmp_path / "study" / "image.dcm", pydicom_file, frame_of_reference=False)
    record = load_image(image)
    result = _segmentation(record)
    seg_path = export_seg(record, result, tmp_path / "study" / "seg.dcm")
    hd.seg.segread(seg_path)
    _, analysis = open_segmentation(seg_path)
    np.testing.assert_array_equal(analysis.results[0].mask, result.mask)
    # such a SEG written before (or by another tool) opens too
    ds = pydicom.dcmread(seg_path)
    measures = pydicom.Dataset()
    measures.PixelSpacing = [0.5, 0.5]
    ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence = [measures]
    ds.save_as(seg_path)
    _, analysis = open_segmentation(seg_path)
    np.testing.assert_array_equal(analysis.results[0].mask, result.mask)


def _captures(record, frame: int, folder) -> tuple[dict, dict]:
    """(SOP Instance UID, Series Instance UID, Burned In Annotation) of the frame's identified capture, then of its
    anonymised one, each made twice."""
    said = {}
    for anonymise in (False, True, True):
        out = folder / ("anonymised" if anonymise else "identified")
        out.mkdir(parents=True, exist_ok=True)
        ds = source_dataset(record, frame, anonymise, out)
        (written,) = out.glob("*.dcm")
        held = (ds.SOPInstanceUID, ds.SeriesInstanceUID, pydicom.dcmread(written).get("BurnedInAnnotation"))
        assert said.setdefault(anonymise, held) == held  # the same instance from one export to the next
    return said[False], said[True]


def test_identified_and_anonymised_captures_of_a_frame_are_two_instances(deid_file, tmp_path):
    """A cine frame without text to black out had one capture UID whether identified or anonymised (PS3.5 9: one
    UID, one instance)."""
    ds = pydicom.dcmread(deid_file("ultrasounds/ultrasound-multiframe.dcm"))
    ds.Modality, ds.BurnedInAnnotation = "MG", "NO"  # nothing burned in: both captures hold the same pixels
    del ds.SequenceOfUltrasoundRegions
    ds.save_as(tmp_path / "cine.dcm")
    identified, anonymised = _captures(load_image(tmp_path / "cine.dcm"), 1, tmp_path)
    assert identified[0] != anonymised[0] and identified[1] != anonymised[1]
    assert identified[2] == anonymised[2] == "NO"  # as the source said


def test_a_capture_says_whether_text_is_burned_in(deid_file, tmp_path):
    """An ultrasound screen's capture carries its text (YES) unless anonymised, its text blacked out (NO)."""
    identified, anonymised = _captures(load_image(deid_file("ultrasounds/ultrasound-multiframe.dcm")), 2, tmp_path)
    assert (identified[2], anonymised[2]) == ("YES", "NO") and identified[0] != anonymised[0]


def test_an_overlay_capture_says_whether_text_is_burned_in(pydicom_file, tmp_path):
    image = _ultrasound(tmp_path / "image.dcm", pydicom_file)
    record = load_image(image)
    picture = np.dstack([record.display(0)] * 3) if record.display(0).ndim == 2 else record.display(0)
    for anonymise, said in ((False, "YES"), (True, "NO")):  # an ultrasound screen: its text blacked out when anonymised
        sc = export_overlay_sc(record, picture, tmp_path / f"sc_{anonymise}.dcm", anonymise=anonymise)
        assert pydicom.dcmread(sc).BurnedInAnnotation == said


def _required(iod: str) -> set[str]:
    """Top-level attributes of type 1 or 2 in the mandatory modules of ``iod`` (highdicom's copy of PS3.3)."""
    from importlib.resources import files

    standard = files("highdicom") / "_standard"
    modules = json.loads((standard / "iod_module_map.json").read_text())[iod]
    attributes = json.loads((standard / "module_attribute_map.json").read_text())
    return {a["keyword"] for m in modules if m["usage"] == "M" for a in attributes[m["key"]]
            if not a["path"] and a["type"] in ("1", "2")}


def test_de_identified_exports_keep_the_attributes_their_iod_requires(pydicom_file, tmp_path):
    """The anonymised SR lost Performed Procedure Code Sequence and Referenced Performed Procedure Step Sequence,
    type 2 in the SR IODs: present, empty where nothing may be said."""
    image = _ultrasound(tmp_path / "image.dcm", pydicom_file)
    record = load_image(image)
    segmentation = _segmentation(record)
    classifier = ModelResult("tiny-mr-classifier", "1.0", "classification", "cpu", ["a", "b"], {"a": 0.2, "b": 0.8},
                             "b")
    analysis = Analysis(str(record.path), "US", "header", 0, [classifier, segmentation])
    picture = np.dstack([record.display(0)] * 3)
    written = {}
    for anonymise in (False, True):
        out = tmp_path / ("anonymised" if anonymise else "identified")
        written[anonymise] = {
            "comprehensive-3d-sr": export_sr(record, analysis, out / "sr.dcm", anonymise=anonymise),
            "segmentation": export_seg(record, segmentation, out / "seg.dcm", anonymise=anonymise),
            "secondary-capture-image": export_overlay_sc(record, picture, out / "sc.dcm", anonymise=anonymise),
        }
    for iod, path in written[True].items():
        identified = {e.keyword for e in pydicom.dcmread(written[False][iod])}
        anonymised = {e.keyword for e in pydicom.dcmread(path)}
        assert sorted(_required(iod) & (identified - anonymised)) == [], iod
    sr = pydicom.dcmread(tmp_path / "anonymised" / "sr.dcm")
    assert sr.PerformedProcedureCodeSequence == [] and sr.ReferencedPerformedProcedureStepSequence == []


def test_a_long_list_of_models_is_named_whole_in_the_report(pydicom_file, tmp_path):
    """The Device Observer Model Name (a TEXT item, UT: no 64-character limit) was cut at 64 characters."""
    image = _ultrasound(tmp_path / "image.dcm", pydicom_file)
    record = load_image(image)
    names = [f"a-classifier-with-a-rather-long-name-{n}" for n in range(3)]
    results = [ModelResult(name, "1.0", "classification", "cpu", ["a", "b"], {"a": 0.4, "b": 0.6}, "b")
               for name in names]
    sr = pydicom.dcmread(export_sr(record, Analysis(str(record.path), "US", "header", 0, results), tmp_path / "sr.dcm"))

    def items(ds):
        for item in ds.get("ContentSequence", []):
            yield item
            yield from items(item)

    (model,) = [i for i in items(sr) if i.ConceptNameCodeSequence[0].CodeValue == "121015"]
    assert model.TextValue == ", ".join(names)


def test_batch_structured_reports_are_not_named_after_the_file(tmp_path, tiny_models, pydicom_file):
    """sr/DOE_JANE_mr.dcm-94c97fe06976.dcm: the de-identified report carried the patient's name in its file name."""
    from core.batch.runner import BatchRun
    from core.inference.analyzer import Analyzer
    from core.models.registry import Registry

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(pydicom_file("MR_small.dcm"), folder / "DOE_JANE_mr.dcm")
    out = tmp_path / "out"
    BatchRun(folder, out, Analyzer(Registry([tiny_models])), model_ids=["tiny-mr-classifier"], dicom_sr=True).run()
    (row,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    (written,) = (out / "sr").iterdir()
    assert row["sr_file"] == f"sr/{written.name}" and "DOE" not in written.name.upper() and "JANE" not in \
        written.name.upper() and "mr" not in written.stem
    assert hd.sr.srread(written).PatientIdentityRemoved == "YES"
    # the same name again for the same file: a run over the folder once more replaces it, not a second report
    BatchRun(folder, out, Analyzer(Registry([tiny_models])), model_ids=["tiny-mr-classifier"], dicom_sr=True,
             overwrite=True).run()
    assert [p.name for p in (out / "sr").iterdir()] == [written.name]


def test_an_output_that_cannot_be_written_is_said_beside_the_results(tiny_models, pydicom_file, tmp_path,
                                                                     monkeypatch, capsys):
    """A SEG that cannot be made of an image without a frame of reference made the command print only its error:
    the results and the SR that was written were lost."""
    from core.cli import main

    monkeypatch.setenv("MIDA_USER_MODELS", str(tiny_models))
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    del ds.FrameOfReferenceUID  # a SEG needs one, an SR does not
    ds.save_as(tmp_path / "no_for.dcm")
    seg, sr = tmp_path / "out.seg.dcm", tmp_path / "out.sr.dcm"
    code = main(["analyze", str(tmp_path / "no_for.dcm"), "--model", "tiny-us-segmenter", "--dicom-seg-out", str(seg),
                 "--dicom-sr-out", str(sr), "--json", "--no-history"])
    said = json.loads(capsys.readouterr().out)
    assert code == 2 and said["results"][0]["model"] == "tiny-us-segmenter"
    assert said["results"][0]["dicom_seg_error"].startswith("cannot write the DICOM SEG") and not seg.exists()
    assert said["dicom_sr_file"] == str(sr) and hd.sr.srread(sr).Modality == "SR"
    assert said["error"].startswith("cannot write the DICOM SEG")
    code = main(["analyze", str(tmp_path / "no_for.dcm"), "--model", "tiny-us-segmenter", "--dicom-seg-out", str(seg),
                 "--no-history"])
    text = capsys.readouterr().out
    assert code == 2 and "tiny-us-segmenter" in text and "cannot write the DICOM SEG" in text
