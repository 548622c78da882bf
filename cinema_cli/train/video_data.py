"""The frames of a multi-shot training sample: each shot's `frames` frames at the training
rate and size, decoded from the sample's source film (cinema_cli.data.reader).

A shot runs from one cut to the next (a dissolve's cut frame is where the next shot
starts). Frames are taken every source_fps / fps source frames from the shot's first;
a shot shorter than that repeats its last frame (the loss then asks for a hold, which is
what the clip shows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cinema_cli.data.reader import Dataset, MultiShotSample


@dataclass(frozen=True)
class ShotClips:
    key: str
    global_caption: str
    captions: tuple[str, ...]
    shots: tuple[np.ndarray, ...]  # each (frames, height, width, 3) uint8


def shot_bounds(sample: MultiShotSample) -> list[tuple[int, int]]:
    """Each shot's [first, end) frame, counted from the sample's first frame."""
    cuts = [int(c["frame"]) for c in sample.cuts]
    edges = [0, *cuts, sample.end_frame - sample.start_frame]
    return list(zip(edges[:-1], edges[1:]))


def sample_clips(data: Dataset, sample: MultiShotSample, frames: int, fps: float, width: int,
                 height: int) -> ShotClips:
    decoded = list(data.clip(sample, width, height))
    if not decoded:
        from cinema_cli.errors import BadInput

        raise BadInput(f"{data.root}: sample {sample.key} decodes to no frames (is {sample.source} still there?)")
    stride = sample.fps / fps
    shots = []
    for first, end in shot_bounds(sample):
        picks = [min(first + int(round(k * stride)), end - 1, len(decoded) - 1) for k in range(frames)]
        shots.append(np.stack([decoded[i] for i in picks]))
    captions = tuple((c or "").strip() for c in sample.shot_captions)
    return ShotClips(sample.key, (sample.global_caption or "").strip(), captions, tuple(shots))
