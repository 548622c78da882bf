"""Per shot: the frames it is judged on, its black bars, its crop and its keyframe.

One streamed decode of the film at a working size (the source, scaled down so its short
side is at most twice the keyframe's, which is all a centre crop can use); only the
frames a shot needs are kept, one shot at a time, so memory is flat in film length.
A shot's bars are judged on `border_frames` frames spread over it, not one: a row or
column is a bar only where it is dark in all of them (a night scene is dark at the top
in one frame, not in the letterbox sense). The crop is the largest centre box of the
configured aspect inside the picture; the keyframe is the shot's middle frame, cropped
and resized to the configured short side.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cinema_cli.assemble.ffmpeg import read_frames
from cinema_cli.data.boundaries import ShotSpan
from cinema_cli.data.config import KeyframeSettings

MIN_BAR = 0.01  # bars thinner than this fraction of the side are compression noise, not bars
ANALYSIS_WIDTH = 256  # brightness, detail and contrast are measured at this width
PAIR_SLACK = 0.02  # the two bars of a pair may differ by this fraction of the side


@dataclass(frozen=True)
class Box:
    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    def scaled(self, factor_x: float, factor_y: float) -> "Box":
        return Box(round(self.left * factor_x), round(self.top * factor_y),
                   round(self.right * factor_x), round(self.bottom * factor_y))

    def to_json(self) -> list[int]:
        return [self.left, self.top, self.right, self.bottom]


def working_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    scale = min(1.0, 2 * short_side / min(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def sample_indexes(span: ShotSpan, count: int) -> list[int]:
    """`count` frames spread evenly inside the shot, and its middle frame (the keyframe)."""
    picks = {span.start + (2 * i + 1) * span.frames // (2 * count) for i in range(count)}
    return sorted(picks | {keyframe_index(span)})


def keyframe_index(span: ShotSpan) -> int:
    return span.start + (span.frames - 1) // 2


def _luma(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def _bars(dark: np.ndarray) -> tuple[int, int]:
    """Leading and trailing runs of dark lines, kept only as a matching pair: a letterbox
    or pillarbox is symmetric, a black area of the picture on one side is not a bar."""
    size = len(dark)
    if dark.all():
        return 0, 0
    lead, trail = int(np.argmax(~dark)), int(np.argmax(~dark[::-1]))
    if min(lead, trail) < max(2, MIN_BAR * size) or abs(lead - trail) > max(2, PAIR_SLACK * size):
        return 0, 0
    return lead, trail


def picture_box(frames: list[np.ndarray], border_luma: int) -> Box:
    """The picture inside letterbox / pillarbox bars that are dark on every frame."""
    brightest = np.max(np.stack([_luma(f) for f in frames]), axis=0)  # per pixel over frames
    height, width = brightest.shape
    # A line is a bar when nearly all of it is dark (a few bright pixels are noise).
    top, bottom = _bars(np.percentile(brightest, 95, axis=1) <= border_luma)
    left, right = _bars(np.percentile(brightest, 95, axis=0) <= border_luma)
    return Box(left, top, width - right, height - bottom)


def centre_crop(picture: Box, aspect: float) -> Box:
    """The largest box of width/height `aspect` centred in `picture`."""
    if picture.width / picture.height > aspect:
        width, height = round(picture.height * aspect), picture.height
    else:
        width, height = picture.width, round(picture.width / aspect)
    left = picture.left + (picture.width - width) // 2
    top = picture.top + (picture.height - height) // 2
    return Box(left, top, left + width, top + height)


def output_size(aspect: float, short_side: int) -> tuple[int, int]:
    if aspect >= 1:
        return round(short_side * aspect), short_side
    return short_side, round(short_side / aspect)


@dataclass
class ShotFrames:
    span: ShotSpan
    samples: dict[int, np.ndarray]  # frame index -> working-size RGB frame


def stream_shot_frames(video: Path, size: tuple[int, int], spans: list[ShotSpan],
                       per_shot: int) -> Iterator[ShotFrames]:
    """Each shot's sample frames, in film order, from one streamed decode."""
    wanted = [set(sample_indexes(span, per_shot)) for span in spans]
    current, held = 0, {}
    for index, frame in enumerate(read_frames(video, *size)):
        while current < len(spans) and index >= spans[current].end:
            yield ShotFrames(spans[current], held)
            current, held = current + 1, {}
        if current < len(spans) and index in wanted[current]:
            held[index] = frame
    while current < len(spans):  # the decoder gave fewer frames than the probe counted
        if held:
            yield ShotFrames(spans[current], held)
        current, held = current + 1, {}


@dataclass
class Keyframe:
    image: Image.Image
    picture: Box  # in source pixels
    crop: Box  # in source pixels
    luma: float
    detail: float
    contrast: float
    crops: dict[int, np.ndarray]  # frame index -> that sample frame's crop, at working size


def keyframe(shot: ShotFrames, settings: KeyframeSettings, source: tuple[int, int]) -> Keyframe:
    frames = [shot.samples[i] for i in sorted(shot.samples)]
    middle = keyframe_index(shot.span)
    frame = shot.samples.get(middle, frames[len(frames) // 2])
    work_h, work_w = frame.shape[:2]
    picture = picture_box(frames, settings.border_luma)
    crop = centre_crop(picture, settings.aspect)
    image = Image.fromarray(frame[crop.top:crop.bottom, crop.left:crop.right]).resize(
        output_size(settings.aspect, settings.short_side), Image.Resampling.LANCZOS)
    # Measured on a thumbnail of fixed width, so the thresholds mean the same whatever
    # the keyframe size (gradients shrink as a picture is enlarged).
    thumb = image.resize((ANALYSIS_WIDTH, max(1, round(ANALYSIS_WIDTH * image.height / image.width))),
                         Image.Resampling.BILINEAR)
    luma = _luma(np.asarray(thumb))
    detail = float(np.abs(np.diff(luma, axis=0)).mean() + np.abs(np.diff(luma, axis=1)).mean()) / 2
    to_source = (source[0] / work_w, source[1] / work_h)
    crops = {i: f[crop.top:crop.bottom, crop.left:crop.right] for i, f in shot.samples.items()}
    return Keyframe(image, picture.scaled(*to_source), crop.scaled(*to_source), float(luma.mean()), detail,
                    float(luma.std()), crops)
