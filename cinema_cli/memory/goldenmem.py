"""GoldenMem: the size each context frame is given to the keyframe model at.

The frame being drawn keeps its full size; context frame i gets short side
s_i = floor(s_{i-1} / φ) (φ = golden ratio), so its tokens shrink by about φ² per step and
the whole context costs at most 1/(φ² - 1) of the target: target + context ≤ φ · target,
however long the film. With groups of g frames sharing one scale, each scale is paid g
times, so the context costs at most g times that.

Sides are in latent units (pixels / vae_factor) because that is where the model's
patches live; tokens are whole patches, floor(s / patch) · floor(l / patch). The long
side follows the project's aspect ratio, rounded down so the bound holds exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PHI = (1 + math.sqrt(5)) / 2
BOUND = PHI**2 / (PHI**2 - 1)  # = φ: target + all context, in units of s0·l0/p²


@dataclass(frozen=True)
class Slot:
    """One frame's size: (height, width) in latent units and in pixels, and its tokens."""

    latent: tuple[int, int]
    pixels: tuple[int, int]
    tokens: int


@dataclass(frozen=True)
class Schedule:
    target: Slot
    context: tuple[Slot, ...]

    @property
    def tokens(self) -> int:
        return self.target.tokens + sum(s.tokens for s in self.context)

    @property
    def context_tokens(self) -> int:
        return sum(s.tokens for s in self.context)


def short_sides(s0: int, count: int, group: int = 1, min_side: int = 1) -> list[int]:
    """Short sides of up to `count` context frames: one golden step per group of
    `group` frames, stopping at the first side below `min_side`."""
    sides: list[int] = []
    side = s0
    while len(sides) < count:
        side = math.floor(side / PHI)
        if side < min_side or side == 0:
            break
        sides.extend([side] * min(group, count - len(sides)))
    return sides


def schedule(
    height: int,
    width: int,
    count: int,
    *,
    vae_factor: int = 8,
    patch: int = 2,
    group: int = 1,
    min_side: int = 1,
    budget: int | None = None,
) -> Schedule:
    """The target's size and the sizes of up to `count` context frames, largest first.

    `height`/`width` are the target's pixels; `budget` caps target + context tokens
    (frames are taken in order while they fit, so the sizes stay a golden prefix).
    """
    portrait = height > width
    s0, l0 = (width, height) if portrait else (height, width)
    s0, l0 = s0 // vae_factor, l0 // vae_factor

    def slot(short: int) -> Slot:
        long = short * l0 // s0  # floor keeps l_i / s_i ≤ l0 / s0, so the bound holds
        latent = (long, short) if portrait else (short, long)
        tokens = (short // patch) * (long // patch)
        return Slot(latent, (latent[0] * vae_factor, latent[1] * vae_factor), tokens)

    target = slot(s0)
    total = target.tokens
    context = []
    for side in short_sides(s0, count, group, min_side):
        frame = slot(side)
        if frame.tokens == 0 or (budget is not None and total + frame.tokens > budget):
            break
        context.append(frame)
        total += frame.tokens
    return Schedule(target, tuple(context))
