"""`cinema doctor --smoke`: the real keyframe and shot backends run end to end on their
tiny presets (random weights, offline) under this machine's runtime profile.

The interleaved model runs both ways: a keyframe extending one earlier keyframe (causal,
the context's K/V cached) and two keyframes drawn together (joint).

The keyframe is conditioned the way a plan conditions one: a context frame at its
GoldenMem size (under 64 px a side, which diffusers' own reference path refuses) and a
character's reference image as an identity anchor. Its picture then starts the tiny Wan
shot. A failure is a result with its message, not an exception: the doctor reports it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from cinema_cli.keyframes.base import CharacterLook, ContextFrame, KeyframeRequest, keyframe_backends
from cinema_cli.memory.goldenmem import schedule
from cinema_cli.project.schema import Framing, Move, RuntimeSettings
from cinema_cli.runtime.tiny import BUILTIN, TINY

WIDTH, HEIGHT, STEPS = 128, 64, 2
SHOT_SIZE, SHOT_FRAMES, FPS = 64, 5, 8


def smoke(runtime: RuntimeSettings) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="cinema-smoke-") as folder:
        keyframe = Path(folder) / "keyframe.png"
        results = [_timed("flux2 keyframe (tiny)", lambda: _keyframe(runtime, Path(folder), keyframe))]
        results.append(_timed("interleaved keyframes (tiny)", lambda: _interleaved(runtime, Path(folder))))
        if "wan" in BUILTIN and results[0]["ok"]:
            results.append(_timed("wan shot (tiny)", lambda: _shot(runtime, keyframe, Path(folder) / "shot.mp4")))
    return results


def _timed(name: str, run: Callable[[], str]) -> dict:
    started = time.monotonic()
    try:
        detail, ok = run(), True
    except Exception as err:  # noqa: BLE001 - a smoke test reports every failure as a result
        detail, ok = f"{type(err).__name__}: {err}", False
    return {"name": name, "ok": ok, "seconds": round(time.monotonic() - started, 2), "detail": detail}


def _keyframe(runtime: RuntimeSettings, folder: Path, out: Path) -> str:
    rng = np.random.default_rng(0)
    earlier, face = folder / "earlier.png", folder / "face.png"
    Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(earlier)
    Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(face)
    slots = schedule(HEIGHT, WIDTH, 2).context
    request = KeyframeRequest(
        shot_id="smoke", scene_id="smoke", caption="<Ada> looks out to sea", framing=Framing.medium,
        move=Move.static, location="a beach", time_of_day="dawn", style="flat colours", width=WIDTH, height=HEIGHT,
        seed=1, characters=(CharacterLook("Ada", "woman in a red coat", (face,)),), runtime=runtime,
        context=tuple(ContextFrame(shot, path, 1.0, slot.pixels, slot.tokens)
                      for (shot, path), slot in zip((("earlier", earlier), ("@Ada", face)), slots)),
    )
    backend_cls = keyframe_backends.get("flux2")
    steps: list[int] = []
    backend = backend_cls(backend_cls.Options(model=TINY, steps=STEPS))
    image = backend.render(request, lambda done, total: steps.append(done))
    if image.size != (WIDTH, HEIGHT) or steps != list(range(1, STEPS + 1)):
        raise RuntimeError(f"made a {image.size[0]}x{image.size[1]} image in steps {steps}")
    image.save(out)
    sizes = " and ".join(f"{h}x{w}" for h, w in (slot.pixels for slot in slots))
    return f"{WIDTH}x{HEIGHT}, {STEPS} steps, a context frame and an identity anchor at {sizes}"


def _interleaved(runtime: RuntimeSettings, folder: Path) -> str:
    earlier = folder / "before.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(earlier)
    slot = schedule(HEIGHT, WIDTH, 1).context[0]
    base = dict(scene_id="smoke", framing=Framing.medium, move=Move.static, location="a beach", time_of_day="dawn",
                style="flat colours", width=WIDTH, height=HEIGHT, characters=(), runtime=runtime)
    first = KeyframeRequest(shot_id="a", caption="a lighthouse at dawn", seed=1, **base)
    second = KeyframeRequest(shot_id="b", caption="the lamp room, close", seed=2, **base)
    backend_cls = keyframe_backends.get("interleaved")
    causal = backend_cls(backend_cls.Options(model=TINY, steps=STEPS))
    extended = causal.render(replace(second, context=(
        ContextFrame("a", earlier, 1.0, slot.pixels, slot.tokens, "a lighthouse at dawn"),)), lambda done, total: None)
    joint = backend_cls(backend_cls.Options(model=TINY, steps=STEPS, mode="joint"))
    drawn = joint.render_group([first, second], lambda done, total: None)
    sizes = {image.size for image in (extended, *drawn)}
    if sizes != {(WIDTH, HEIGHT)} or len(drawn) != 2:
        raise RuntimeError(f"made {len(drawn) + 1} images of sizes {sorted(sizes)}")
    return (f"{WIDTH}x{HEIGHT}, {STEPS} steps: causal after a context pair at {slot.pixels[0]}x{slot.pixels[1]}, "
            "and 2 keyframes drawn jointly")


def _shot(runtime: RuntimeSettings, keyframe: Path, out: Path) -> str:
    from cinema_cli.assemble.probe import probe
    from cinema_cli.video.base import EncodeSettings, ShotRequest, shot_backends

    Image.open(keyframe).resize((SHOT_SIZE, SHOT_SIZE)).save(keyframe)
    request = ShotRequest(
        shot_id="smoke", caption="Ada looks out to sea", keyframe=keyframe, next_keyframe=None,
        framing=Framing.medium, move=Move.static, frames=SHOT_FRAMES, fps=FPS, width=SHOT_SIZE, height=SHOT_SIZE,
        seed=1, runtime=runtime,
    )
    backend_cls = shot_backends.get("wan")
    backend_cls(backend_cls.Options(model=TINY, steps=STEPS, guidance=1.0)).render(
        request, out, EncodeSettings(), lambda done, total: None)
    frames = probe(out).frames
    if frames != SHOT_FRAMES:
        raise RuntimeError(f"the shot has {frames} frames, {SHOT_FRAMES} were asked for")
    return f"{SHOT_SIZE}x{SHOT_SIZE}, {SHOT_FRAMES} frames at {FPS} fps, {STEPS} steps"
