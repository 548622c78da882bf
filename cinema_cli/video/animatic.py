"""The `animatic` shot backend: a camera move over the still keyframe (CPU previz).

Each frame is a window on the keyframe, resampled to the output size with sub-pixel
accuracy so slow moves glide instead of stepping a pixel at a time. Deterministic,
no weights, one frame in memory. Notes burned onto a sketch panel (its caption strip and
badges, named in the PNG's OVERLAY_KEY chunk) stay still over the moving picture, so a
move never crops them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from cinema_cli.assemble.ffmpeg import VideoWriter
from cinema_cli.errors import BackendError
from cinema_cli.keyframes.base import OVERLAY_KEY
from cinema_cli.project.schema import Move
from cinema_cli.video.base import EncodeSettings, ShotRequest, StepProgress, shot_backends


class AnimaticOptions(BaseModel, extra="forbid"):
    # How far a push-in/pull-out goes: the window shrinks to (1 - zoom) of the frame.
    zoom: float = Field(0.15, gt=0, le=0.5)
    # How far a pan/tilt goes, as a fraction of the frame.
    travel: float = Field(0.12, gt=0, le=0.4)


def _ease(t: float) -> float:
    """Ease in and out: the camera starts and stops gently, like a real move."""
    return 0.5 - 0.5 * math.cos(math.pi * t)


def camera_window(
    move: Move, t: float, width: int, height: int, options: AnimaticOptions
) -> tuple[float, float, float, float]:
    """The (left, top, right, bottom) window on the keyframe at time t in [0, 1]."""
    if move is Move.static:
        return (0.0, 0.0, float(width), float(height))
    e = _ease(t)
    if move in (Move.push_in, Move.pull_out):
        scale = 1 - options.zoom * (e if move is Move.push_in else 1 - e)
        w, h = width * scale, height * scale
        left, top = (width - w) / 2, (height - h) / 2
    else:
        # Pans and tilts move a window of (1 - travel) of the frame, aspect kept.
        w, h = width * (1 - options.travel), height * (1 - options.travel)
        along = {
            Move.pan_right: e, Move.pan_left: 1 - e, Move.tilt_down: e, Move.tilt_up: 1 - e,
        }[move]
        horizontal = move in (Move.pan_left, Move.pan_right)
        left = (width - w) * along if horizontal else (width - w) / 2
        top = (height - h) / 2 if horizontal else (height - h) * along
    return (left, top, left + w, top + h)


def _overlay(notes: str | None, size: tuple[int, int]) -> tuple[tuple[int, ...], list[tuple[int, ...]]]:
    """The moving picture's box and the still notes' boxes; without notes, all is picture."""
    whole = (0, 0, *size)
    if not notes:
        return whole, []
    try:
        data = json.loads(notes)
        picture = tuple(int(v) for v in data["picture"])
        fixed = [tuple(int(v) for v in box) for box in data.get("fixed", [])]
    except (ValueError, KeyError, TypeError):
        return whole, []  # notes we cannot read: move the whole frame, as before
    if len(picture) != 4 or picture[2] <= picture[0] or picture[3] <= picture[1]:
        return whole, []
    return picture, [box for box in fixed if len(box) == 4]


def _scaled(box: tuple[int, ...], sx: float, sy: float) -> tuple[int, ...]:
    return (math.floor(box[0] * sx), math.floor(box[1] * sy), math.ceil(box[2] * sx), math.ceil(box[3] * sy))


@shot_backends.register
class AnimaticShots:
    name = "animatic"
    version = "2"
    Options = AnimaticOptions
    uses_next_keyframe = False

    def __init__(self, options: AnimaticOptions):
        self.options = options

    def render(
        self, request: ShotRequest, out: Path, encode: EncodeSettings, progress: StepProgress
    ) -> None:
        size = (request.width, request.height)
        try:
            with Image.open(request.keyframe) as image:
                keyframe = image.convert("RGB")
                notes = image.info.get(OVERLAY_KEY)
        except OSError as err:
            raise BackendError(f"animatic: cannot read keyframe {request.keyframe}: {err}") from err
        picture, fixed = _overlay(notes, keyframe.size)
        if keyframe.size != size:  # the notes' boxes scale with the keyframe
            sx, sy = size[0] / keyframe.width, size[1] / keyframe.height
            picture, fixed = (_scaled(picture, sx, sy), [_scaled(box, sx, sy) for box in fixed])
            keyframe = keyframe.resize(size, Image.Resampling.LANCZOS)
        left, top, right, bottom = picture
        scene = keyframe.crop(picture)
        pw, ph = right - left, bottom - top
        frames = request.frames
        with VideoWriter(out, request.width, request.height, request.fps, encode) as writer:
            for i in range(frames):
                t = i / (frames - 1) if frames > 1 else 0.0
                box = camera_window(request.move, t, pw, ph, self.options)
                if box == (0, 0, pw, ph):
                    frame = keyframe  # the full frame is the keyframe itself, exactly
                else:
                    # resize with a fractional box: sub-pixel, and twice as fast as
                    # an EXTENT transform for the same picture.
                    frame = keyframe.copy()
                    frame.paste(scene.resize((pw, ph), Image.Resampling.BILINEAR, box=box), (left, top))
                    for note in fixed:
                        frame.paste(keyframe.crop(note), note[:2])
                writer.write(np.asarray(frame))
                progress(i + 1, frames)
