"""A cheap, weight-free picture signature for spotting near-duplicate context frames.

The edges of a 32x32 grayscale thumbnail (its horizontal and vertical differences),
centred and normalised, so the cosine of two signatures is the correlation of the two
pictures' structure: where things are and where their outlines run, not how bright
the whole frame is (two dark interiors are not duplicates for being dark).

Near-duplicates are a question about pixels (the same set-up drawn twice), not about
meaning: meaning is what ranks candidates, and judging duplicates by it would throw
out exactly the most relevant frames. So every embedder shares this one signature, and
`memory.duplicate_threshold` means the same whatever model ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from cinema_cli.memory.candidates import Candidate
from cinema_cli.memory.index import EmbeddingIndex

SIDE = 32
IDENTITY = f"signature-edges{SIDE}-v1"


def image_signature(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        image.draft("L", (SIDE * 4, SIDE * 4))  # JPEG decodes at a fraction of full size
        pixels = np.asarray(image.convert("L").resize((SIDE, SIDE), Image.BILINEAR), np.float32)
    edges = np.concatenate([np.diff(pixels, axis=0).ravel(), np.diff(pixels, axis=1).ravel()])
    edges -= edges.mean()
    norm = float(np.linalg.norm(edges))
    return edges / norm if norm > 0 else edges  # a flat picture duplicates nothing


def signatures(candidates: Sequence[Candidate], index: EmbeddingIndex) -> np.ndarray:
    return index.vectors(
        IDENTITY, [c.digest for c in candidates],
        lambda missing: np.stack([image_signature(candidates[i].path) for i in missing]),
    )
