"""`lexical`: relevance from the words alone, no weights.

Three cues, strongest first: the same place (a scene's `location` string; a flashback
returns to an earlier scene's exact location, so the frames of that place rank first),
the same people (overlap of the <Character> tags), and shared words (TF-IDF cosine over
the captions, so "the blueprint", "the swinging bulb" find each other). Weighted so the
place always outranks the people: a flashback to the garage wants the garage.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cinema_cli.memory.candidates import Candidate, Query
from cinema_cli.memory.embedders.base import candidate_text, embedders
from cinema_cli.memory.index import EmbeddingIndex
from cinema_cli.project.schema import CHARACTER_TAG, MemorySettings, plain_text

PLACE, PEOPLE, WORDS = 0.5, 0.3, 0.2
# Below this, a frame shares neither place nor people, only a common word or two
# ("night", "light"): a quarter of the words' weight.
FLOOR = WORDS / 4

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_STOP = frozenset(
    "a an and are as at by for from her his in into is it its of on or out over the their "
    "them then they this to under up with while".split()
)


@embedders.register
class LexicalEmbedder:
    name = "lexical"
    version = "1"
    floor = FLOOR

    def __init__(self, settings: MemorySettings, root: Path, device: str) -> None:
        self.identity = f"{self.name}-{self.version}"

    def scores(self, query: Query, candidates: Sequence[Candidate], index: EmbeddingIndex) -> np.ndarray:
        if not candidates:
            return np.zeros(0, np.float32)
        words = tfidf_cosines(_words(query.caption), [_words(candidate_text(c)) for c in candidates])
        place = np.array([c.location == query.location for c in candidates], np.float32)
        people = np.array([_jaccard(query.characters, c.characters) for c in candidates], np.float32)
        return PLACE * place + PEOPLE * people + WORDS * words


def tfidf_cosines(query: list[str], documents: list[list[str]]) -> np.ndarray:
    """Cosine of the query's TF-IDF vector with each document's, IDF over all of them."""
    bags = [Counter(query), *(Counter(d) for d in documents)]
    frequency = Counter(word for bag in bags for word in bag)
    idf = {w: math.log((1 + len(bags)) / (1 + n)) + 1 for w, n in frequency.items()}

    def vector(bag: Counter) -> dict[str, float]:
        weights = {w: count * idf[w] for w, count in bag.items()}
        norm = math.sqrt(sum(v * v for v in weights.values())) or 1.0
        return {w: v / norm for w, v in weights.items()}

    q = vector(bags[0])
    return np.array([sum(q.get(w, 0.0) * v for w, v in vector(b).items()) for b in bags[1:]], np.float32)


def _words(text: str) -> list[str]:
    # Tagged names are left to the cast overlap, so a name is not counted twice.
    text = plain_text(CHARACTER_TAG.sub(" ", text)).lower()
    return [w for w in _WORD.findall(text) if w not in _STOP]


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0
