"""Turning files on disk into image records (DICOM and common raster formats)."""

from core.imaging.loader import load_image
from core.imaging.record import ImageRecord, Modality, StudyInfo, WindowPreset

__all__ = ["ImageRecord", "Modality", "StudyInfo", "WindowPreset", "load_image"]
