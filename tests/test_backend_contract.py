"""The contract every registered keyframe and shot backend keeps (as diffusers'
PipelineTesterMixin does for pipelines), run over each registry on the options in
conftest.TEST_OPTIONS (tiny presets on the CPU):

- the same request gives the same output (the seed decides the noise);
- preflight writes nothing;
- a shot has exactly the frames asked for (after the backend's own snapping);
- the output depends on the inputs the backend claims: the caption, the seed, the
  keyframe it starts from.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import TEST_OPTIONS, registered

from cinema_cli.assemble.probe import probe
from cinema_cli.keyframes.base import CharacterLook, KeyframePlan, KeyframePreflight, KeyframeRequest, keyframe_backends
from cinema_cli.project.schema import Framing, Move, RuntimeSettings
from cinema_cli.video.base import (
    EncodeSettings,
    FrameSnapping,
    GroupShotBackend,
    Preflight,
    RenderPlan,
    SceneRequest,
    ShotRequest,
    shot_backends,
)

W, H, FPS = 64, 64, 8
CPU = RuntimeSettings(device="cpu")
ENCODE = EncodeSettings()

pytestmark = pytest.mark.usefixtures("offline")


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """The tests run in their own folder, so `preflight wrote nothing` is checked there too."""
    monkeypatch.chdir(tmp_path)


def tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_every_registered_backend_has_test_options():
    assert set(registered("keyframes")) == set(TEST_OPTIONS["keyframes"])
    assert set(registered("video")) == set(TEST_OPTIONS["video"])


# ---------------------------------------------------------------- keyframes


def keyframe_request(tmp_path: Path, noise_image, **changes) -> KeyframeRequest:
    face = noise_image(tmp_path / "face.png", 40, 48, seed=3)
    request = KeyframeRequest(
        shot_id="s01", scene_id="hall", caption="<Ada> waves from the stairs", framing=Framing.medium,
        move=Move.static, location="a hall", time_of_day="day", style="ink", width=W, height=H, seed=7,
        characters=(CharacterLook("Ada", "woman in a red coat", (face,)),), runtime=CPU,
    )
    return replace(request, **changes)


@pytest.mark.parametrize("name", registered("keyframes"))
def test_keyframe_backend_contract(name, tmp_path, noise_image):
    cls = keyframe_backends.get(name)
    backend = cls(cls.Options.model_validate(TEST_OPTIONS["keyframes"][name]))

    def draw(**changes) -> np.ndarray:
        image = backend.render(keyframe_request(tmp_path, noise_image, **changes), lambda done, total: None)
        return np.asarray(image.convert("RGB"))

    first = draw()
    assert first.shape == (H, W, 3) and first.std() > 0
    assert np.array_equal(first, draw()), "same request, same seed: same image"
    assert not np.array_equal(first, draw(caption="<Ada> runs out into the rain")), "the caption is ignored"
    assert not np.array_equal(first, draw(seed=8)), "the seed is ignored"

    if isinstance(backend, KeyframePreflight):
        before = tree(tmp_path)
        backend.preflight(KeyframePlan(W, H, CPU))
        assert tree(tmp_path) == before, "preflight wrote something"


# ---------------------------------------------------------------- shots


def shot_request(tmp_path: Path, noise_image, shot_id: str, frames: int, **changes) -> ShotRequest:
    keyframe = noise_image(tmp_path / f"{shot_id}.png", W, H, seed=int(shot_id[1:]))
    nxt = noise_image(tmp_path / f"{shot_id}-next.png", W, H, seed=50 + int(shot_id[1:]))
    request = ShotRequest(
        shot_id=shot_id, caption=f"<Ada> walks, shot {shot_id}", keyframe=keyframe, next_keyframe=nxt,
        framing=Framing.wide, move=Move.push_in, frames=frames, fps=FPS, width=W, height=H,
        seed=11 + int(shot_id[1:]), runtime=CPU,
    )
    return replace(request, **changes)


def decoded(path: Path) -> np.ndarray:
    from cinema_cli.assemble.ffmpeg import read_frames

    return np.stack(list(read_frames(path, W, H)))


@pytest.mark.parametrize("name", registered("video"))
def test_shot_backend_contract(name, tmp_path, noise_image):
    cls = shot_backends.get(name)
    backend = cls(cls.Options.model_validate(TEST_OPTIONS["video"][name]))
    asked = (5, 3)  # frames asked of two shots (duration x fps)
    frames = [backend.frames_for(n) if isinstance(backend, FrameSnapping) else n for n in asked]

    def render(tag: str, **changes) -> list[np.ndarray]:
        requests = [shot_request(tmp_path, noise_image, f"s{i + 1}", n, **changes) for i, n in enumerate(frames)]
        outs = [tmp_path / f"{tag}-{r.shot_id}.mp4" for r in requests]
        if isinstance(backend, GroupShotBackend):
            scene = SceneRequest(scene_id="hall", location="a hall", time_of_day="day", description="",
                                 style="ink", cast=(("Ada", "woman in a red coat"),), shots=tuple(requests))
            backend.render_group(scene, outs, ENCODE, lambda done, total: None)
        else:
            for request, out in zip(requests, outs):
                backend.render(request, out, ENCODE, lambda done, total: None)
        for out, n in zip(outs, frames):
            info = probe(out)
            assert (info.frames, info.width, info.height) == (n, W, H), (out.name, info)
        return [decoded(out) for out in outs]

    first = render("a")
    assert all(np.array_equal(a, b) for a, b in zip(first, render("b"))), "same request: same video"
    if name != "animatic":  # previz moves the keyframe's pixels; it draws no caption
        changed = render("c", caption="<Ada> falls asleep")
        assert not np.array_equal(first[0], changed[0]), "the caption is ignored"
    if getattr(backend, "reads_keyframe", True):  # HoloCine is text-to-video
        moved = render("d", keyframe=noise_image(tmp_path / "other.png", W, H, seed=99))
        assert not np.array_equal(first[0], moved[0]), "the keyframe is ignored"

    if isinstance(backend, Preflight):
        before = tree(tmp_path)
        backend.preflight(RenderPlan(width=W, height=H, fps=FPS, frames=tuple(frames), runtime=CPU))
        assert tree(tmp_path) == before, "preflight wrote something"
