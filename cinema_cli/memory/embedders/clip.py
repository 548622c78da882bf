"""`clip`: open_clip text-to-image relevance; the new shot's caption against the pictures
of earlier keyframes (Captain Cinema found it recalls better than text-to-text)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cinema_cli.memory.candidates import Candidate, Query
from cinema_cli.memory.embedders.base import embedders
from cinema_cli.memory.embedders.openclip import OpenClip
from cinema_cli.memory.index import EmbeddingIndex
from cinema_cli.memory.weights import resolve_clip_weights
from cinema_cli.project.schema import MemorySettings, plain_text


@embedders.register
class ClipEmbedder:
    name = "clip"
    version = "1"
    floor = 0.0  # cosines: no calibrated "unrelated" level, so only negative ones are out

    def __init__(self, settings: MemorySettings, root: Path, device: str) -> None:
        weights = resolve_clip_weights(settings.model, settings.weights, root)
        self.identity = f"{self.name}-{self.version}:{weights.identity}"
        self.model = OpenClip(weights, device)

    def scores(self, query: Query, candidates: Sequence[Candidate], index: EmbeddingIndex) -> np.ndarray:
        if not candidates:
            return np.zeros(0, np.float32)
        images = index.vectors(
            f"{self.identity}:image", [c.digest for c in candidates],
            lambda missing: self.model.encode_images([candidates[i].path for i in missing]),
        )
        return images @ self.model.encode_texts([plain_text(query.caption)])[0]
