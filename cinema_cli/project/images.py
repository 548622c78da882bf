"""Checking an image file before anything reads its pixels.

A reference image or a keyframe a person put in the project may be no image at all, a
truncated one, or a decompression bomb (a small PNG that expands to gigapixels and
exhausts memory). Pillow opens lazily, so the size in the header is known before any
pixel is decoded.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image

# Far above any keyframe or reference (8K x 8K is 67 Mpx) and below what exhausts memory.
MAX_PIXELS = 100_000_000


def image_problem(path: Path, *, verify: bool = False) -> str | None:
    """Why `path` is not a usable image (None when it is). `verify` also checks the
    whole file's integrity (PNG checksums, truncation); it reads all of it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    return f"is {width}x{height} pixels, more than cinema reads ({MAX_PIXELS:,}); a decompression bomb?"
                if verify:
                    image.verify()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return f"declares more pixels than cinema reads ({MAX_PIXELS:,}); a decompression bomb?"
    except Exception as err:  # noqa: BLE001 - a malformed file makes Pillow raise many kinds
        return f"is not a readable image ({type(err).__name__}: {err})"
    return None
