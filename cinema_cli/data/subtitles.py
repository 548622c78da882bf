"""Burned-in subtitles, found by a real text detector that runs offline.

The detector is PP-OCRv4's text-detection network (a DBNet) in ONNX, as shipped inside
the `rapidocr-onnxruntime` wheel and run by onnxruntime on the CPU: no download, no
recognition step (what the text says does not matter, only that it is there). A
subtitle comes and goes inside a shot, so a shot is checked on several of its frames
(the ones its black bars are judged on, already decoded: no extra decode), cropped as
the keyframe is. Only the lower band of a frame can hold a subtitle, so the bands of
all the frames are stacked into one detector input, one run per shot. A frame has
subtitles when the detector finds a text line where subtitles sit: in the lower part,
roughly centred, wider than it is tall. Text elsewhere (a shop sign, a newspaper) is
part of the picture and is left alone.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

DETECTOR = "ppocrv4-det-onnx-v2"  # v2: several frames per shot, their lower bands in one run
INPUT_WIDTH = 640  # frames are resized to this width (a multiple of 32) for the detector...
MAX_UPSCALE = 2  # ...or to at most twice their own width (a small frame gains nothing more)
MIN_INPUT_WIDTH = 320
PIXEL_THRESHOLD = 0.3  # DBNet's text-probability threshold for a pixel
LOWER_PART = 0.55  # a subtitle's centre is below this fraction of the height
MIN_HEIGHT, MAX_HEIGHT = 0.025, 0.2  # a text line's height, as a fraction of the frame's
MIN_WIDTH = 0.15  # and its width (a frame counter or a sign is narrower)
CENTRED = 0.15  # its centre is within this fraction of the width from the middle
BAND_TOP = LOWER_PART - MAX_HEIGHT / 2  # above this, no part of a subtitle line can be
GAP = 16  # black rows between two frames' bands, so no text line spans two frames


@cache
def _session(threads: int):
    import onnxruntime
    import rapidocr_onnxruntime

    model = Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads  # the film's share of the CPU (films run in parallel)
    return onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def input_width(frame_width: int) -> int:
    return max(MIN_INPUT_WIDTH, min(INPUT_WIDTH, MAX_UPSCALE * frame_width)) // 32 * 32


def text_probability(image: np.ndarray, threads: int = 1) -> np.ndarray:
    """DBNet's per-pixel text probability for an RGB array whose sides are multiples of 32."""
    batch = ((image.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None]
    session = _session(threads)
    return session.run(None, {session.get_inputs()[0].name: batch})[0][0, 0]


def subtitle_boxes(frames: list[np.ndarray], threads: int = 1) -> list[list[list[float]]]:
    """Per frame (RGB arrays of one size), its text lines placed like subtitles, as
    [left, top, right, bottom] fractions of the frame."""
    import cv2

    height, width = frames[0].shape[:2]
    size_x = input_width(width)
    size_y = max(1, round(height * size_x / width))
    band = round(BAND_TOP * size_y)
    rows = size_y - band
    stride = rows + GAP
    stacked = np.zeros((-(-(stride * len(frames)) // 32) * 32, size_x, 3), np.uint8)
    for i, frame in enumerate(frames):
        resized = np.asarray(Image.fromarray(frame).resize((size_x, size_y), Image.Resampling.BILINEAR))
        stacked[i * stride:i * stride + rows] = resized[band:]
    probability = text_probability(stacked, threads)
    count, _, stats, _ = cv2.connectedComponentsWithStats((probability > PIXEL_THRESHOLD).astype(np.uint8))
    found: list[list[list[float]]] = [[] for _ in frames]
    for left, top, w, h, _ in stats[1:count]:
        which = (top + h // 2) // stride
        if which >= len(frames):
            continue
        top_in_frame = top - which * stride + band
        box = [left / size_x, top_in_frame / size_y, (left + w) / size_x, (top_in_frame + h) / size_y]
        centre_x, centre_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        if (centre_y > LOWER_PART and MIN_HEIGHT <= h / size_y <= MAX_HEIGHT and w / size_x >= MIN_WIDTH
                and w > h and abs(centre_x - 0.5) <= CENTRED):
            found[which].append([round(float(v), 4) for v in box])
    return found
