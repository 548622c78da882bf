"""Where each shot lies in the token sequences of a jointly denoised scene.

Video tokens are flattened frame-major (frame, row, column), so the latent frames of one
shot are one contiguous run of tokens; its first latent frame leads the run and is the
shot's *summary*. The text sequence is the hierarchical prompt: the global part (scene,
cast, style) first, then each shot's part in shot order.

A `Segment` is one dense attention problem of the sparse pattern: a run of queries and
the key runs it may see. Every kernel consumes segments, so the pattern is defined once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

Run = tuple[int, int]  # [start, end) in a token sequence


@dataclass(frozen=True)
class Segment:
    queries: Run
    keys: tuple[Run, ...]

    @property
    def key_length(self) -> int:
        return sum(end - start for start, end in self.keys)


@dataclass(frozen=True)
class ShotLayout:
    """Shot i owns video tokens [bounds[i], bounds[i+1]); its first `summary[i]` tokens
    summarise it for the other shots."""

    bounds: tuple[int, ...]
    summary: tuple[int, ...]
    # HoloCine's pattern: a shot's keys are its own tokens followed by the summary of every
    # shot, its own included (so its own summary is there twice, as HoloCine's trained
    # kernel concatenates them). False: the other shots' summaries only.
    own_summary_again: bool = False

    def __post_init__(self) -> None:
        if len(self.bounds) != len(self.summary) + 1 or self.bounds[0] != 0:
            raise ValueError("bounds must start at 0 and have one more entry than summary")
        for i, size in enumerate(self.summary):
            if not 0 < size <= self.bounds[i + 1] - self.bounds[i]:
                raise ValueError(f"shot {i}: summary of {size} tokens does not fit its tokens")

    @classmethod
    def from_frames(cls, frames: Sequence[int], tokens_per_frame: int, summary_frames: int = 1,
                    own_summary_again: bool = False) -> ShotLayout:
        """Shots of `frames[i]` latent frames; each summarised by its first frames."""
        bounds = tuple(accumulate((f * tokens_per_frame for f in frames), initial=0))
        summary = tuple(min(summary_frames, f) * tokens_per_frame for f in frames)
        return cls(bounds, summary, own_summary_again)

    @property
    def shots(self) -> int:
        return len(self.summary)

    @property
    def length(self) -> int:
        return self.bounds[-1]

    def run(self, shot: int) -> Run:
        return self.bounds[shot], self.bounds[shot + 1]

    def summary_run(self, shot: int) -> Run:
        return self.bounds[shot], self.bounds[shot] + self.summary[shot]

    def self_segments(self) -> list[Segment]:
        """Sparse inter-shot self-attention: a shot's tokens see all of their own shot and
        the summaries of the others (their own summary is already inside their shot; with
        `own_summary_again`, it is repeated after them as HoloCine does)."""
        if self.own_summary_again:
            pool = tuple(self.summary_run(j) for j in range(self.shots))
            return [Segment(self.run(i), (self.run(i), *pool)) for i in range(self.shots)]
        return [
            Segment(
                self.run(i),
                tuple(
                    self.run(i) if j == i else (self.bounds[j], self.bounds[j] + self.summary[j])
                    for j in range(self.shots)
                ),
            )
            for i in range(self.shots)
        ]


@dataclass(frozen=True)
class PromptLayout:
    """The text tokens: the global prompt's run, each shot's run, and the runs every shot
    sees besides (HoloCine: the zero padding), in a text sequence of `length` tokens."""

    global_run: Run
    shot_runs: tuple[Run, ...]
    length: int
    shared: tuple[Run, ...] = ()

    @classmethod
    def from_lengths(cls, global_length: int, shot_lengths: Sequence[int]) -> PromptLayout:
        """The parts one after another: the global prompt, then each shot's."""
        bounds = tuple(accumulate(shot_lengths, initial=global_length))
        return cls((0, global_length), tuple(zip(bounds[:-1], bounds[1:])), bounds[-1])

    def window_segments(self, shots: ShotLayout) -> list[Segment]:
        """Window cross-attention: shot i's video tokens see the global prompt, shot i's
        prompt and the shared runs (each text token once, where runs overlap)."""
        if len(self.shot_runs) != shots.shots:
            raise ValueError(f"{len(self.shot_runs)} shot prompts for {shots.shots} shots")
        return [
            Segment(shots.run(i), merge_runs((self.global_run, self.shot_runs[i], *self.shared)))
            for i in range(shots.shots)
        ]


def merge_runs(runs: Sequence[Run]) -> tuple[Run, ...]:
    """The union of the runs, as sorted disjoint runs."""
    merged: list[list[int]] = []
    for start, end in sorted(r for r in runs if r[1] > r[0]):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return tuple((start, end) for start, end in merged)


def local_segments(segments: Sequence[Segment], start: int, end: int) -> list[Segment]:
    """The segments restricted to the queries [start, end) that this process holds
    (context parallelism splits the query sequence), with query runs made local."""
    local = []
    for segment in segments:
        lo, hi = max(segment.queries[0], start), min(segment.queries[1], end)
        if lo < hi:
            local.append(Segment((lo - start, hi - start), segment.keys))
    return local
