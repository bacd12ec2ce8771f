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
