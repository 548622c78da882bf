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


# ---------------------------------------------------------------- captions from a local VLM

CAST = "characters:\n  - name: Ana\n    description: red raincoat\n"
ANA = {"caption": "A wide shot of <Ana> in a red raincoat under a cold light.", "characters": ["Ana"]}
ZED = {"caption": "<Zed> glares at the camera.", "characters": ["Zed"]}
CHAT = ("{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
        "{% else %}{{ c['text'] }}{% endif %}{% endfor %}\n{% endfor %}{% if add_generation_prompt %}assistant: "
        "{% endif %}")


def tiny_vlm(folder: Path) -> Path:
    """A LLaVA (one-layer CLIP vision tower, one-layer Llama) with random weights and a
    byte tokenizer built offline, plus one token per reply below (so `say` can make it
    answer a given reply), saved as a save_pretrained folder."""
    from cinema_cli.runtime.tiny import byte_tokenizer, seeded
    from cinema_cli.runtime.torch_compat import prepare_torch

    prepare_torch()
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    tokenizer = byte_tokenizer(specials=("<pad>", "</s>", "<unk>", "<image>"))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tokenizer.add_tokens([json.dumps(ANA), json.dumps(ZED)])
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, image_size=32, patch_size=8, projection_dim=16),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    with seeded(0):
        LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor = LlavaProcessor(CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                               tokenizer, patch_size=8, vision_feature_select_strategy="default", chat_template=CHAT,
                               num_additional_image_tokens=1)
    processor.save_pretrained(folder)
    return folder


def say(folder: Path, reply: dict | None) -> None:
    """Make the tiny model answer `reply` (its one token, biased up and ending the answer),
    or, with None, whatever its random weights produce."""
    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    config = GenerationConfig(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    if reply is not None:
        token = tokenizer.convert_tokens_to_ids(json.dumps(reply))
        config.sequence_bias = [[[token], 100.0]]
        config.eos_token_id = [token, tokenizer.eos_token_id]
    config.save_pretrained(folder)


@pytest.fixture(scope="module")
def lb(tmp_path_factory) -> Path:
    from data_support import make_letterboxed

    return make_letterboxed(tmp_path_factory.mktemp("vlm") / "lb.mp4")


def test_local_vlm_captions_through_generate_refused_tags_stay_pending_and_are_retried(lb, tmp_path):
    model = tiny_vlm(tmp_path / "vlm")
    root = tmp_path / "ds"
    write_config(root, **FAST, filters={"subtitles": False}, captions={"max_new_tokens": 16})
    cast = tmp_path / "cast.yaml"
    cast.write_text(CAST)
    args = ["data", "prepare", str(lb), "-o", str(root), "--captions", "local", "--local-model", str(model),
            "--cast", str(cast)]

    say(model, None)  # random weights: arbitrary bytes, not the JSON asked for
    entry = cinema_json(*args, rc=1)["films"]["lb"]
    assert entry["state"] == "pending" and entry["captions_pending"] == [0, 1]
    assert "the local vision-language model gave no valid keyframe caption" in entry["why"]
    assert "not valid JSON" in entry["why"]
    say(model, ZED)  # well-formed, but a tag outside the cast: refused as Gemini's would be
    entry = cinema_json(*args, rc=1)["films"]["lb"]
    assert entry["state"] == "pending" and "<Zed> outside the cast; allowed: <Ana>" in entry["why"]
    assert Dataset(root).shards("keyframes") == []  # nothing half-captioned is published

    say(model, ANA)
    entry = cinema_json(*args)["films"]["lb"]
    assert entry["state"] == "done" and "captions" in entry["worked"]
    assert [(s.caption, s.characters) for s in Dataset(root).keyframes()] == [(ANA["caption"], ["Ana"])] * 2
    [multishot] = Dataset(root).multishot()
    assert multishot.global_caption == ANA["caption"]  # the scene caption is the model's too
    assert cinema_json(*args)["films"]["lb"]["worked"] == []  # the same model: nothing asked again


def test_local_captions_without_a_vision_language_model_exit_2_before_writing(lb, tmp_path):
    from eval_support import tiny_dino

    root = tmp_path / "ds"
    write_config(root, **FAST)
    before = snapshot(root)
    for model, message in [(None, "captions.local_model is not set"), (tmp_path / "nope", "is not a folder"),
                           (tiny_dino(tmp_path / "dino"), "holds a 'dinov2' model, not a vision-language")]:
        flag = ["--local-model", str(model)] if model else []
        result = cinema("data", "prepare", str(lb), "-o", str(root), "--captions", "local", *flag, rc=2)
        assert message in result.stderr
        assert snapshot(root) == before


# ---------------------------------------------------------------- progress per shot


def test_prepare_shows_a_bar_per_film_with_its_shots_on_a_terminal(lb, tmp_path, monkeypatch):
    import io

    from rich.console import Console

    from cinema_cli.cli import output

    root = tmp_path / "ds"
    write_config(root, **FAST, filters={"subtitles": False})
    screen = io.StringIO()
    monkeypatch.setattr(output, "err", Console(file=screen, force_terminal=True, width=100))
    cinema("data", "prepare", str(lb), "-o", str(root))
    shown = screen.getvalue()
    assert "lb: keyframes (shots)" in shown and "2/2" in shown and "films" in shown and "lb: done" in shown
