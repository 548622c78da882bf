"""`cinema data` with models: subtitles found on several frames of a shot, the LAION
aesthetic filter (eval aesthetic's predictor on the tiny open_clip model), and captions
from a local vision-language model (a tiny random-weight one, built offline)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cinema_cli.data import subtitles
from cinema_cli.data.reader import Dataset
from data_support import make_film, subtitle_png
from eval_support import tiny_aesthetic
from test_data import cinema, cinema_json, snapshot, steps, write_config

FAST = {"boundaries": {"detector": "scenedetect"}, "keyframes": {"short_side": 64}}


@pytest.fixture(scope="module")
def film(tmp_path_factory) -> Path:
    return make_film(tmp_path_factory.mktemp("models") / "film.mp4")


# ---------------------------------------------------------------- subtitles on several frames


def test_subtitles_are_found_on_the_frame_that_has_them_and_only_there(tmp_path):
    rng = np.random.default_rng(0)
    frames = [np.clip(rng.normal(110, 30, (80, 160, 3)), 0, 255).astype(np.uint8) for _ in range(5)]
    text = Image.open(subtitle_png(tmp_path / "sub.png", 160, 80))
    picture = Image.fromarray(frames[3])
    picture.paste(text, (0, 0), text)
    frames[3] = np.asarray(picture)
    found = subtitles.subtitle_boxes(frames)
    assert [bool(boxes) for boxes in found] == [False, False, False, True, False]
    [[left, top, right, bottom]] = found[3]
    assert 0.75 < (top + bottom) / 2 < 0.95 and right - left > 0.5  # where the text was drawn


# ---------------------------------------------------------------- the aesthetic filter


def test_aesthetic_filter_drops_exactly_the_keyframes_scored_below_the_threshold(film, tmp_path):
    from cinema_cli.eval.aesthetic import AestheticPredictor, scores
    from cinema_cli.eval.features import Cache, load_clip

    root = tmp_path / "ds"
    tiny_aesthetic(tmp_path / "predictor.pth")
    (root).mkdir()
    (root / "predictor.pth").write_bytes((tmp_path / "predictor.pth").read_bytes())
    aesthetic = {"weights": "predictor.pth", "min_score": -1e9, "clip_model": "cinema-tiny-clip",
                 "clip_weights": "random"}
    write_config(root, **FAST, filters={"subtitles": False, "aesthetic": aesthetic})

    def run() -> dict:
        return cinema_json("data", "prepare", str(film), "-o", str(root))["films"]["film"]

    assert "aesthetic" in run()["worked"]
    scored = {int(k): v for k, v in steps(root, "film", "aesthetic").items()}
    frames = steps(root, "film", "frames")
    # The stored scores are the predictor's on each keyframe, through the tiny CLIP.
    images = [np.asarray(Image.open(root / "films" / "film" / s["keyframe"]).convert("RGB")) for s in frames]
    clip = load_clip("cinema-tiny-clip", "random", root, "cpu", Cache(None, None))
    expected = scores(AestheticPredictor(str(root / "predictor.pth")), clip, images)
    assert [scored[s["index"]] for s in frames] == pytest.approx(expected.tolist(), abs=1e-3)
    assert len(set(scored.values())) == len(scored)  # a broken scorer would be flat

    threshold = float(np.median(list(scored.values())))
    write_config(root, filters={"aesthetic": {**aesthetic, "min_score": threshold}})
    assert run()["worked"] == ["filters", "samples", "shards"]  # judged again, not scored again
    judged = steps(root, "film", "filters")
    dropped = {s["index"] for s, j in zip(frames, judged) if "aesthetic" in j["reasons"]}
    assert dropped == {i for i, score in scored.items() if score < threshold} and dropped
    assert cinema_json("data", "status", str(root))["dropped"]["aesthetic"] == len(dropped)
    kept = [s for s in Dataset(root).keyframes()]
    assert all(s.filters["aesthetic"] >= threshold for s in kept)


def test_aesthetic_weights_missing_or_of_the_wrong_width_exit_2_before_writing(film, tmp_path):
    root = tmp_path / "ds"
    aesthetic = {"weights": "nope.pth", "min_score": 5, "clip_model": "cinema-tiny-clip", "clip_weights": "random"}
    write_config(root, **FAST, filters={"aesthetic": aesthetic})
    before = snapshot(root)
    assert "no such file" in cinema("data", "prepare", str(film), "-o", str(root), rc=2).stderr
    assert snapshot(root) == before
    tiny_aesthetic(root / "wide.pth", width=768)
    write_config(root, filters={"aesthetic": {**aesthetic, "weights": "wide.pth"}})
    before = snapshot(root)
    error = cinema("data", "prepare", str(film), "-o", str(root), rc=2).stderr
    assert "768-wide" in error and "gives 32" in error
    assert snapshot(root) == before
