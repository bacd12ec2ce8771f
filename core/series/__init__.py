"""Studies and series: index a folder or DICOMDIR, read slices lazily, analyse a whole series (Qt-free)."""

from core.series.index import Patient, Series, SliceRef, Study, StudyIndex, index_dicomdir, index_folder, index_path

__all__ = ["Patient", "Series", "SliceRef", "Study", "StudyIndex", "index_dicomdir", "index_folder", "index_path"]
