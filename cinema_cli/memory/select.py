"""Choosing the context: which candidates, and which GoldenMem size each one gets.

Candidates are ranked by relevance; recency only orders near-ties (scores within
NEAR_TIE), so a flashback still reaches back past recent frames. Walking down the
ranking, a candidate is skipped when it is unrelated (score at or below the embedder's
floor), from a shot already chosen, or a near-duplicate of a chosen picture, so the
context covers complementary states rather than one state several times. The first
`limit` survivors are the context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cinema_cli.memory.candidates import Candidate
from cinema_cli.memory.goldenmem import Slot

# Scores this close are a tie as far as the embedder can tell; then the later frame wins.
NEAR_TIE = 0.01


@dataclass(frozen=True)
class Chosen:
    candidate: Candidate
    score: float
    slot: Slot


def rank(candidates: Sequence[Candidate], scores: np.ndarray) -> list[int]:
    """Candidate positions, most relevant first; within a run of near-ties, most recent first."""
    by_score = sorted(range(len(candidates)), key=lambda i: (-float(scores[i]), -candidates[i].order))
    ranked: list[int] = []
    run: list[int] = []
    for i in by_score:
        if run and float(scores[run[0]]) - float(scores[i]) > NEAR_TIE:
            ranked += sorted(run, key=lambda j: -candidates[j].order)
            run = []
        run.append(i)
    return ranked + sorted(run, key=lambda j: -candidates[j].order)


def choose(candidates: Sequence[Candidate], scores: np.ndarray, signatures: np.ndarray,
           *, limit: int, threshold: float, floor: float = 0.0) -> list[int]:
    """Up to `limit` candidate positions, best first, without unrelated ones or duplicates."""
    chosen: list[int] = []
    shots: set[str] = set()
    for i in rank(candidates, scores):
        if len(chosen) >= limit:
            break
        if scores[i] <= floor or candidates[i].shot in shots:
            continue
        if chosen and float(np.max(signatures[chosen] @ signatures[i])) > threshold:
            continue
        chosen.append(i)
        shots.add(candidates[i].shot)
    return chosen


def assign(candidates: Sequence[Candidate], scores: Sequence[float], chosen: list[int],
           slots: Sequence[Slot], by: str) -> list[Chosen]:
    """Give the chosen their GoldenMem slots (largest first) in relevance order, or with
    the most recent frame largest (`by="recency"`; references, which have no time, last)."""
    order = chosen if by == "relevance" else sorted(chosen, key=lambda i: -candidates[i].order)
    return [Chosen(candidates[i], float(scores[i]), slot) for i, slot in zip(order, slots)]
