"""The tiny Wan presets: diffusers' WanImageToVideoPipeline with a small
WanTransformer3DModel, AutoencoderKLWan and UMT5 encoder, random weights.

Two conditioning styles, as the real models have them:
- `i2v` (Wan2.2 image-to-video style): the transformer reads the noisy latents, a 4-channel
  mask of known frames and the VAE latents of the known frames (first, and last for
  first-last-frame). No CLIP image encoder, so none is needed offline.
- `ti2v` (Wan2.2 TI2V style, `expand_timesteps`): the first latent frame is replaced by the
  image's latents and gets timestep 0; the transformer reads latents only.

The scheduler is the one Wan's diffusers checkpoints ship: UniPC multistep over flow
sigmas (shift 3, as the 480p ones).

Sizes: the VAE compresses 8x in space and 4x in time like Wan's; with patch 2, a
64x64 frame is 16 tokens per latent frame.
"""

from __future__ import annotations

from cinema_cli.runtime.tiny import byte_tokenizer, seeded, tiny_preset, tiny_umt5
from cinema_cli.runtime.torch_compat import prepare_torch

LATENT_CHANNELS = 4
TEXT_WIDTH = 32
HEADS = 2


@tiny_preset("wan")
def tiny_wan(kind: str = "i2v", seed: int = 0):
    """`i2v`, `ti2v`, or `t2v`: text-to-video with two experts as Wan2.2 T2V A14B has
    (high noise, then low noise below the boundary), the model HoloCine fine-tunes."""
    prepare_torch()
    from diffusers import WanImageToVideoPipeline

    if kind not in ("i2v", "ti2v", "t2v"):
        raise ValueError(f"tiny wan kind must be i2v, ti2v or t2v, not {kind!r}")
    if kind == "t2v":
        return _tiny_t2v(seed)
    z = LATENT_CHANNELS
    mask_channels = 4  # one per frame of a 4-frame latent step (the VAE's temporal factor)
    with seeded(seed):
        tokenizer = byte_tokenizer()
        text_encoder = tiny_umt5(len(tokenizer), TEXT_WIDTH)
        vae = tiny_vae()
        transformer = tiny_transformer(z if kind == "ti2v" else 2 * z + mask_channels)
    return WanImageToVideoPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
        scheduler=unipc(), transformer=transformer,
        expand_timesteps=kind == "ti2v",
    )


def tiny_transformer(in_channels: int):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=HEADS, attention_head_dim=12, in_channels=in_channels,
        out_channels=LATENT_CHANNELS, text_dim=TEXT_WIDTH, freq_dim=16, ffn_dim=32, num_layers=2, rope_max_seq_len=64,
    ).eval()


def tiny_vae():
    from diffusers import AutoencoderKLWan

    z = LATENT_CHANNELS
    return AutoencoderKLWan(
        base_dim=4, z_dim=z, dim_mult=[1, 1, 1, 1], num_res_blocks=0,
        temperal_downsample=[False, True, True], latents_mean=[0.0] * z, latents_std=[1.0] * z,
    ).eval()


# Wan2.2 T2V A14B switches to its low-noise expert below this fraction of the timesteps.
T2V_BOUNDARY = 0.875


def _tiny_t2v(seed: int):
    from diffusers import WanPipeline

    with seeded(seed):
        tokenizer = byte_tokenizer()
        text_encoder = tiny_umt5(len(tokenizer), TEXT_WIDTH)
        vae = tiny_vae()
        high, low = tiny_transformer(LATENT_CHANNELS), tiny_transformer(LATENT_CHANNELS)
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=unipc(),
                       transformer=high, transformer_2=low, boundary_ratio=T2V_BOUNDARY)


def unipc(shift: float = 3.0):
    """Wan's scheduler as its diffusers checkpoints configure it."""
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift, num_train_timesteps=1000,
    )
