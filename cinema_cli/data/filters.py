"""Which shots a dataset keeps, each drop with its reason.

Every shot is measured (length, brightness, detail, subtitles, and its aesthetic score
when a predictor is given) and every rule that fails is recorded, so `status` can count
reasons and a changed threshold is re-judged from the measurements without decoding or
scoring again. `near_duplicate` is judged last, against
the keyframes kept so far in the film (the memory module's edge signature: a repeated
set-up, not two dark rooms); it only drops the keyframe sample, since a repeated angle
is ordinary inside a video sequence (shot / reverse shot).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cinema_cli.data.config import FilterSettings
from cinema_cli.memory.signature import image_signature

REASONS = ("too_short", "too_dark", "flat", "subtitles", "aesthetic", "near_duplicate")
KEYFRAME_ONLY = {"near_duplicate"}  # reasons that keep a shot usable inside video samples


def judge(shots: list[dict], keyframes: list[Path], subtitles: dict[int, dict], aesthetic: dict[int, float],
          settings: FilterSettings) -> list[dict]:
    """Per shot: {"reasons": [...], "kept": bool, "video_ok": bool, "duplicate_of": int|None, "similarity"}."""
    results = []
    kept_signatures: list[tuple[int, np.ndarray]] = []
    for shot, path in zip(shots, keyframes):
        reasons = []
        if shot["end"] - shot["start"] < settings.min_seconds:
            reasons.append("too_short")
        if shot["luma"] < settings.dark_luma:
            reasons.append("too_dark")
        if shot["detail"] < settings.flat_detail or shot["contrast"] < settings.flat_contrast:
            reasons.append("flat")
        if settings.subtitles and subtitles.get(shot["index"]):
            reasons.append("subtitles")
        if settings.aesthetic is not None and aesthetic[shot["index"]] < settings.aesthetic.min_score:
            reasons.append("aesthetic")
        result = {"reasons": reasons, "duplicate_of": None, "similarity": None}
        if not reasons:
            signature = image_signature(path)
            best = max(((float(signature @ other), index) for index, other in kept_signatures), default=None)
            if best is not None and best[0] >= settings.duplicate_threshold:
                reasons.append("near_duplicate")
                result.update(duplicate_of=best[1], similarity=round(best[0], 4))
            else:
                kept_signatures.append((shot["index"], signature))
        result["kept"] = not reasons
        result["video_ok"] = all(reason in KEYFRAME_ONLY for reason in reasons)
        results.append(result)
    return results
