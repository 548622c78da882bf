"""The tiny FLUX.2 klein presets: diffusers' klein pipelines with a small
Flux2Transformer2DModel, AutoencoderKLFlux2 and Qwen3 text encoder, random weights.

Three kinds, as the released checkpoints come: `klein` (Flux2KleinPipeline, step-distilled),
`kv` (Flux2KleinKVPipeline, distilled, trained for the reference K/V cache) and `base`
(Flux2KleinPipeline with `is_distilled: false`: many steps and classifier-free guidance).

The shapes keep what the real klein code depends on: the VAE compresses 8x (four blocks),
its latents are patchified 2x2 (so the transformer reads 4 x latent channels), the text
encoder's hidden states are stacked from three layers (3 x its width is the transformer's
joint attention width), and the tokenizer has Qwen's chat markers, because the pipeline
wraps every prompt in the chat template.
"""

from __future__ import annotations

from cinema_cli.runtime.tiny import byte_tokenizer, seeded, tiny_preset
from cinema_cli.runtime.torch_compat import prepare_torch

LATENT_CHANNELS = 4
TEXT_WIDTH = 16
TEXT_LAYERS = 4
# Qwen3's chat template, reduced to what the pipeline uses: user turns, the assistant
# header, and the empty thinking block that `enable_thinking=False` asks for.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
QWEN_MARKERS = ("<|im_start|>", "<|im_end|>")
# Default inits leave the adaLN gates near 0.03, so a random transformer all but ignores
# its prompt and references; with larger modulation weights both visibly change the
# picture, which tests of conditioning (and of what a caption edit redoes) need.
MODULATION_GAIN = 30.0


KINDS = ("klein", "kv", "base")


@tiny_preset("flux2")
def tiny_flux2(seed: int = 0, transformer=None, kind: str = "klein"):
    """The tiny pipeline of `kind`; `transformer` replaces its denoiser (the bench passes a
    klein-shaped one, whose joint attention width must be 3 x TEXT_WIDTH)."""
    prepare_torch()
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2KleinKVPipeline, Flux2KleinPipeline

    if kind not in KINDS:
        raise ValueError(f"tiny flux2 kind must be one of {', '.join(KINDS)}, not {kind!r}")
    from transformers import Qwen3Config, Qwen3ForCausalLM

    with seeded(seed):
        tokenizer = byte_tokenizer(specials=("<pad>", "</s>", "<unk>", *QWEN_MARKERS))
        tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_MARKERS)})
        tokenizer.chat_template = CHAT_TEMPLATE
        text_encoder = Qwen3ForCausalLM(Qwen3Config(
            vocab_size=len(tokenizer), hidden_size=TEXT_WIDTH, intermediate_size=2 * TEXT_WIDTH,
            num_hidden_layers=TEXT_LAYERS, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
            max_position_embeddings=1024,
        )).eval()
        vae = AutoencoderKLFlux2(
            block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=LATENT_CHANNELS, norm_num_groups=4,
        ).eval()
        if transformer is None:
            transformer = tiny_transformer()
    # FLUX.2's scheduler: flow matching with the shift chosen from the image's token count.
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, time_shift_type="exponential")
    parts = {"scheduler": scheduler, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer,
             "transformer": transformer}
    if kind == "kv":
        return Flux2KleinKVPipeline(**parts)
    return Flux2KleinPipeline(**parts, is_distilled=kind == "klein")


def tiny_transformer(num_layers: int = 1, num_single_layers: int = 2):
    """The tiny preset's denoiser (random weights; seed with `seeded`)."""
    import torch
    from diffusers import Flux2Transformer2DModel

    transformer = Flux2Transformer2DModel(
        in_channels=4 * LATENT_CHANNELS, num_layers=num_layers, num_single_layers=num_single_layers,
        attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=3 * TEXT_WIDTH, timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4), guidance_embeds=False,
    ).eval()
    with torch.no_grad():
        for modulation in (transformer.double_stream_modulation_img, transformer.double_stream_modulation_txt,
                           transformer.single_stream_modulation):
            modulation.linear.weight.mul_(MODULATION_GAIN)
    return transformer
