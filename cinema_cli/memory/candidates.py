"""What retrieval works on: the shot being drawn (the query) and what it may remember."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Query:
    caption: str
    characters: frozenset[str]
    location: str


@dataclass(frozen=True)
class Candidate:
    """An earlier keyframe, or a character's reference image (an identity anchor).

    `shot` is the shot id, or "@Name" for a reference; at most one candidate per `shot`
    is chosen. `order` is the position in the film (recency); references have none (-1).
    """

    shot: str
    path: Path
    digest: str  # sha256 of the image file: keys the embedding index
    caption: str  # the shot's caption, or the character's description
    characters: frozenset[str]
    location: str | None  # None for references: they belong to no place
    order: int

    @property
    def is_reference(self) -> bool:
        return self.shot.startswith("@")
