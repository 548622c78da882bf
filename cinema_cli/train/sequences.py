"""Which keyframes make up each training sequence.

Dynamic-stride sampling (Captain Cinema §3.2): a sequence of L pairs is L keyframes of one
film taken every `stride` shots, strides 1..max_stride, so the model sees both adjacent
shots and longer jumps; any two sequences share at most `max_overlap` of their keyframes,
so a long film is not one sequence repeated with a shift. Consecutive sampling (stride 1
only, under the same overlap limit) is the baseline it is reported against.

Which sequences a step trains on is a pure function of (seed, step): a resumed run and a
run on a different number of processes see the same sequences in the same order.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Sequence:
    film: str
    indices: tuple[int, ...]  # positions in the film's kept keyframes, oldest first


def film_sequences(film: str, count: int, length: int, max_stride: int, max_overlap: float) -> list[Sequence]:
    """Greedy selection over strides 1, 2, ... and starts in order: a candidate is kept
    when it shares at most floor(max_overlap * length) keyframes with every kept one.
    Stride 1 goes first, so this never yields fewer than consecutive sampling."""
    allowed = math.floor(max_overlap * length)
    kept: list[Sequence] = []
    uses: dict[int, list[int]] = {}  # keyframe -> kept sequences holding it
    for stride in range(1, max_stride + 1):
        for start in range(count - (length - 1) * stride):
            indices = tuple(range(start, start + length * stride, stride))
            shared: dict[int, int] = {}
            for i in indices:
                for other in uses.get(i, ()):
                    shared[other] = shared.get(other, 0) + 1
            if all(n <= allowed for n in shared.values()):
                for i in indices:
                    uses.setdefault(i, []).append(len(kept))
                kept.append(Sequence(film, indices))
    return kept


def pool(films: dict[str, int], length: int, max_stride: int, max_overlap: float) -> list[Sequence]:
    """Every film's sequences of `length` pairs (films: name -> kept keyframes)."""
    return [s for film in sorted(films) for s in film_sequences(film, films[film], length, max_stride, max_overlap)]


def sampling_report(films: dict[str, int], lengths: list[int], max_stride: int, max_overlap: float) -> dict:
    """Valid sequences per context length, dynamic stride against consecutive."""
    return {str(length): {"dynamic_stride": len(pool(films, length, max_stride, max_overlap)),
                          "consecutive": len(pool(films, length, 1, max_overlap))} for length in lengths}


def step_sequences(sequences: list[Sequence], seed: int, stage: int, step_in_stage: int, batch: int) -> list[Sequence]:
    """The `batch` sequences of one step: the stage's pool, reshuffled every epoch."""
    chosen = []
    for position in range(step_in_stage * batch, (step_in_stage + 1) * batch):
        epoch, index = divmod(position, len(sequences))
        order = list(range(len(sequences)))
        random.Random(f"{seed}:{stage}:{epoch}").shuffle(order)
        chosen.append(sequences[order[index]])
    return chosen


def shares_keyframes(sequence: Sequence, others: list[Sequence]) -> bool:
    """Whether `sequence` holds a keyframe of any of `others` (held-out keyframes)."""
    return any(o.film == sequence.film and set(o.indices) & set(sequence.indices) for o in others)
