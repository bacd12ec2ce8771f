"""Every data set the bundles learnt from is routed to its own modality's models by the guesser.

A picture without a modality in its header goes to the models of the guessed modality. The guesser fitted before the
LGG FLAIR slices and the BUS-BRA scans were added sent 15 % of those slices to the ultrasound models and 10 % of
those scans to other models; refitted on every data set (``python -m core.training.fit_modality_guess``), it must
route images of each of them to their modality. Images evenly spaced through each data set, read as ``batch``
reads them."""

from __future__ import annotations

import pytest

from core.imaging import load_image
from core.training.datasets import bach_root

SETS = [  # (folder under ../shared/data or the BACH cache, file pattern, modality)
    ("brain_mri_lgg", "*/*_flair.jpg", "MR"),
    ("brain_mri_4class/train", "*/*.jpg", "MR"),
    ("busbra", "*/bus_*[lrs].jpg", "US"),
    ("busi", "*/*).png", "US"),
    ("mini_mias/images", "*.png", "MG"),
    ("histology_ucsb", "*/*.jpg", "SM"),
    ("bach", "*_jpg/*.jpeg", "SM"),
]


@pytest.mark.parametrize("folder, pattern, modality", SETS, ids=[s[0] for s in SETS])
def test_each_data_set_is_routed_to_its_modality(shared, folder, pattern, modality):
    root = bach_root() if folder == "bach" else shared / folder
    files = sorted(root.glob(pattern))
    if not files:
        pytest.skip(f"{root} holds no {pattern}")
    picks = files[:: max(1, len(files) // 40)][:40]
    wrong = [(p.name, r.modality.value) for p in picks if (r := load_image(p)).modality.value != modality]
    assert not wrong, f"{len(wrong)} of {len(picks)} routed elsewhere: {wrong[:5]}"


def test_an_ultrasound_screen_capture_without_a_header_is_routed_to_ultrasound(shared, deid_file, tmp_path):
    """A department's ultrasound export is often the scanner's whole screen (patient bar, panel, depth scale, black
    around the picture), saved as a PNG or an untyped secondary capture. The guesser fitted on cut pictures only took
    the drawn screens of 91 of 150 BUS-BRA and BUSI pictures for something else (71 for brain MRI), and the real
    breast-preset screen whose layout the drawing copies (deid-data's greyscale capture) for brain MRI."""
    import zlib

    import cv2
    import numpy as np

    from core.models.preprocessing import as_grey
    from core.training.us_screens import scanner_screen

    files = (sorted((shared / "busbra").glob("*/bus_*[lrs].jpg"))[::100][:6]
             + sorted((shared / "busi").glob("*/*).png"))[::100][:6])
    if not files:
        pytest.skip("no BUS-BRA or BUSI pictures")
    real = load_image(deid_file("ultrasounds/GREYSCALE_IMAGE.dcm")).display(0)
    pictures = [("GREYSCALE_IMAGE.png", real)]
    for p in files:
        rng = np.random.default_rng(zlib.crc32(p.name.encode()) + 1)  # another screen than the guesser was fitted on
        pictures.append((p.name, scanner_screen(as_grey(load_image(p).display(0)), rng)[0]))
    wrong = []
    for name, picture in pictures:
        cv2.imwrite(str(tmp_path / name.replace(".jpg", ".png")), picture if picture.ndim == 2 else picture[..., ::-1])
        record = load_image(tmp_path / name.replace(".jpg", ".png"))
        if record.modality.value != "US":
            wrong.append((name, record.modality.value, record.modality_confidence))
    assert not wrong, wrong


@pytest.mark.parametrize("folder, pattern, modality", SETS, ids=[s[0] for s in SETS])
def test_a_picture_set_in_black_is_routed_to_its_modality(shared, folder, pattern, modality, tmp_path):
    """A slide's letterbox or an export padded to a screen's shape: the guesser fitted on whole pictures took 29 of 60
    BUSI scans beside black of their own width for mammograms or MRI, 10 at p >= 0.95 (no 'unsure' warning). Bands
    and letterboxes unlike the fitted ones (core.training.fit_modality_guess.framed draws 30-100 % bands)."""
    import cv2
    import numpy as np

    root = bach_root() if folder == "bach" else shared / folder
    files = sorted(root.glob(pattern))
    if not files:
        pytest.skip(f"{root} holds no {pattern}")
    wrong = []
    for k, p in enumerate(files[7:: max(1, len(files) // 12)][:12]):
        picture = load_image(p).display(0)
        h, w = picture.shape[:2]
        if k % 2:  # black of 1.2 times its width on one side
            pad = [(0, 0), (round(1.2 * w), 0) if k % 4 == 1 else (0, round(1.2 * w))] + [(0, 0)] * (picture.ndim - 2)
        else:  # letterboxed into 2:1
            height = max(h, w // 2)
            pad = [((height - h) // 2, height - h - (height - h) // 2), ((2 * height - w) // 2, 2 * height - w -
                                                                          (2 * height - w) // 2)] + [(0, 0)] * (picture.ndim - 2)
        framed = np.pad(picture, [(a, max(b, 0)) for a, b in pad])
        cv2.imwrite(str(tmp_path / f"{k}.png"), framed if framed.ndim == 2 else framed[..., ::-1])
        record = load_image(tmp_path / f"{k}.png")
        if record.modality.value != modality:
            wrong.append((p.name, record.modality.value, record.modality_confidence))
    assert not wrong, wrong


def test_the_guessers_content_features_do_not_see_black_around_a_picture():
    import numpy as np

    from core.imaging.modality_guess import content, modality_features

    rng = np.random.default_rng(0)
    picture = rng.integers(20, 255, (60, 80), dtype=np.uint8)
    padded = np.pad(picture, [(10, 30), (50, 0)])
    np.testing.assert_array_equal(content(padded), picture)
    half = modality_features(picture).size // 2
    np.testing.assert_allclose(modality_features(padded)[half:], modality_features(picture)[half:], atol=1e-6)
    assert content(np.zeros((40, 40), np.uint8)).shape == (40, 40)  # nothing but black: the whole picture
