"""The `interleaved` keyframe backend (causal mode) on the tiny FLUX.2 klein preset: with
no context it draws what the flux2 backend draws (one pair is plain klein); the context
pairs — their pictures, their own captions, their noise — change the keyframe; a project
plans with it end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from pydantic import ValidationError
from typer.testing import CliRunner

from cinema_cli.cli.app import app
from cinema_cli.keyframes.base import ContextFrame, KeyframeRequest
from cinema_cli.keyframes.flux2 import Flux2Keyframes, Flux2Options
from cinema_cli.keyframes.interleaved import InterleavedKeyframes, InterleavedOptions
from cinema_cli.project.schema import Framing, Move

WIDTH, HEIGHT, STEPS = 128, 64, 2


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("context")
    paths = []
    # A dark frame and a bright one: pictures a model cannot mistake for each other.
    for i, level in enumerate((20, 235)):
        path = folder / f"k{i}.png"
        noise = np.random.default_rng(i).integers(-15, 16, (HEIGHT, WIDTH, 3))
        Image.fromarray(np.clip(level + noise, 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def backend() -> InterleavedKeyframes:
    return InterleavedKeyframes(InterleavedOptions(model="tiny", steps=STEPS))


def request(context=(), caption="<Ada> opens the door", seed=7) -> KeyframeRequest:
    return KeyframeRequest(
        shot_id="s02", scene_id="hall", caption=caption, characters=(), framing=Framing.medium,
        move=Move.static, location="the hall", time_of_day="day", style="", width=WIDTH, height=HEIGHT,
        seed=seed, context=tuple(context),
    )


def frame(path: Path, caption: str, size=(HEIGHT, WIDTH)) -> ContextFrame:
    return ContextFrame("s01", path, 1.0, size, (size[0] // 16) * (size[1] // 16), caption)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


def draw(backend, req) -> np.ndarray:
    return pixels(backend.render(req, lambda done, total: None))


def test_without_context_it_draws_what_flux2_draws(backend):
    flux2 = Flux2Keyframes(Flux2Options(model="tiny", steps=STEPS))
    ours, theirs = draw(backend, request()), draw(flux2, request())
    assert ours.std() > 1  # a picture, not a flat field
    assert np.abs(ours - theirs).max() <= 1.0  # one 8-bit level: the same image


def test_same_request_same_image_and_the_context_matters(backend, frames):
    with_context = request([frame(frames[0], "<Ada> in a red coat")])
    first = draw(backend, with_context)
    assert np.array_equal(first, draw(backend, with_context))
    alone = draw(backend, request())
    other_picture = draw(backend, request([frame(frames[1], "<Ada> in a red coat")]))
    other_caption = draw(backend, request([frame(frames[0], "an empty street at night")]))
    # Drawing is deterministic, so any difference is the input's doing; a backend that
    # ignored its context would give exactly 0. (Random tiny weights mix pairs weakly.)
    for different in (alone, other_picture, other_caption):
        assert np.abs(first - different).mean() > 0.02


def test_context_noise_is_an_option_that_changes_the_context(frames):
    clean = InterleavedKeyframes(InterleavedOptions(model="tiny", steps=STEPS, context_noise=(0, 0)))
    noisy = InterleavedKeyframes(InterleavedOptions(model="tiny", steps=STEPS, context_noise=(900, 1000)))
    req = request([frame(frames[0], "<Ada> in a red coat")])
    assert np.abs(draw(clean, req) - draw(noisy, req)).mean() > 0.5
    with pytest.raises(ValidationError, match="context_noise"):
        InterleavedOptions(context_noise=(300, 100))


def test_a_project_plans_with_interleaved_keyframes(tmp_path):
    runner = CliRunner()
    root = tmp_path / "film"
    assert runner.invoke(app, ["new", str(root)]).exit_code == 0
    config = yaml.safe_load((root / "cinema.yaml").read_text())
    config.update(resolution={"width": WIDTH, "height": HEIGHT}, fps=8, video={"backend": "animatic"},
                  keyframes={"backend": "interleaved", "options": {"model": "tiny", "steps": STEPS}})
    (root / "cinema.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = runner.invoke(app, ["plan", "-p", str(root), "--json"])
    assert result.exit_code == 0, result.output
    shots = [p.stem for p in sorted((root / "keyframes").glob("*.png"))]
    assert len(shots) >= 2
    last = json.loads((root / "keyframes" / f"{shots[-1]}.json").read_text())
    assert last["backend"] == "interleaved" and last["context"]  # later keyframes extend earlier ones


def test_the_lora_file_is_an_input_of_every_keyframe(tmp_path):
    from cinema_cli.runtime.inputs import InputHasher, declared_inputs

    run = tmp_path / "run" / "lora"
    run.mkdir(parents=True)
    adapter = run / "pytorch_lora_weights.safetensors"
    adapter.write_bytes(b"first training")
    options = InterleavedOptions(model="tiny", lora=str(tmp_path / "run"))
    hasher = InputHasher(tmp_path / "hashes.json", tmp_path)
    first = declared_inputs(InterleavedKeyframes, options, tmp_path, hasher)
    adapter.write_bytes(b"retrained, same path")
    assert declared_inputs(InterleavedKeyframes, options, tmp_path, hasher) != first
    assert declared_inputs(InterleavedKeyframes, InterleavedOptions(model="tiny"), tmp_path, hasher) is None
