"""NumPy arrays to QImage/QPixmap without copies the caller has to think about."""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QImage, QPixmap


def to_qimage(array: np.ndarray) -> QImage:
    """uint8 (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA to a QImage owning its own copy."""
    array = np.ascontiguousarray(array)
    h, w = array.shape[:2]
    if array.ndim == 2:
        fmt, stride = QImage.Format.Format_Grayscale8, w
    elif array.shape[2] == 3:
        fmt, stride = QImage.Format.Format_RGB888, 3 * w
    else:
        fmt, stride = QImage.Format.Format_RGBA8888, 4 * w
    return QImage(array.data, w, h, stride, fmt).copy()


def to_pixmap(array: np.ndarray) -> QPixmap:
    return QPixmap.fromImage(to_qimage(array))
