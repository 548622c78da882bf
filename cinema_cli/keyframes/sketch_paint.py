"""Small drawing helpers shared by the `sketch` previz modules: ink, paper, colour
arithmetic and seeded randomness."""

from __future__ import annotations

import colorsys
import hashlib

import numpy as np
from PIL import ImageDraw

RGB = tuple[int, int, int]

INK: RGB = (34, 32, 40)
PAPER: RGB = (246, 243, 234)


def hash_rng(*parts: str) -> np.random.Generator:
    """A generator seeded from text; hashlib, because hash() differs per process."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b))  # type: ignore[return-value]


def shade(color: RGB, factor: float) -> RGB:
    return tuple(min(255, max(0, round(c * factor))) for c in color)  # type: ignore[return-value]


def hsv(h: float, s: float, v: float) -> RGB:
    rgb = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return tuple(round(c * 255) for c in rgb)  # type: ignore[return-value]


def rotate_hue(color: RGB, turn: float) -> RGB:
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in color))
    return hsv(h + turn, s, v)


def rounded(d: ImageDraw.ImageDraw, box: tuple[float, ...], radius: float, **style) -> None:
    """rounded_rectangle on whole pixels: Pillow's raises on some fractional small boxes."""
    d.rounded_rectangle(tuple(round(c) for c in box), radius=round(radius), **style)
