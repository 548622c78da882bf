"""The embedder protocol: score every candidate's relevance to the query shot.

An embedder is one module that defines a class with `name`, `version` and this
interface, and registers it; `cinema.yaml`'s `memory.embedder` picks one by name.
Constructing one is cheap and never loads a model (status and recipes need only its
`identity`); a model is loaded on the first `scores` call.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np

from cinema_cli.memory.candidates import Candidate, Query
from cinema_cli.memory.index import EmbeddingIndex
from cinema_cli.project.schema import MemorySettings, plain_text
from cinema_cli.registry import Registry


class Embedder(Protocol):
    name: ClassVar[str]
    # Bump when a code change alters the scores, so keyframes planned with them replan.
    version: ClassVar[str]
    # Scores at or below this mean "unrelated": such a frame is never context, since it
    # would cost tokens and make this keyframe redo whenever that one changes.
    floor: ClassVar[float]
    # Name, version, model and weights: keys the embedding index and the keyframe recipe.
    identity: str

    def __init__(self, settings: MemorySettings, root: Path, device: str) -> None: ...

    def scores(self, query: Query, candidates: Sequence[Candidate], index: EmbeddingIndex) -> np.ndarray:
        """One relevance score per candidate; higher is more relevant."""
        ...


embedders: Registry[Embedder] = Registry("memory embedder", {
    "lexical": "cinema_cli.memory.embedders.lexical",
    "clip": "cinema_cli.memory.embedders.clip",
    "text": "cinema_cli.memory.embedders.text",
})


def candidate_text(candidate: Candidate) -> str:
    """What a candidate says in words: its caption, or a reference's name and look."""
    if candidate.is_reference:
        return f"{candidate.shot[1:]}, {candidate.caption}"
    return plain_text(candidate.caption)
