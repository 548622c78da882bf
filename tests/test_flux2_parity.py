"""flux2 against diffusers' own klein pipelines, on the tiny presets, float32, CPU.

Same components, seed, size, steps and guidance: the keyframe cinema draws is the image
upstream draws, to max |Δ| <= 1e-4 in [0, 1] pixel units (float32 accumulates ~1e-6 here;
the bound leaves room for other BLAS builds, and a model or schedule difference moves
pixels by 1e-2 and more). References are >= 64 px and multiples of 16, the sizes upstream
accepts unchanged; under that size upstream refuses or crops them, which is the one place
cinema deliberately differs (they are encoded at exactly their size; test_flux2 checks
that).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from cinema_cli.keyframes.flux2 import Flux2Keyframes, Flux2Options
from cinema_cli.keyframes.flux2_denoise import Job, checkpoint_defaults, generate, text_layers, use_kv_processors
from cinema_cli.project.schema import RuntimeSettings
from cinema_cli.runtime.tiny import build_tiny

TOLERANCE = 1e-4
WIDTH, HEIGHT, SEED = 128, 64, 3
PROMPT = "Medium shot. Ada (woman in a red coat) waves from the pier."


def pipeline(kind: str):
    """The reference: diffusers' klein pipeline built afresh from the preset."""
    pipe = build_tiny("flux2", kind=kind)
    use_kv_processors(pipe.transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def backend_pipeline(kind: str):
    """The pipeline as the flux2 backend loads it (`model: tiny`, `tiny-kv`, `tiny-base`)."""
    model = "tiny" if kind == "klein" else f"tiny-{kind}"
    return Flux2Keyframes(Flux2Options(model=model))._pipeline(RuntimeSettings(device="cpu"))[0]


def reference_images() -> list[Image.Image]:
    rng = np.random.default_rng(4)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((64, 128), (96, 64))]


def ours(pipe, mode: str, steps: int, guidance: float, refs: list[Image.Image]) -> np.ndarray:
    job = Job(prompt=PROMPT, references=tuple((image, (image.height, image.width)) for image in refs),
              width=WIDTH, height=HEIGHT, steps=steps, guidance=guidance, seed=SEED, mode=mode)
    return generate(pipe, job, lambda done, total: None)


def upstream(pipe, steps: int, refs: list[Image.Image], **kwargs) -> np.ndarray:
    with torch.no_grad():
        return pipe(image=refs or None, prompt=PROMPT, height=HEIGHT, width=WIDTH, num_inference_steps=steps,
                    generator=torch.Generator("cpu").manual_seed(SEED), output_type="np",
                    text_encoder_out_layers=text_layers(pipe), **kwargs).images[0]


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= TOLERANCE, np.abs(a - b).max()


def test_joint_is_flux2_klein_pipeline_with_references():
    pipe, refs = backend_pipeline("klein"), reference_images()
    mine = ours(pipe, "joint", 3, 1.0, refs)
    assert_same(mine, upstream(pipeline("klein"), 3, refs))
    # The references matter, so the equality is about them too.
    assert np.abs(mine - ours(pipe, "joint", 3, 1.0, [])).max() > 100 * TOLERANCE


def test_kv_is_flux2_klein_kv_pipeline():
    pipe, refs = backend_pipeline("kv"), reference_images()
    assert type(pipe).__name__ == "Flux2KleinKVPipeline"
    mine = ours(pipe, "kv", 3, 1.0, refs)
    assert_same(mine, upstream(pipeline("kv"), 3, refs))
    assert np.abs(mine - ours(pipe, "kv", 3, 1.0, [])).max() > 100 * TOLERANCE
    # Same without the cache (recomputed every step): the cache changes nothing.
    job = Job(prompt=PROMPT, references=tuple((i, (i.height, i.width)) for i in refs), width=WIDTH, height=HEIGHT,
              steps=3, guidance=1.0, seed=SEED, mode="kv")
    assert_same(generate(pipe, replace(job, cache=False), lambda d, t: None), mine)


def test_guided_base_checkpoint_is_upstream_with_guidance():
    pipe, refs = backend_pipeline("base"), reference_images()
    assert not pipe.config.is_distilled
    mine = ours(pipe, "joint", 4, 3.5, refs)
    assert_same(mine, upstream(pipeline("base"), 4, refs, guidance_scale=3.5))
    # Guidance is applied (a base checkpoint), so 3.5 differs from none.
    assert np.abs(mine - ours(pipe, "joint", 4, 1.0, refs)).max() > 100 * TOLERANCE


def test_each_checkpoint_gets_its_own_steps_and_guidance():
    assert checkpoint_defaults(pipeline("klein"), None, None) == (4, 1.0)
    assert checkpoint_defaults(pipeline("kv"), None, None) == (4, 1.0)
    assert checkpoint_defaults(pipeline("base"), None, None) == (50, 4.0)
    assert checkpoint_defaults(pipeline("base"), 20, 3.0) == (20, 3.0)  # cinema.yaml wins


def test_kv_checkpoints_render_through_the_backend(tmp_path):
    """The whole backend on a KV checkpoint: `auto` picks the cache, and the decode that
    used to crash after the denoise makes the keyframe."""
    from test_flux2 import request

    backend = Flux2Keyframes(Flux2Options(model="tiny-kv", steps=2))
    image = backend.render(request(tmp_path), lambda done, total: None)
    assert backend._mode(backend._pipeline(request(tmp_path).runtime)[0]) == "kv"
    assert image.size == (request(tmp_path).width, request(tmp_path).height)
    assert np.asarray(image).std() > 1.0


def test_an_unknown_tiny_preset_is_named():
    from cinema_cli.errors import BadInput

    with pytest.raises(BadInput, match="tiny-xl is not a tiny preset"):
        Flux2Keyframes(Flux2Options(model="tiny-xl"))._load(None)
