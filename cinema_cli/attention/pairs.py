"""Where each (image, caption) pair lies in an interleaved sequence, and the hybrid masks
of Captain Cinema's keyframe model as attention segments.

The sequence keeps FLUX.2's order: all text tokens first (pair 0's caption, pair 1's,
...), then all image tokens (pair 0's latent patches, pair 1's, ...). Pair i owns text run
i and image run i. The masks:

- local (the double-stream blocks): pair i sees only itself, its caption and its image —
  block-diagonal, so a pair is fused with its own caption before pairs meet;
- global (the single-stream blocks): every pair sees every pair (training, joint
  sampling), or, causally, itself and the pairs before it (online extension).

Each mask is a list of `Segment`s, solved by the packed / varlen kernels of `sparse.py`,
so no token-by-token mask is ever built (the dense one in `reference.py` is for tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Literal

from cinema_cli.attention.layout import Run, Segment

GlobalMask = Literal["bidirectional", "causal"]


@dataclass(frozen=True)
class PairLayout:
    """Pair i's caption is text tokens [text[i], text[i+1]), its image is image tokens
    [image[i], image[i+1]) (counted within the image stream)."""

    text: tuple[int, ...]
    image: tuple[int, ...]

    @classmethod
    def from_lengths(cls, text_lengths: Sequence[int], image_lengths: Sequence[int]) -> PairLayout:
        if len(text_lengths) != len(image_lengths) or not text_lengths:
            raise ValueError("every pair needs a caption length and an image length")
        if min(image_lengths) <= 0 or min(text_lengths) < 0:
            raise ValueError("a pair's image must have tokens")
        return cls(tuple(accumulate(text_lengths, initial=0)), tuple(accumulate(image_lengths, initial=0)))

    @property
    def pairs(self) -> int:
        return len(self.image) - 1

    @property
    def text_length(self) -> int:
        return self.text[-1]

    @property
    def image_length(self) -> int:
        return self.image[-1]

    def text_run(self, i: int) -> Run:
        return self.text[i], self.text[i + 1]

    def image_run(self, i: int) -> Run:
        """Pair i's image tokens in the joint [text, image] sequence."""
        return self.text_length + self.image[i], self.text_length + self.image[i + 1]

    def pair_lengths(self, i: int) -> tuple[int, int]:
        return self.text[i + 1] - self.text[i], self.image[i + 1] - self.image[i]

    def _runs(self, i: int) -> tuple[Run, ...]:
        return tuple(r for r in (self.text_run(i), self.image_run(i)) if r[1] > r[0])

    def local_segments(self) -> list[Segment]:
        """Block-diagonal: each pair's tokens see their own pair only."""
        return [Segment(run, self._runs(i)) for i in range(self.pairs) for run in self._runs(i)]

    def global_segments(self, mask: GlobalMask) -> list[Segment]:
        """Bidirectional: everything sees everything. Causal: pair i sees pairs 0..i."""
        whole = (0, self.text_length + self.image_length)
        if mask == "bidirectional":
            return [Segment(whole, (whole,))]
        segments = []
        for i in range(self.pairs):
            keys = tuple(r for r in ((0, self.text[i + 1]), (self.text_length, self.image_run(i)[1])) if r[1] > r[0])
            segments += [Segment(run, keys) for run in self._runs(i)]
        return segments

    def head(self, pairs: int) -> PairLayout:
        """The layout of the first `pairs` pairs."""
        return PairLayout(self.text[:pairs + 1], self.image[:pairs + 1])
