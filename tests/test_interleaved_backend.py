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
    first = declared_inputs(InterleavedKeyframes, options, options, hasher)
    adapter.write_bytes(b"retrained, same path")
    assert declared_inputs(InterleavedKeyframes, options, options, hasher) != first
    plain = InterleavedOptions(model="tiny")
    assert declared_inputs(InterleavedKeyframes, plain, plain, hasher) is None


def test_a_relative_lora_is_the_projects_whatever_the_working_directory(tmp_path, monkeypatch):
    from cinema_cli.runtime.inputs import resolve_file_options

    (tmp_path / "film" / "run" / "lora").mkdir(parents=True)
    (tmp_path / "film" / "run" / "lora" / "pytorch_lora_weights.safetensors").write_bytes(b"trained")
    monkeypatch.chdir(tmp_path)
    options = resolve_file_options(InterleavedOptions(model="tiny", lora="run"), tmp_path / "film")
    assert options.lora == str(tmp_path / "film" / "run")
    assert InterleavedKeyframes.input_files(options)["lora"].is_file()
    assert resolve_file_options(InterleavedOptions(model="tiny", lora="~/run"), tmp_path).lora == \
        str(Path("~/run").expanduser())


# ---------------------------------------------------------------- joint mode


def test_joint_mode_of_one_keyframe_is_plain_klein_and_keyframes_drawn_together_see_each_other():
    joint = InterleavedKeyframes(InterleavedOptions(model="tiny", steps=STEPS, mode="joint",
                                                    context_caption_tokens=512))
    flux2 = Flux2Keyframes(Flux2Options(model="tiny", steps=STEPS))
    alone = pixels(joint.render_group([request()], lambda done, total: None)[0])
    assert alone.std() > 1 and np.abs(alone - draw(flux2, request())).max() <= 1.0

    first, second = request(), request(caption="<Ada> climbs the stairs", seed=8)
    pair = [pixels(i) for i in joint.render_group([first, second], lambda done, total: None)]
    again = joint.render_group([first, second], lambda done, total: None)
    assert all(np.array_equal(a, pixels(b)) for a, b in zip(pair, again))
    changed = pixels(joint.render_group([first, request(caption="an empty street at night", seed=8)],
                                        lambda done, total: None)[0])
    # The first keyframe's own inputs are the same in all three: only its partner moved it.
    assert np.abs(pair[0] - alone).mean() > 0.02 and np.abs(pair[0] - changed).mean() > 0.02


def test_joint_groups_are_scenes_split_to_the_trained_context():
    from cinema_cli.project.schema import Storyboard

    board = Storyboard.model_validate({"shots": [
        {"id": f"s{i}", "scene": scene, "caption": "a"} for i, scene in enumerate("aaaaabba")]})
    groups = InterleavedKeyframes(InterleavedOptions(mode="joint", max_pairs=2)).groups(board)
    assert groups == [["s0", "s1"], ["s2"], ["s3", "s4"], ["s5", "s6"], ["s7"]]
    assert InterleavedKeyframes(InterleavedOptions(mode="joint")).groups(board)[0] == [f"s{i}" for i in range(5)]
    assert InterleavedKeyframes(InterleavedOptions()).groups(board) is None  # causal: one at a time
    assert "max_pairs" not in InterleavedOptions().model_dump(mode="json")  # causal recipes unchanged


def test_joint_mode_draws_each_scene_as_one_artifact_group_with_exact_staleness(tmp_path):
    runner = CliRunner()
    root = tmp_path / "film"
    assert runner.invoke(app, ["new", str(root)]).exit_code == 0
    config = yaml.safe_load((root / "cinema.yaml").read_text())
    config.update(resolution={"width": WIDTH, "height": HEIGHT}, fps=8, video={"backend": "animatic"},
                  keyframes={"backend": "interleaved", "options": {"model": "tiny", "steps": STEPS, "mode": "joint"}})
    (root / "cinema.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def plan() -> list[str]:
        result = runner.invoke(app, ["plan", "-p", str(root), "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["rebuilt"]["keyframes"]

    def status() -> dict[str, tuple[str, list[str]]]:
        result = runner.invoke(app, ["status", "-p", str(root), "--json"])
        return {s["id"]: (s["keyframe"], s["stale_because"]) for s in json.loads(result.stdout)["shots"]}

    def png(shot: str) -> bytes:
        return (root / "keyframes" / f"{shot}.png").read_bytes()

    plan()
    board = yaml.safe_load((root / "storyboard.yaml").read_text())
    scenes: dict[str, list[str]] = {}
    for shot in board["shots"]:
        scenes.setdefault(shot["scene"], []).append(shot["id"])
    assert len(scenes) >= 2 and all(len(ids) >= 2 for ids in scenes.values())
    (first, *rest), other = list(scenes.values())[0], [i for ids in list(scenes.values())[1:] for i in ids]
    for ids in scenes.values():
        for shot in ids:
            sidecar = json.loads((root / "keyframes" / f"{shot}.json").read_text())
            assert sidecar["drawn_with"] == ids and sidecar["context"] == []
    assert all(state == "done" for state, _ in status().values())
    kept = {shot: png(shot) for shot in other}

    # One member's caption edited: its whole group is stale, and only that group is redrawn.
    board["shots"][0]["caption"] = "A red kite over " + board["shots"][0]["caption"]
    (root / "storyboard.yaml").write_text(yaml.safe_dump(board, sort_keys=False))
    now = status()
    assert now[first] == ("stale", ["caption changed"])
    assert all(now[shot] == ("stale", [f"drawn with {first}, which changed"]) for shot in rest)
    assert all(now[shot] == ("done", []) for shot in other)
    before = {shot: png(shot) for shot in rest}
    assert plan() == [first, *rest]
    assert all(png(shot) != before[shot] for shot in rest)  # redrawn beside the new caption
    assert {shot: png(shot) for shot in other} == kept

    # A member lost: the others it was drawn with are redrawn with it.
    (root / "keyframes" / f"{rest[0]}.png").unlink()
    assert status()[first] == ("stale", [f"drawn with {rest[0]}, whose keyframe is missing"])
    assert plan() == [first, *rest] and plan() == []


def test_a_lora_for_another_architecture_is_refused_before_anything_is_written(tmp_path):
    import torch
    from safetensors.torch import save_file

    runner = CliRunner()
    root = tmp_path / "film"
    assert runner.invoke(app, ["new", str(root)]).exit_code == 0
    other = tmp_path / "other.safetensors"  # a wider model's projection
    save_file({"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(4, 96),
               "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.zeros(96, 4)}, other)
    config = yaml.safe_load((root / "cinema.yaml").read_text())
    config.update(keyframes={"backend": "interleaved", "options": {"model": "tiny", "lora": str(other)}})
    (root / "cinema.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    result = runner.invoke(app, ["plan", "-p", str(root)])
    assert result.exit_code == 2, result.output
    assert "does not fit this transformer" in result.stderr and "has shape [4, 96]" in result.stderr
    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != "lock"}
    assert after == before  # (the empty lock file is how `plan` took the project's lock)
