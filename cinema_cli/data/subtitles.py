"""Burned-in subtitles, found by a real text detector that runs offline.

The detector is PP-OCRv4's text-detection network (a DBNet) in ONNX, as shipped inside
the `rapidocr-onnxruntime` wheel and run by onnxruntime on the CPU: no download, no
recognition step (what the text says does not matter, only that it is there). A shot
has subtitles when the detector finds a text line where subtitles sit: in the lower
part of the keyframe, roughly centred, wider than it is tall. Text elsewhere (a shop
sign, a newspaper) is part of the picture and is left alone.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

DETECTOR = "ppocrv4-det-onnx-v1"
INPUT_WIDTH = 640  # the keyframe is resized to this width (a multiple of 32) for the detector
PIXEL_THRESHOLD = 0.3  # DBNet's text-probability threshold for a pixel
LOWER_PART = 0.55  # a subtitle's centre is below this fraction of the height
MIN_HEIGHT, MAX_HEIGHT = 0.025, 0.2  # a text line's height, as a fraction of the frame's
MIN_WIDTH = 0.15  # and its width (a frame counter or a sign is narrower)
CENTRED = 0.15  # its centre is within this fraction of the width from the middle


@cache
def _session():
    import onnxruntime
    import rapidocr_onnxruntime

    model = Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # films run in parallel processes; one thread each
    return onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def text_probability(image: Image.Image) -> np.ndarray:
    """DBNet's per-pixel text probability for `image` at INPUT_WIDTH wide."""
    height = max(32, round(image.height * INPUT_WIDTH / image.width / 32) * 32)
    pixels = np.asarray(image.convert("RGB").resize((INPUT_WIDTH, height), Image.Resampling.BILINEAR), np.float32)
    batch = ((pixels / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None]
    session = _session()
    return session.run(None, {session.get_inputs()[0].name: batch})[0][0, 0]


def subtitle_boxes(image: Image.Image) -> list[list[float]]:
    """Text lines placed like subtitles, as [left, top, right, bottom] fractions."""
    import cv2

    probability = text_probability(image)
    height, width = probability.shape
    count, _, stats, _ = cv2.connectedComponentsWithStats((probability > PIXEL_THRESHOLD).astype(np.uint8))
    boxes = []
    for left, top, w, h, _ in stats[1:count]:
        box = [left / width, top / height, (left + w) / width, (top + h) / height]
        centre_x, centre_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        if (centre_y > LOWER_PART and MIN_HEIGHT <= h / height <= MAX_HEIGHT and w / width >= MIN_WIDTH
                and w > h and abs(centre_x - 0.5) <= CENTRED):
            boxes.append([round(float(v), 4) for v in box])
    return boxes
