"""One HoloCine scene: the whole group of shots denoised as one text-to-video clip by
Wan2.2-T2V-A14B's two experts carrying HoloCine's DiTs, then cut back into shots.

As HoloCine's inference runs it: the scene prompt encoded once (`holocine_prompt`), the
noise of the whole 4t+1-frame video, flow matching with shift 5 over 1 -> 0 in `steps`
Euler steps, the high-noise expert while the timestep is >= 0.875 x 1000 and the
low-noise one after, classifier-free guidance against the negative prompt. Every
transformer call of the positive prompt uses the window cross-attention; the negative
prompt sees its whole text. The sparse variant's self-attention (each shot's own tokens
plus the first latent frame of every shot) applies to both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cinema_cli.attention.layout import PromptLayout, ShotLayout
from cinema_cli.attention.processors import SceneAttention
from cinema_cli.video.base import StepProgress
from cinema_cli.video.holocine_prompt import TEXT_TOKENS, cut_frames, latent_cuts, scene_prompt, text_windows
from cinema_cli.video.wan_model import TEMPORAL, decode

SHIFT = 5.0  # HoloCine's sigma shift
BOUNDARY = 0.875  # of the training timesteps: the switch to the low-noise expert


@dataclass(frozen=True)
class SceneJob:
    global_caption: str
    shot_captions: tuple[str, ...]
    shot_frames: tuple[int, ...]  # each a multiple of 4
    width: int
    height: int
    seed: int
    steps: int
    guidance: float
    negative_prompt: str
    sparse: bool
    kernel: str = "auto"

    @property
    def video_frames(self) -> int:
        return 1 + sum(self.shot_frames)


def scheduler(steps: int):
    """HoloCine's schedule in diffusers' terms: sigmas 1 -> 0 (the last step to 0), shifted by 5."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    schedule = FlowMatchEulerDiscreteScheduler(shift=SHIFT)
    schedule.set_timesteps(sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1].tolist())
    return schedule


def conditioning(pipe, job: SceneJob, device, dtype) -> tuple[torch.Tensor, PromptLayout, torch.Tensor | None]:
    """(prompt embeddings (1, 512, width), their windows, negative embeddings or None)."""
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    text = scene_prompt(job.global_caption, job.shot_captions)
    embeds, _ = pipe.encode_prompt(text, do_classifier_free_guidance=False, max_sequence_length=TEXT_TOKENS,
                                   device=device, dtype=dtype)
    windows = text_windows(pipe.tokenizer, prompt_clean(text), len(job.shot_captions))
    negative = None
    if job.guidance > 1.0:
        negative, _ = pipe.encode_prompt(job.negative_prompt, do_classifier_free_guidance=False,
                                         max_sequence_length=TEXT_TOKENS, device=device, dtype=dtype)
    return embeds, windows, negative


def shot_layout(job: SceneJob, tokens_per_frame: int) -> ShotLayout:
    """Each shot's latent frames, from the cuts as HoloCine maps them."""
    latents = (job.video_frames - 1) // TEMPORAL + 1
    starts = latent_cuts(cut_frames(job.shot_frames), job.video_frames)
    frames = [b - a for a, b in zip(starts, [*starts[1:], latents])]
    return ShotLayout.from_frames(frames, tokens_per_frame, 1, own_summary_again=True)


@torch.no_grad()
def denoise_scene(pipe, scene: SceneAttention, job: SceneJob, progress: StepProgress) -> list[np.ndarray]:
    """Frames in [0, 1] of each shot, (frames, height, width, 3) each."""
    device = pipe._execution_device
    dtype = pipe.transformer.dtype
    embeds, windows, negative = conditioning(pipe, job, device, dtype)
    z = pipe.vae.config.z_dim
    lat_h, lat_w = job.height // pipe.vae_scale_factor_spatial, job.width // pipe.vae_scale_factor_spatial
    shape = (1, z, (job.video_frames - 1) // TEMPORAL + 1, lat_h, lat_w)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(job.seed)).to(device)
    _, patch_h, patch_w = pipe.transformer.config.patch_size
    scene.shots = shot_layout(job, (lat_h // patch_h) * (lat_w // patch_w))
    scene.sparse_self, scene.kernel = job.sparse, job.kernel
    schedule = scheduler(job.steps)
    try:
        for index, t in enumerate(schedule.timesteps):
            model = pipe.transformer if t >= BOUNDARY * schedule.config.num_train_timesteps else pipe.transformer_2
            x = latents.to(model.dtype)
            timestep = t.expand(1).to(device)
            scene.prompts = windows
            prediction = model(hidden_states=x, timestep=timestep, encoder_hidden_states=embeds, return_dict=False)[0]
            if negative is not None:
                scene.prompts = None
                unconditional = model(hidden_states=x, timestep=timestep, encoder_hidden_states=negative,
                                      return_dict=False)[0]
                prediction = unconditional + job.guidance * (prediction - unconditional)
            latents = schedule.step(prediction.float(), t, latents, return_dict=False)[0]
            progress(index + 1, job.steps)
    finally:
        scene.shots = scene.prompts = None
    video = decode(pipe, latents)
    bounds = np.cumsum([1, *job.shot_frames])  # frame 0 belongs to no shot (see holocine_prompt)
    return [video[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
