"""One FLUX.2 klein keyframe: references at any size, and the reference K/V cache.

diffusers' `Flux2KleinPipeline.__call__` takes references as PIL images, refuses any under
64 px a side and crops the rest to multiples of 16 px, so GoldenMem's small context frames
would be refused or resized. This module therefore runs the pipeline's own parts (prompt
encoding, latent preparation, position ids, patchify/pack, scheduler, VAE) around a short
loop of its own:

- each reference is VAE-encoded at exactly its given pixel size; an odd latent side loses
  its last row (or column) so that 2x2 patches tile it, which is GoldenMem's
  floor(side / patch) token count; references get the pipeline's time offsets in the
  position ids (10, 20, ... in order);
- `kv` mode is diffusers' klein KV path: references are modulated at a fixed clean
  timestep and attend only to themselves, so their keys and values are the same at every
  step and for both guidance branches: computed once per keyframe (the first call
  extracts them), then reused. `cache=False` recomputes them at every call instead, the
  same arithmetic, for tests and the benchmark;
- `joint` mode is klein's standard path: references join the full attention at the
  current timestep in every call, as non-KV checkpoints were trained.

It imports torch: the backend imports it only when a keyframe is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

from cinema_cli.keyframes.base import StepProgress

# klein reads the Qwen3 hidden states after these layers of its 36-layer encoders; an
# encoder of another depth (the tiny preset's) is read at the same relative depths.
KLEIN_TEXT_LAYERS, KLEIN_TEXT_DEPTH = (9, 18, 27), 36
# (steps, guidance) a checkpoint is made for, by whether it is step-distilled (as
# diffusers' klein examples run them).
DISTILLED_DEFAULTS = (4, 1.0)
BASE_DEFAULTS = (50, 4.0)


@dataclass(frozen=True)
class Job:
    prompt: str
    references: tuple[tuple[Image.Image, tuple[int, int]], ...]  # (image, (height, width) to encode it at)
    width: int
    height: int
    steps: int
    guidance: float
    seed: int
    mode: str  # kv | joint
    cache: bool = True  # kv mode: reuse the references' K/V after the first call


def use_kv_processors(transformer) -> None:
    """diffusers' KV-aware attention processors. Called without KV arguments they compute
    exactly what the default processors do, so a pipeline can keep them for every mode."""
    from diffusers.models.transformers.transformer_flux2 import Flux2KVAttnProcessor, Flux2KVParallelSelfAttnProcessor

    for block in transformer.transformer_blocks:
        block.attn.set_processor(Flux2KVAttnProcessor())
    for block in transformer.single_transformer_blocks:
        block.attn.set_processor(Flux2KVParallelSelfAttnProcessor())


def text_layers(pipe) -> tuple[int, ...]:
    depth = pipe.text_encoder.config.num_hidden_layers
    return tuple(round(layer * depth / KLEIN_TEXT_DEPTH) for layer in KLEIN_TEXT_LAYERS)


def distilled(pipe) -> bool:
    """Step-distilled checkpoints ignore guidance. The KV pipeline has no such flag: its
    checkpoints are all distilled."""
    return bool(getattr(pipe.config, "is_distilled", True))


def checkpoint_defaults(pipe, steps: int | None, guidance: float | None) -> tuple[int, float]:
    """The steps and guidance to run: cinema.yaml's where set, else what the checkpoint
    was made for, by its config's `is_distilled`."""
    own_steps, own_guidance = DISTILLED_DEFAULTS if distilled(pipe) else BASE_DEFAULTS
    return (own_steps if steps is None else steps), (own_guidance if guidance is None else guidance)


def _pixels(image: Image.Image, height: int, width: int) -> torch.Tensor:
    """The image fitted (centre crop, then resize) to height x width, as a [-1, 1] batch."""
    fitted = ImageOps.fit(image.convert("RGB"), (width, height), Image.Resampling.LANCZOS)
    array = np.asarray(fitted, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)


def encode_references(pipe, references: Sequence[tuple[Image.Image, tuple[int, int]]], device):
    """(packed latents (1, tokens, channels), position ids (1, tokens, 4)), or (None, None)."""
    if not references:
        return None, None
    latents = [encode_image(pipe, image, height, width) for image, (height, width) in references]
    ids = pipe._prepare_image_ids(latents).to(device)
    packed = torch.cat([pipe._pack_latents(latent) for latent in latents], dim=1).to(device)
    return packed, ids


def encode_image(pipe, image: Image.Image, height: int, width: int) -> torch.Tensor:
    """The image at exactly height x width pixels as normalised, 2x2-patchified latents
    (1, channels, rows, columns); an odd latent side loses its last row or column."""
    from diffusers.pipelines.flux2.pipeline_flux2_klein import retrieve_latents
    from diffusers.utils.torch_utils import get_module_execution_device

    vae = pipe.vae
    pixels = _pixels(image, height, width).to(device=get_module_execution_device(vae), dtype=vae.dtype)
    latent = retrieve_latents(vae.encode(pixels), sample_mode="argmax")
    latent = pipe._patchify_latents(latent[:, :, : latent.shape[2] // 2 * 2, : latent.shape[3] // 2 * 2])
    mean = vae.bn.running_mean.view(1, -1, 1, 1).to(latent)
    std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(latent)
    return (latent - mean) / std


class _Denoiser:
    """The transformer's velocity for the noisy latents, with the references as the mode says."""

    def __init__(self, pipe, refs, ref_ids, latent_ids, mode: str, cache: bool):
        self.transformer = pipe.transformer
        self.refs, self.ref_ids, self.latent_ids = refs, ref_ids, latent_ids
        self.mode, self.cache = mode, cache
        self.kv = None

    def __call__(self, latents, timestep, embeds, text_ids):
        model = self.transformer
        x = latents.to(model.dtype)
        common = {"timestep": timestep, "guidance": None, "encoder_hidden_states": embeds, "txt_ids": text_ids,
                  "return_dict": False}
        if self.refs is None:
            return model(hidden_states=x, img_ids=self.latent_ids, **common)[0]
        refs = self.refs.to(model.dtype)
        if self.mode == "joint":
            out = model(hidden_states=torch.cat([x, refs], 1), img_ids=torch.cat([self.latent_ids, self.ref_ids], 1),
                        **common)[0]
            return out[:, : x.shape[1]]
        if self.kv is not None:
            return model(hidden_states=x, img_ids=self.latent_ids, kv_cache=self.kv, kv_cache_mode="cached",
                         **common)[0]
        out, kv = model(hidden_states=torch.cat([refs, x], 1), img_ids=torch.cat([self.ref_ids, self.latent_ids], 1),
                        kv_cache_mode="extract", num_ref_tokens=refs.shape[1], **common)
        if self.cache:
            self.kv = kv
        return out

    def close(self) -> None:
        if self.kv is not None:
            self.kv.clear()
            self.kv = None


@torch.no_grad()
def generate(pipe, job: Job, progress: StepProgress) -> np.ndarray:
    """The keyframe as float RGB in [0, 1], (height, width, 3)."""
    from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu, retrieve_timesteps

    device = pipe._execution_device
    layers = text_layers(pipe)
    embeds, text_ids = pipe.encode_prompt(prompt=job.prompt, device=device, text_encoder_out_layers=layers)
    guided = job.guidance > 1 and not distilled(pipe)
    if guided:
        negative, negative_ids = pipe.encode_prompt(prompt="", device=device, text_encoder_out_layers=layers)
    # The noise comes from the shot's seed on the device that draws it: same seed, same image.
    generator = torch.Generator(device=device).manual_seed(job.seed)
    latents, latent_ids = pipe.prepare_latents(
        batch_size=1, num_latents_channels=pipe.transformer.config.in_channels // 4, height=job.height,
        width=job.width, dtype=embeds.dtype, device=device, generator=generator,
    )
    refs, ref_ids = encode_references(pipe, job.references, device)
    sigmas = np.linspace(1.0, 1 / job.steps, job.steps)
    mu = compute_empirical_mu(image_seq_len=latents.shape[1], num_steps=job.steps)
    timesteps, _ = retrieve_timesteps(pipe.scheduler, job.steps, device, sigmas=sigmas, mu=mu)
    pipe.scheduler.set_begin_index(0)
    denoiser = _Denoiser(pipe, refs, ref_ids, latent_ids, job.mode, job.cache)
    try:
        for index, t in enumerate(timesteps):
            timestep = t.expand(1).to(latents.dtype) / 1000
            velocity = denoiser(latents, timestep, embeds, text_ids)
            if guided:
                unguided = denoiser(latents, timestep, negative, negative_ids)
                velocity = unguided + job.guidance * (velocity - unguided)
            latents = pipe.scheduler.step(velocity, t, latents, return_dict=False)[0]
            progress(index + 1, len(timesteps))
    finally:
        denoiser.close()
    image = decode(pipe, latents, job.height, job.width)
    pipe.maybe_free_model_hooks()
    return image


def decode(pipe, latents, height: int, width: int) -> np.ndarray:
    from diffusers.utils.torch_utils import get_module_execution_device

    vae = pipe.vae
    side = pipe.vae_scale_factor * 2  # pixels per packed token
    # prepare_latents packs the grid row-major (its ids count rows, then columns), so the
    # tokens unpack by a reshape. (The klein pipelines' own unpack helpers differ in arity.)
    tokens_high, tokens_wide = height // side, width // side
    latents = latents.reshape(latents.shape[0], tokens_high, tokens_wide, -1).permute(0, 3, 1, 2)
    mean = vae.bn.running_mean.view(1, -1, 1, 1).to(latents)
    std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(latents)
    latents = pipe._unpatchify_latents(latents * std + mean)
    image = vae.decode(latents.to(get_module_execution_device(vae), vae.dtype), return_dict=False)[0]
    return pipe.image_processor.postprocess(image, output_type="np")[0]
