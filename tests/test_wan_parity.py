"""`wan` against diffusers' WanImageToVideoPipeline, and anchoring on UniPC.

The backend's frames (before the MP4) are compared with a pipeline built afresh from the
same tiny preset, called as diffusers documents it: same keyframe (and last frame), same
prompt, the shot's seed as the noise, same steps and guidance, UniPC as the real
checkpoints ship. Float32 on the CPU; max |Δ| <= 1e-4 in [0, 1] pixel units. Each test
also shows that what it compares matters (the keyframe, the last frame) by far more than
the tolerance, so a model that ignored it could not pass.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cinema_cli.project.schema import Framing, Move
from cinema_cli.runtime.tiny import build_tiny
from cinema_cli.runtime.tiny_wan import unipc
from cinema_cli.video.base import ShotRequest
from cinema_cli.video.prompting import shot_prompt
from cinema_cli.video.wan import WanShotOptions, WanShots
from cinema_cli.video.wan_model import anchor_prediction, latent_frames, on_path

TOLERANCE = 1e-4
SIZE, FRAMES, STEPS, GUIDANCE, SEED = 64, 9, 3, 3.0, 11
CAPTION = "<Ada> walks along the pier"


def keyframes(tmp_path):
    rng = np.random.default_rng(5)
    paths = []
    for name in ("first", "last", "other"):
        path = tmp_path / f"{name}.png"
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def request(keyframe, next_keyframe=None) -> ShotRequest:
    return ShotRequest("s01", CAPTION, keyframe, next_keyframe, Framing.close_up, Move.push_in, FRAMES, 8, SIZE,
                       SIZE, SEED)


def ours(mode: str, req: ShotRequest) -> np.ndarray:
    backend = WanShots(WanShotOptions(model="tiny", mode=mode, steps=STEPS, guidance=GUIDANCE))
    return backend.frames(req, lambda done, total: None)


def upstream(keyframe, last=None) -> np.ndarray:
    pipe = build_tiny("wan", kind="i2v")
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.scheduler).__name__ == "UniPCMultistepScheduler"
    shape = (1, 4, latent_frames(FRAMES), SIZE // 8, SIZE // 8)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        return pipe(image=Image.open(keyframe).convert("RGB"),
                    last_image=Image.open(last).convert("RGB") if last else None,
                    prompt=shot_prompt(CAPTION, Framing.close_up, Move.push_in), negative_prompt="", height=SIZE,
                    width=SIZE, num_frames=FRAMES, num_inference_steps=STEPS, guidance_scale=GUIDANCE, latents=noise,
                    output_type="np").frames[0]


def max_delta(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape == (FRAMES, SIZE, SIZE, 3)
    return float(np.abs(a - b).max())


def test_i2v_is_wan_image_to_video_pipeline(tmp_path):
    first, _, other = keyframes(tmp_path)
    mine = ours("i2v", request(first))
    assert max_delta(mine, upstream(first)) <= TOLERANCE
    assert max_delta(mine, ours("i2v", request(other))) > 100 * TOLERANCE  # the keyframe conditions it


def test_flf2v_is_wan_image_to_video_pipeline_with_last_image(tmp_path):
    first, last, other = keyframes(tmp_path)
    mine = ours("flf2v", request(first, last))
    assert max_delta(mine, upstream(first, last)) <= TOLERANCE
    # The last frame conditions the shot, so ignoring or swapping it could not pass.
    assert max_delta(mine, upstream(first)) > 100 * TOLERANCE
    # Which picture it is matters less to the random tiny model (5e-4 measured), still 4x
    # the tolerance: a backend passing the wrong keyframe as the last could not pass.
    assert max_delta(mine, ours("flf2v", request(first, other))) > 4 * TOLERANCE


def test_the_camera_directive_reaches_the_prompt_in_words():
    assert shot_prompt(CAPTION, Framing.close_up, Move.push_in) == (
        "Close-up. Ada walks along the pier. The camera slowly pushes in.")
    assert "pans left" in shot_prompt("x", Framing.wide, Move.pan_left)


def run_unipc(anchored_by: str, steps: int = 8):
    """A UniPC loop over a 3-frame latent with a random (but fixed) velocity model; frame 0
    is anchored to `clean` by the prediction or, as before, by replacing the sample after
    each step. Returns (frame 0 after every step, clean, noise, sigmas)."""
    scheduler = unipc()
    scheduler.set_timesteps(steps)
    gen = torch.Generator().manual_seed(0)
    clean = torch.randn((1, 4, 1, 2, 2), generator=gen)
    noise = torch.randn((1, 4, 3, 2, 2), generator=gen)
    weight = torch.randn((4, 4), generator=gen)
    latents = noise.clone()
    latents[:, :, :1] = on_path(clean, noise[:, :, :1], float(scheduler.sigmas[0]))
    trail = []
    for index, t in enumerate(scheduler.timesteps):
        velocity = torch.einsum("oc,bcfhw->bofhw", weight, latents).tanh() + float(t) / 1000
        sigma = float(scheduler.sigmas[index])
        if anchored_by == "prediction":
            velocity = anchor_prediction(velocity, latents, 0, clean, sigma)
        latents = scheduler.step(velocity, t, latents, return_dict=False)[0]
        trail.append(latents[:, :, :1].clone())  # where the solver put frame 0
        if anchored_by == "sample":
            latents[:, :, :1] = on_path(clean, noise[:, :, :1], float(scheduler.sigmas[index + 1]))
    return trail, clean, noise[:, :, :1], scheduler.sigmas


def test_anchoring_by_prediction_keeps_the_frame_on_its_path_under_unipc():
    trail, clean, noise, sigmas = run_unipc("prediction")
    for step, frame in enumerate(trail):
        expected = on_path(clean, noise, float(sigmas[step + 1]))
        torch.testing.assert_close(frame, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(trail[-1], clean, atol=1e-5, rtol=0)  # the keyframe's latent, exactly


def test_replacing_the_sample_is_undone_by_unipcs_corrector():
    """Why the anchoring moved into the prediction: UniPC's corrector rebuilds each sample
    from the one it stored before, so after a replaced sample the solver still puts frame 0
    off its path; only a replacement after the last step would survive."""
    trail, clean, noise, sigmas = run_unipc("sample")
    off = max(float((frame - on_path(clean, noise, float(sigmas[step + 1]))).abs().max())
              for step, frame in enumerate(trail))
    assert off > 1e-2


@pytest.mark.parametrize("mode", ["i2v", "flf2v"])
def test_a_text_to_video_checkpoint_is_refused_by_wan(tmp_path, mode):
    from cinema_cli.errors import BadInput
    from cinema_cli.project.schema import RuntimeSettings
    from cinema_cli.video.base import RenderPlan

    folder = tmp_path / "Wan2.2-T2V"
    build_tiny("wan", kind="t2v").save_pretrained(folder)
    backend = WanShots(WanShotOptions(model=str(folder), mode=mode))
    plan = RenderPlan(width=SIZE, height=SIZE, fps=8, frames=(FRAMES,), runtime=RuntimeSettings(device="cpu"))
    with pytest.raises(BadInput, match=r"is a text-to-video model .*transformer/config.json.*in_channels 4"):
        backend.preflight(plan)


def test_keyframe_scene_attends_with_its_scene_processors(tmp_path):
    """The joint render goes through the scene attention: the same scene with diffusers'
    plain processors put back comes out different."""
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor

    from cinema_cli.project.schema import RuntimeSettings
    from cinema_cli.video.base import SceneRequest
    from cinema_cli.video.scene import KeyframeSceneShots, SceneOptions
    from cinema_cli.video.scene_denoise import denoise_scene

    first, last, other = keyframes(tmp_path)
    shots = tuple(ShotRequest(f"s0{i}", CAPTION, key, None, Framing.medium, Move.static, 5, 8, SIZE, SIZE, i,
                              RuntimeSettings(device="cpu")) for i, key in enumerate((first, last, other)))
    request = SceneRequest("pier", "a pier", "dawn", "", "flat", (("Ada", "woman in red"),), shots)
    backend = KeyframeSceneShots(SceneOptions(model="tiny", steps=2, guidance=1.0))
    pipe, _ = backend.model.pipeline(shots[0].runtime)

    def run():
        return np.concatenate(denoise_scene(pipe, request, backend._scene, 2, 1.0, "", 1, "sdpa",
                                            lambda d, t: None, "keyframe-scene"))

    joint = run()
    pipe.transformer.set_attn_processor(WanAttnProcessor())
    assert np.abs(joint - run()).max() > 1e-3
