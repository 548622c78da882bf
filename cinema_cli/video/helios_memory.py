"""Which past latent frames fill a Helios chunk's history slots: the memory policies.

The candidates are the film's earlier frames (on disk, in a `LatentHistory`) followed by
the frames of the shot being made (in memory: its keyframe's latent, index -1, then the
chunks made so far). Some are forced — the shot's own newest frames, which carry its
motion into the mid and short slots, and, across a `continue`, the newest frame of the
film — and the policy fills the rest of the budget:

- `recency`: the newest frames (Helios's own behaviour: a window of the last frames);
- `camr`: the frames the new chunk attends to most (scores from `camr.probe_scores`);
- `full`: every frame, a history that grows with the film (a baseline for the bench).

The chosen frames are handed to the model oldest first, so the newest land in the short
slot, as Helios expects.
"""

from __future__ import annotations

from collections.abc import Iterator

from cinema_cli.video.causal import FrameRef, LatentHistory, RoutedFrame, Routing

POLICIES = ("camr", "recency", "full")


class FramePool:
    """The candidate frames of one chunk, in film order, and their latents on demand."""

    def __init__(self, history: LatentHistory, past: list[FrameRef], shot_id: str, own: dict[int, object]):
        self.history = history
        self.past = past
        self.shot_id = shot_id
        self.own = own  # index in the shot (-1: keyframe latent) -> latent [C, h, w]

    @property
    def refs(self) -> list[FrameRef]:
        return [*self.past, *(FrameRef(self.shot_id, i) for i in sorted(self.own))]

    def gather(self, refs: list[FrameRef]):
        """The latents of `refs` in the order given: [1, C, len(refs), h, w] (float32)."""
        import torch

        on_disk = [r for r in refs if r.shot_id != self.shot_id]
        loaded = dict(zip(on_disk, self.history.gather(on_disk).unbind(1))) if on_disk else {}
        frames = [self.own[r.index] if r.shot_id == self.shot_id else loaded[r] for r in refs]
        return torch.stack(frames, dim=1).unsqueeze(0).float()

    def batches(self, refs: list[FrameRef], size: int) -> Iterator[tuple[list[FrameRef], object]]:
        """`refs` in groups of at most `size`, with their latents (so only a group is in memory)."""
        for start in range(0, len(refs), size):
            group = refs[start:start + size]
            yield group, self.gather(group)


def forced_frames(pool: FramePool, keep_own: int, keep_newest_past: bool) -> list[FrameRef]:
    """The frames every policy keeps: the shot's own newest `keep_own`, and (on the first
    chunk of a `continue`) the film's newest frame. A cut forces none of the past."""
    own = [r for r in pool.refs if r.shot_id == pool.shot_id][-keep_own:] if keep_own else []
    past = [pool.past[-1]] if keep_newest_past and pool.past else []
    return [*past, *own]


def choose(policy: str, refs: list[FrameRef], budget: int, forced: list[FrameRef],
           scores: dict[FrameRef, float] | None = None) -> list[FrameRef]:
    """The routed frames, in film order (the order of `refs`)."""
    if policy == "full":
        return list(refs)
    keep = set(forced[-budget:])
    rest = [r for r in refs if r not in keep]
    room = max(0, budget - len(keep))
    if policy == "recency":
        keep.update(rest[len(rest) - room:] if room else [])
    elif policy == "camr":
        if scores is None:
            raise ValueError("camr routing needs the probe's scores")
        order = sorted(range(len(rest)), key=lambda i: (-scores[rest[i]], -i))  # ties: the newer frame
        keep.update(rest[i] for i in order[:room])
    else:
        raise ValueError(f"unknown memory policy {policy!r}")
    return [r for r in refs if r in keep]


def routing(policy: str, refs: list[FrameRef], chosen: list[FrameRef], scores: dict[FrameRef, float] | None,
            notes: dict) -> Routing:
    """The log entry of a chunk's choice: CAMR's attention mass per frame; for the other
    policies the recency rank (0 = the newest frame)."""
    if scores is None:
        rank = {r: float(len(refs) - 1 - i) for i, r in enumerate(refs)}
        scores = rank
    slots = tuple(RoutedFrame(r.shot_id, r.index, round(float(scores[r]), 6)) for r in chosen)
    return Routing(policy=policy, candidates=len(refs), slots=slots, notes=notes)
