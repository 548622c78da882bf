"""Shot boundaries: where each shot of a film starts and ends, in frames and seconds.

TransNetV2 (the detector `eval cuts` uses, CUDA when present) has two heads: the
single-frame head peaks on the frame before a hard cut or in the middle of a dissolve;
the many-hot head lights up every frame of a transition. A transition is a run of the
single-frame head above the threshold; its extent is the run of the many-hot head around
that peak. One frame or two is a hard cut; longer is a gradual transition (a dissolve,
a fade): one boundary, and its frames belong to neither shot, so no keyframe and no
clip starts or ends inside it. PySceneDetect's content detector is the fast CPU option;
it sees hard cuts only.

`auto` picks TransNetV2 when it would run on CUDA and PySceneDetect otherwise. On a CPU,
TransNetV2 is compute-bound in fp32 convolutions (about 75 GFLOP per 50 frames, each
frame seen by two of its 100-frame windows): ~6x real time at 24 fps on 2 cores, where
a dataset build should go 20x. Its outputs are kept bit-for-bit as the model defines
them (no bf16 or int8, no other windowing), so choosing it on a CPU is a choice of
quality over speed: `detector: transnetv2`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cinema_cli.eval.cuts import Progress, _scenedetect_cuts, transition_heads

HARD_CUT_FRAMES = 2  # a transition this many frames long or shorter is a cut


@dataclass(frozen=True)
class ShotSpan:
    """Frames [start, end) of one shot, without transition frames; `after` is how the
    shot hands over to the next one: "cut", "dissolve" or "end"."""

    index: int
    start: int
    end: int
    after: str

    @property
    def frames(self) -> int:
        return self.end - self.start

    def to_json(self, fps: float) -> dict:
        return {"index": self.index, "start_frame": self.start, "end_frame": self.end,
                "start": round(self.start / fps, 4), "end": round(self.end / fps, 4), "after": self.after}


def transitions(single: np.ndarray, many: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Transitions as frame ranges [first, last] that belong to no shot; a hard cut
    between frames k-1 and k is the empty range (k, k-1)."""
    found: list[tuple[int, int]] = []
    above = single > threshold
    index, count = 0, len(single)
    while index < count:
        if not above[index]:
            index += 1
            continue
        end = index
        while end < count and above[end]:
            end += 1
        peak = index + int(np.argmax(single[index:end]))
        first = last = peak
        while first > 0 and many[first - 1] > threshold:
            first -= 1
        while last + 1 < count and many[last + 1] > threshold:
            last += 1
        first, last = min(first, index), max(last, end - 1)
        if last - first + 1 <= HARD_CUT_FRAMES:
            found.append((peak + 1, peak))  # a cut after the peak frame
        else:
            found.append((first, last))
        index = max(end, last + 1)
    # A "cut" after the last frame is no cut; overlapping finds merge.
    merged: list[tuple[int, int]] = []
    for first, last in found:
        if first >= count:
            continue
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def spans_from_transitions(frames: int, found: list[tuple[int, int]]) -> list[ShotSpan]:
    spans: list[ShotSpan] = []
    start = 0
    for first, last in found:
        if first > start:
            spans.append(ShotSpan(len(spans), start, first, "cut" if last < first else "dissolve"))
        start = max(start, last + 1)
    if start < frames:
        spans.append(ShotSpan(len(spans), start, frames, "end"))
    return spans


def resolve_detector(detector: str, device: str = "auto") -> str:
    """The detector `auto` stands for on this machine (see the module's note)."""
    if detector != "auto":
        return detector
    if device == "auto":
        import torch

        return "transnetv2" if torch.cuda.is_available() else "scenedetect"
    return "transnetv2" if device.startswith("cuda") else "scenedetect"


def detect_shots(video: Path, fps: float, frames: int, detector: str, threshold: float,
                 device: str = "auto", progress: Progress | None = None) -> list[ShotSpan]:
    """The shots of `video`; `progress(frames read, frames)` as TransNetV2 goes."""
    detector = resolve_detector(detector, device)
    if detector == "transnetv2":
        single, many = transition_heads(video, device, progress, frames)
        return spans_from_transitions(len(single), transitions(single, many, threshold))
    cuts = _scenedetect_cuts(video, fps)
    return spans_from_transitions(frames, [(cut, cut - 1) for cut in cuts])
