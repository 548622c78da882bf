"""Captain Cinema's interleaved keyframe model on FLUX.2 klein's transformer.

A sequence holds P (image, caption) pairs: each pair's latent patches and its own
caption's text tokens, each pair at its own noise level (diffusion forcing) and its own
time offset in the rotary positions (as FLUX.2 places reference images: pair i at
t = TIME_STEP * i, its caption too, so a pair's image and caption keep the relative
positions of a plain FLUX.2 forward). The D double-stream blocks fuse each pair with its
own caption only (block-diagonal); the S single-stream blocks mix pairs, bidirectionally
(training, joint sampling) or causally (online extension). With one pair the model is
exactly the plain FLUX.2 transformer.

The weights are the stock `Flux2Transformer2DModel`'s — the model adds no parameter — so
a LoRA trained here loads with diffusers like any FLUX.2 LoRA.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from cinema_cli.attention.pair_processors import PairAttention, PastKV, install_pair_attention
from cinema_cli.attention.pairs import GlobalMask, PairLayout

TIME_STEP = 10  # rotary time coordinate between consecutive pairs (FLUX.2's reference spacing)


@dataclass
class Pair:
    """One pair, unbatched: `latents` (image tokens, C) packed 2x2 patches with `height` x
    `width` token rows/columns; `text` (text tokens, joint width) the encoder's states."""

    latents: torch.Tensor
    height: int
    width: int
    text: torch.Tensor


@dataclass
class Interleaved:
    """A batch of interleaved sequences of one layout, ready for the transformer."""

    latents: torch.Tensor  # (batch, image tokens, C)
    text: torch.Tensor  # (batch, text tokens, joint width)
    image_ids: torch.Tensor  # (image tokens, 4)
    text_ids: torch.Tensor  # (text tokens, 4)
    layout: PairLayout


def pair_ids(layout: PairLayout, sizes: Sequence[tuple[int, int]], first_pair: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(image ids, text ids): FLUX.2's (t, h, w, l) coordinates, pair i at t = TIME_STEP * i."""
    image, text = [], []
    for i, (height, width) in enumerate(sizes):
        t = torch.tensor([TIME_STEP * (first_pair + i)])
        image.append(torch.cartesian_prod(t, torch.arange(height), torch.arange(width), torch.arange(1)))
        text_length = layout.pair_lengths(i)[0]
        text.append(torch.cartesian_prod(t, torch.arange(1), torch.arange(1), torch.arange(text_length)))
    return torch.cat(image), torch.cat(text)


def interleave(pairs: Sequence[Pair], first_pair: int = 0) -> Interleaved:
    """One sequence of `pairs` (batch of 1); `first_pair` offsets the time positions when
    these pairs extend earlier ones."""
    layout = PairLayout.from_lengths([p.text.shape[0] for p in pairs], [p.latents.shape[0] for p in pairs])
    image_ids, text_ids = pair_ids(layout, [(p.height, p.width) for p in pairs], first_pair)
    return Interleaved(
        torch.cat([p.latents for p in pairs])[None], torch.cat([p.text for p in pairs])[None],
        image_ids, text_ids, layout,
    )


class InterleavedFlux2(nn.Module):
    """The hybrid-mask forward over a stock Flux2Transformer2DModel."""

    def __init__(self, transformer: nn.Module, kernel: str = "auto"):
        super().__init__()
        self.transformer = transformer
        self.attention = PairAttention(kernel=kernel)
        install_pair_attention(transformer, self.attention)

    def forward(self, seq: Interleaved, timesteps: torch.Tensor, mask: GlobalMask = "bidirectional",
                guidance: torch.Tensor | None = None, past: PastContext | None = None) -> torch.Tensor:
        """The velocity of every pair's image tokens, (batch, image tokens, C).
        `timesteps`: (batch, pairs) in [0, 1], each pair's own noise level. `past`: the
        cached earlier pairs this sequence extends (causal only)."""
        t = self.transformer
        layout = seq.layout
        if timesteps.shape[-1] != layout.pairs:
            raise ValueError(f"{timesteps.shape[-1]} timesteps for {layout.pairs} pairs")
        if past is not None and mask != "causal":
            raise ValueError("extending cached pairs needs the causal mask")
        batch, pairs = timesteps.shape
        dtype = seq.latents.dtype
        flat_guidance = None if guidance is None else (guidance.to(dtype) * 1000).repeat_interleave(pairs)
        temb = t.time_guidance_embed((timesteps.to(dtype) * 1000).flatten(), flat_guidance).view(batch, pairs, -1)
        text_lengths = torch.tensor([layout.pair_lengths(i)[0] for i in range(pairs)], device=temb.device)
        image_lengths = torch.tensor([layout.pair_lengths(i)[1] for i in range(pairs)], device=temb.device)

        def per_token(mod: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            return mod.repeat_interleave(lengths, dim=1)  # pair i's parameters on each of its tokens

        mod_image = per_token(t.double_stream_modulation_img(temb), image_lengths)
        mod_text = per_token(t.double_stream_modulation_txt(temb), text_lengths)
        single = t.single_stream_modulation(temb)
        mod_single = torch.cat([per_token(single, text_lengths), per_token(single, image_lengths)], dim=1)

        image = t.x_embedder(seq.latents)
        text = t.context_embedder(seq.text)
        image_rotary, text_rotary = t.pos_embed(seq.image_ids), t.pos_embed(seq.text_ids)
        rotary = (torch.cat([text_rotary[0], image_rotary[0]]), torch.cat([text_rotary[1], image_rotary[1]]))

        state = self.attention
        state.layout, state.mask = layout, mask
        state.past, state.past_layout = (past.kv, past.layout) if past is not None else (None, None)
        checkpointing = torch.is_grad_enabled() and t.gradient_checkpointing
        settings = (layout, mask, state.past, state.past_layout)

        def in_layout(block):
            # Backward recomputes a checkpointed block after this forward has cleared the
            # shared state: the recomputation must see the same layout and mask.
            def call(*args):
                previous = (state.layout, state.mask, state.past, state.past_layout)
                state.layout, state.mask, state.past, state.past_layout = settings
                try:
                    return block(*args)
                finally:
                    state.layout, state.mask, state.past, state.past_layout = previous
            return call

        try:
            for block in t.transformer_blocks:
                if checkpointing:
                    text, image = t._gradient_checkpointing_func(in_layout(block), image, text, mod_image, mod_text,
                                                                 rotary, None)
                else:
                    text, image = block(hidden_states=image, encoder_hidden_states=text, temb_mod_img=mod_image,
                                        temb_mod_txt=mod_text, image_rotary_emb=rotary, joint_attention_kwargs=None)
            hidden = torch.cat([text, image], dim=1)
            for block in t.single_transformer_blocks:
                if checkpointing:
                    hidden = t._gradient_checkpointing_func(in_layout(block), hidden, None, mod_single, rotary, None)
                else:
                    hidden = block(hidden_states=hidden, encoder_hidden_states=None, temb_mod=mod_single,
                                   image_rotary_emb=rotary, joint_attention_kwargs=None)
        finally:
            state.layout = state.past = state.past_layout = None
        image = hidden[:, layout.text_length:]
        # norm_out (AdaLayerNormContinuous) with each pair's own conditioning.
        scale, shift = t.norm_out.linear(t.norm_out.silu(temb).to(dtype)).chunk(2, dim=-1)
        image = t.norm_out.norm(image) * (1 + per_token(scale, image_lengths)) + per_token(shift, image_lengths)
        return t.proj_out(image)

    @torch.no_grad()
    def remember(self, seq: Interleaved, timesteps: torch.Tensor, guidance: torch.Tensor | None = None) -> PastContext:
        """Run the context pairs once under the causal mask and keep each single-stream
        block's K/V: later pairs extend them without recomputing them at every step."""
        captured: list[PastKV] = []
        self.attention.capture = captured
        try:
            self(seq, timesteps, "causal", guidance)
        finally:
            self.attention.capture = None
        return PastContext(captured, seq.layout)


@dataclass
class PastContext:
    kv: list[PastKV]  # one per single-stream block
    layout: PairLayout
