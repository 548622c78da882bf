"""The tiny Helios preset: diffusers' HeliosPipeline with a small HeliosTransformer3DModel,
Wan's AutoencoderKLWan and a UMT5 encoder, random weights, built offline from a seed.

The transformer keeps what makes Helios Helios: separate patchifiers for the short (1x),
mid (2x) and long (4x) history, history tokens at timestep zero, and cross-attention on
the new chunk only. Sizes: a 64x64 frame is an 8x8 latent, 16 tokens after the 2x2 patch.

`helios_transformer(**config)` builds the same architecture at any size; the bench uses it
with the real model's widths (random weights) to measure speed and memory.
"""

from __future__ import annotations

from cinema_cli.runtime.tiny import byte_tokenizer, seeded, tiny_preset, tiny_umt5
from cinema_cli.runtime.torch_compat import prepare_torch
from cinema_cli.runtime.tiny_wan import LATENT_CHANNELS, TEXT_WIDTH, tiny_vae

# Helios-Base's transformer (BestWishYsh/Helios-Base), for the bench's real-shape runs.
REAL_TRANSFORMER = dict(num_attention_heads=40, attention_head_dim=128, in_channels=16, out_channels=16,
                        text_dim=4096, ffn_dim=13824, num_layers=40, rope_dim=(44, 42, 42))
TINY_TRANSFORMER = dict(num_attention_heads=2, attention_head_dim=16, in_channels=LATENT_CHANNELS,
                        out_channels=LATENT_CHANNELS, text_dim=TEXT_WIDTH, freq_dim=16, ffn_dim=32, num_layers=2,
                        rope_dim=(4, 6, 6))


@tiny_preset("helios")
def tiny_helios(seed: int = 0):
    prepare_torch()
    from diffusers import HeliosPipeline

    with seeded(seed):
        tokenizer = byte_tokenizer()
        text_encoder = tiny_umt5(len(tokenizer), TEXT_WIDTH)
        vae = confident_vae(tiny_vae())
        transformer = helios_transformer(**TINY_TRANSFORMER)
    return HeliosPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                          scheduler=helios_scheduler(), transformer=transformer)


def confident_vae(vae):
    """Wan's tiny VAE made to behave like a trained one where Helios relies on it: Helios
    encodes images by *sampling* the posterior, and a random VAE's posterior is as wide as
    its prior (std ~1 against means that differ by ~0.05), so a sample would forget the
    image. Its log-variance is set to a small constant, and latents_mean / latents_std to
    the latents' own statistics on a fixed set of images, so normalised latents have unit
    scale, as Helios's VAE config makes them."""
    import torch

    z = vae.config.z_dim
    with torch.no_grad():
        vae.quant_conv.weight[z:] = 0.0
        vae.quant_conv.bias[z:] = -12.0  # std exp(-6): a sample is the image's latent
        generator = torch.Generator().manual_seed(0)
        images = torch.cat([torch.rand(6, 3, 1, 32, 32, generator=generator),
                            torch.rand(6, 3, 1, 1, 1, generator=generator).expand(6, 3, 1, 32, 32)]) * 2 - 1
        latents = vae.encode(images).latent_dist.mode()
    vae.register_to_config(latents_mean=latents.mean((0, 2, 3, 4)).tolist(),
                           latents_std=latents.std((0, 2, 3, 4)).tolist())
    return vae


def helios_transformer(**config):
    prepare_torch()
    from diffusers import HeliosTransformer3DModel

    return HeliosTransformer3DModel(**config).eval()


def helios_scheduler():
    """One-stage flow matching with UniPC and the resolution-dependent shift (`mu`) the
    pipeline computes, as Helios-Base's stage-1 sampling does."""
    from diffusers import HeliosScheduler

    return HeliosScheduler(stages=1, use_dynamic_shifting=True, shift=1.0, scheduler_type="unipc")
