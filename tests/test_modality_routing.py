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
