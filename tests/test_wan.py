"""The Wan backends end to end on the tiny preset (UniPC, as the real checkpoints), offline,
on the CPU: a two-scene project renders with `wan` (i2v, then flf2v) and with
`keyframe-scene`; shots have Wan's 4k+1 frame counts at the project fps, the film
assembles, each keyframe-scene shot starts on its keyframe (within the VAE's own
round-trip error, measured here), editing a shot of a scene redoes that scene only; bad
input and missing weights are messages that change nothing on disk. What `wan` draws is
checked against diffusers' pipeline in test_wan_parity.

Each render test is self-contained (no shared rendered fixture), so `pytest -n 2` never
renders the same thing on both workers.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from conftest import manifest_records
from test_render import CINEMA, cinema

from cinema_cli.assemble.ffmpeg import VideoWriter, ffmpeg_exe
from cinema_cli.assemble.probe import probe
from cinema_cli.errors import BackendError
from cinema_cli.pipeline import Pipeline
from cinema_cli.project.project import Project
from cinema_cli.runtime.tiny import build_tiny
from cinema_cli.video.base import EncodeSettings

SIZE, FPS = 64, 8
# (scene, caption, duration, transition): 8, 4, 8 and 6 frames asked; Wan makes 9, 5, 9, 5.
BEATS = {
    "hall": [("<Ada> walks in", 1.0, None), ("<Bo> turns around", 0.5, "continuous")],
    "yard": [("<Ada> throws a snowball", 1.0, None), ("<Bo> ducks", 0.75, None)],
}
FRAMES = {"s01": 9, "s02": 5, "s03": 9, "s04": 5}


def wan(mode: str) -> dict:
    return {"backend": "wan", "options": {"model": "tiny", "mode": mode, "steps": 2, "guidance": 1.0}}


@pytest.fixture(autouse=True)
def always_offline(offline):
    """Every test here runs offline (conftest.offline)."""


def new_project(parent: Path, video: dict) -> Path:
    cinema("new", "film", cwd=parent)
    root = parent / "film"
    scenes = [
        {"id": scene, "location": f"a {scene}", "time": "day", "beats": [
            {"text": text, "duration": seconds, **({"transition": t} if t else {})} for text, seconds, t in beats
        ]}
        for scene, beats in BEATS.items()
    ]
    script = {"title": "Two rooms", "style": "flat colours", "scenes": scenes, "characters": [
        {"name": "Ada", "description": "woman in a red coat"}, {"name": "Bo", "description": "man in a blue hat"}]}
    (root / "script.yaml").write_text(yaml.safe_dump(script, sort_keys=False))
    set_video(root, video)
    return root


def set_video(root: Path, video: dict) -> None:
    config = yaml.safe_load((root / "cinema.yaml").read_text())
    config.update(resolution={"width": SIZE, "height": SIZE}, fps=FPS, keyframes={"backend": "sketch"}, video=video)
    (root / "cinema.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


class Recorder:
    """A reporter that keeps what it was told."""

    def __init__(self):
        self.events: list[tuple] = []

    def stage(self, name, total):
        self.events.append(("stage", name, total))

    def item(self, stage, key, index, total):
        self.events.append(("item", stage, key))

    def step(self, done, total):
        self.events.append(("step", done, total))

    def item_done(self, stage, key):
        self.events.append(("done", stage, key))

    def notice(self, message):
        pass

    def steps_of(self, key: str) -> list[tuple[int, int]]:
        start = self.events.index(("item", "shots", key))
        steps = []
        for event in self.events[start + 1:]:
            if event[0] != "step":
                break
            steps.append(event[1:])
        return steps


def render(root: Path, reporter=None):
    return Pipeline(Project.open(root), reporter).run()


def decode_first(path: Path) -> np.ndarray:
    raw = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(path), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(SIZE, SIZE, 3).astype(np.float64)


def vae_round_trip(pipe, keyframe: Path) -> np.ndarray:
    """The keyframe through the tiny VAE alone (encode, decode), as 0-255 RGB."""
    from diffusers.pipelines.wan.pipeline_wan_i2v import retrieve_latents

    image = Image.open(keyframe).convert("RGB")
    pixels = pipe.video_processor.preprocess(image, height=SIZE, width=SIZE).unsqueeze(2)
    with torch.no_grad():
        latent = retrieve_latents(pipe.vae.encode(pixels), sample_mode="argmax")
        video = pipe.vae.decode(latent, return_dict=False)[0]
    frame = pipe.video_processor.postprocess_video(video, output_type="np")[0][0]
    return np.clip(frame, 0, 1) * 255.0


def h264(frame: np.ndarray, path: Path) -> np.ndarray:
    """A frame as a shot's first frame comes out of the project's H.264 encoding."""
    with VideoWriter(path, SIZE, SIZE, FPS, EncodeSettings()) as writer:
        writer.write((np.clip(frame, 0, 255) + 0.5).astype(np.uint8))
    return decode_first(path)


def check_shots(root: Path, tmp: Path, anchored: bool = False) -> None:
    """Frame counts, rate and size of every shot and of the film; when `anchored`, every
    shot starts on its keyframe as closely as the VAE reproduces that keyframe at all.

    The random tiny VAE reproduces pictures badly (tens of levels of error), so the sharp
    check is the first: the first frame *is* the keyframe's VAE round trip, through H.264
    (without the first-frame anchoring it is off by several levels)."""
    pipe = build_tiny("wan", kind="i2v")  # the same random VAE the backend used (fixed seed)
    for shot_id, frames in FRAMES.items():
        info = probe(root / "shots" / f"{shot_id}.mp4")
        assert (info.frames, info.fps, info.width, info.height) == (frames, FPS, SIZE, SIZE), shot_id
        if not anchored:
            continue
        keyframe = root / "keyframes" / f"{shot_id}.png"
        key = np.asarray(Image.open(keyframe).convert("RGB"), dtype=np.float64)
        round_trip = vae_round_trip(pipe, keyframe)
        coded = h264(round_trip, tmp / f"{shot_id}-round-trip.mp4")
        first = decode_first(root / "shots" / f"{shot_id}.mp4")
        assert np.abs(first - coded).mean() < 0.5, shot_id
        tolerance = np.abs(round_trip - key).mean() + np.abs(coded - round_trip).mean()
        assert np.abs(first - key).mean() <= tolerance + 0.5, (shot_id, tolerance)
    film = probe(root / "film.mp4")
    assert film.frames == sum(FRAMES.values())  # cuts and a continuous join: no overlap


def test_wan_i2v_then_flf2v(tmp_path):
    root = new_project(tmp_path, wan("i2v"))
    reporter = Recorder()
    result = render(root, reporter)
    assert result.rebuilt.shots == list(FRAMES) and result.rebuilt.film
    check_shots(root, tmp_path)
    # The snapped lengths are told, and each shot's bar counts its denoising steps.
    assert any("s01 8->9" in n and "s04 6->5" in n for n in result.notices), result.notices
    assert reporter.steps_of("s01") == [(1, 2), (2, 2)]
    manifest = manifest_records(root)
    assert manifest["shots"]["s01"]["recipe"]["next keyframe"] is None  # i2v reads no next keyframe

    # First-last-frame: s01 flows into s02 (continuous), so it also depends on keyframe s02.
    set_video(root, wan("flf2v"))
    result = render(root)
    assert result.rebuilt.shots == list(FRAMES) and result.rebuilt.keyframes == []
    check_shots(root, tmp_path)
    recipes = manifest_records(root)["shots"]
    assert recipes["s01"]["recipe"]["next keyframe"] is not None
    assert [s for s in FRAMES if recipes[s]["recipe"]["next keyframe"]] == ["s01"]


def test_scene_renders_jointly_and_an_edit_redoes_its_scene(tmp_path):
    root = new_project(tmp_path, {"backend": "keyframe-scene",
                                  "options": {"model": "tiny", "steps": 3, "guidance": 2.0}})
    reporter = Recorder()
    result = render(root, reporter)
    assert result.rebuilt.shots == list(FRAMES) and result.rebuilt.film
    check_shots(root, tmp_path, anchored=True)  # on UniPC, the anchoring holds
    # One bar per scene group, with the joint denoising steps.
    assert reporter.steps_of("scene hall (s01, s02)") == [(1, 3), (2, 3), (3, 3)]

    # Edit s02's length: its whole scene (s01, s02) is stale and says why; the yard is not.
    board = yaml.safe_load((root / "storyboard.yaml").read_text())
    board["shots"][1]["duration"] = 1.0
    (root / "storyboard.yaml").write_text(yaml.safe_dump(board, sort_keys=False))
    status = {s["id"]: s for s in Pipeline(Project.open(root)).status().to_json()["shots"]}
    assert status["s01"]["shot"] == "stale" and status["s01"]["stale_because"] == ["scene hall: shot s02 changed"]
    assert status["s02"]["shot"] == "stale" and "frames changed" in status["s02"]["stale_because"]
    assert status["s03"]["shot"] == status["s04"]["shot"] == "done"
    result = render(root)
    assert result.rebuilt.shots == ["s01", "s02"] and result.rebuilt.keyframes == []
    assert probe(root / "shots" / "s02.mp4").frames == 9


def test_ti2v_starts_on_its_keyframe_and_says_it_ignores_the_last(tmp_path):
    from cinema_cli.project.schema import Framing, Move, RuntimeSettings
    from cinema_cli.video.base import RenderPlan, ShotRequest
    from cinema_cli.video.wan import WanShotOptions, WanShots

    keyframe, following = tmp_path / "k1.png", tmp_path / "k2.png"
    rng = np.random.default_rng(0)
    for path in (keyframe, following):
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)
    backend = WanShots(WanShotOptions(model="tiny", mode="ti2v", steps=2, guidance=1.0))
    assert not backend.uses_next_keyframe  # so no shot is ever asked to end on the next keyframe
    plan = RenderPlan(width=SIZE, height=SIZE, fps=FPS, frames=(5,), runtime=RuntimeSettings(), continuous=1)
    assert any("ignores last_image" in n for n in backend.preflight(plan))
    request = ShotRequest("s01", "<Ada> walks in", keyframe, None, Framing.medium, Move.static, 5, FPS, SIZE, SIZE, 7)
    backend.render(request, tmp_path / "s01.mp4", EncodeSettings(), lambda done, total: None)
    assert probe(tmp_path / "s01.mp4").frames == 5
    # TI2V puts the keyframe's latent first itself (expand_timesteps): the round trip again.
    coded = h264(vae_round_trip(build_tiny("wan", kind="ti2v"), keyframe), tmp_path / "rt.mp4")
    assert np.abs(decode_first(tmp_path / "s01.mp4") - coded).mean() < 0.5


def test_out_of_memory_is_a_message_and_keeps_the_project(tmp_path, monkeypatch):
    from diffusers import WanImageToVideoPipeline

    root = new_project(tmp_path, {"backend": "wan", "options": {"model": "tiny", "steps": 2}})

    def exhausted(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(WanImageToVideoPipeline, "__call__", exhausted)
    expected = r"out of GPU memory while rendering shot s01.*try runtime: \{offload: model"
    with pytest.raises(BackendError, match=expected):
        render(root)
    assert list((root / "shots").iterdir()) == []
    assert list((root / ".cinema" / "tmp").iterdir()) == []
    manifest = manifest_records(root)
    assert "shots" not in manifest and len(manifest["keyframes"]) == 4  # what was finished is kept


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file's bytes, but the lock's (taking the lock creates the empty lock file)."""
    files = (p for p in sorted(root.rglob("*")) if p.is_file() and p != root / ".cinema" / "lock")
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


@pytest.mark.parametrize("options,code,message", [
    ({"model": "tiny", "mode": "t2v"}, 2, "video.options.mode"),
    ({"model": "cinema-tests/no-such-wan"}, 1, "huggingface-cli download cinema-tests/no-such-wan"),
], ids=["unknown-mode", "missing-weights"])
def test_bad_input_changes_nothing(tmp_path, options, code, message):
    root = new_project(tmp_path, {"backend": "wan", "options": options})
    before = snapshot(root)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"), "COLUMNS": "200"}
    result = subprocess.run([CINEMA, "render", "--json"], cwd=root, capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == code, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["exit_code"] == code and message in report["error"], report
    assert "Traceback" not in result.stderr, result.stderr
    assert snapshot(root) == before
