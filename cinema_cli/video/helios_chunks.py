"""One chunk of Helios: the latent frames that continue a given history, denoised with
the pipeline's own transformer and scheduler exactly as diffusers' HeliosPipeline does
inside its chunk loop — but from history slots the caller chose (routed by content or by
recency), not the pipeline's fixed "newest frames" window.

Layout (keep_first_frame, as Helios trains): the prefix (the shot's first frame, or its
keyframe) joins the short history; the slots, oldest first, are split into long (4x
compressed), mid (2x) and short (1x) by `sizes`; the chunk's frames come after them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ChunkConditioning:
    prompt_embeds: torch.Tensor
    negative_embeds: torch.Tensor | None  # None: no classifier-free guidance
    guidance: float


def slot_indices(sizes: tuple[int, int, int], chunk: int) -> dict[str, torch.Tensor]:
    """The rotary frame positions of prefix+short, mid, long and the chunk, as the pipeline lays them out."""
    import torch

    long, mid, short = sizes
    prefix, i_long, i_mid, i_short, i_chunk = torch.arange(0, 1 + long + mid + short + chunk).split(
        [1, long, mid, short, chunk])
    return {"short": torch.cat([prefix, i_short]).unsqueeze(0), "mid": i_mid.unsqueeze(0),
            "long": i_long.unsqueeze(0), "chunk": i_chunk.unsqueeze(0)}


def sigmas_and_shift(pipe, steps: int, chunk: int, latent_h: int, latent_w: int) -> tuple[np.ndarray, float]:
    """The pipeline's sigma schedule and resolution-dependent shift for a chunk."""
    from diffusers.pipelines.helios.pipeline_helios import calculate_shift

    p = pipe.transformer.config.patch_size
    seq = chunk * latent_h * latent_w // (p[0] * p[1] * p[2])
    cfg = pipe.scheduler.config
    mu = calculate_shift(seq, cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                         cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15))
    return np.linspace(0.999, 0.0, steps + 1)[:-1], mu


def transformer_inputs(prefix, slots, sizes: tuple[int, int, int], chunk: int, dtype) -> dict:
    """The history keyword arguments of HeliosTransformer3DModel for `slots` [B, C, sum(sizes), h, w]."""
    import torch

    long, mid, short = slots.split(list(sizes), dim=2)
    index = slot_indices(sizes, chunk)
    return {
        "indices_hidden_states": index["chunk"], "indices_latents_history_short": index["short"],
        "indices_latents_history_mid": index["mid"], "indices_latents_history_long": index["long"],
        "latents_history_short": torch.cat([prefix, short], dim=2).to(dtype),
        "latents_history_mid": mid.to(dtype), "latents_history_long": long.to(dtype),
    }


def denoise_chunk(pipe, cond: ChunkConditioning, prefix, slots, sizes: tuple[int, int, int], noise,
                  steps: int, step_done: Callable[[int], None] = lambda i: None):
    """The chunk's clean latents [B, C, L, h, w] (float32) from `noise` of that shape."""
    import torch

    transformer = pipe.transformer
    dtype = transformer.dtype
    chunk = noise.shape[2]
    history = transformer_inputs(prefix, slots, sizes, chunk, dtype)
    sigmas, mu = sigmas_and_shift(pipe, steps, chunk, noise.shape[3], noise.shape[4])
    scheduler = pipe.scheduler
    scheduler.set_timesteps(steps, device=noise.device, sigmas=sigmas, mu=mu)
    latents = noise
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps):
            timestep = t.expand(latents.shape[0])
            prediction = _predict(transformer, latents.to(dtype), timestep, cond.prompt_embeds, history, "cond")
            if cond.negative_embeds is not None:
                unconditional = _predict(transformer, latents.to(dtype), timestep, cond.negative_embeds, history,
                                         "uncond")
                prediction = unconditional + cond.guidance * (prediction - unconditional)
            latents = scheduler.step(prediction, t, latents, return_dict=False)[0]
            step_done(i)
    return latents


def _predict(transformer, latents, timestep, embeds, history: dict, context: str):
    with transformer.cache_context(context):
        return transformer(hidden_states=latents, timestep=timestep, encoder_hidden_states=embeds,
                           return_dict=False, **history)[0]


def latent_stats(pipe, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, 1/std) of the VAE latents, shaped to broadcast over [B, C, T, H, W], as the pipeline keeps them."""
    import torch

    vae = pipe.vae
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(shape).to(device, vae.dtype)
    inverse_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(device, vae.dtype)
    return mean, inverse_std


def decode_chunk(pipe, latents) -> np.ndarray:
    """A chunk's normalised latents to frames in [0, 1], (frames, height, width, 3)."""
    import torch

    mean, inverse_std = latent_stats(pipe, latents.device)
    with torch.no_grad():
        video = pipe.vae.decode(latents.to(pipe.vae.dtype) / inverse_std + mean, return_dict=False)[0]
    return pipe.video_processor.postprocess_video(video, output_type="np")[0]
