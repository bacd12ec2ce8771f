"""Size limits that stop decompression bombs before any pixel buffer is allocated."""

MAX_FRAME_PIXELS = 30_000 * 30_000  # a large histology field; whole-slide pyramids are out of scope
MAX_TOTAL_BYTES = 8 * 1024**3  # decoded size of all frames together


def check_size(rows: int, columns: int, frames: int, samples: int, bytes_per_sample: int) -> str | None:
    """Return a reason when the declared image is absurd or too large, else None."""
    if rows <= 0 or columns <= 0 or frames <= 0:
        return f"the header declares an empty image ({rows} x {columns} pixels, {frames} frames)"
    if rows * columns > MAX_FRAME_PIXELS:
        return (
            f"the image is too large ({columns} x {rows} pixels, limit "
            f"{MAX_FRAME_PIXELS / 1e6:.0f} megapixels): possibly a decompression bomb"
        )
    total = rows * columns * frames * samples * bytes_per_sample
    if total > MAX_TOTAL_BYTES:
        return f"the decoded image would need {total / 1024**3:.1f} GiB, more than the {MAX_TOTAL_BYTES // 1024**3} GiB limit"
    return None
