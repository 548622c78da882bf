"""Attention processors for diffusers' Flux2Transformer2DModel that apply the hybrid masks
of an interleaved (image, caption) sequence: block-diagonal per pair in the double-stream
blocks, global (bidirectional or causal over pairs) in the single-stream blocks.

They project, normalise and rotate exactly as diffusers' Flux2AttnProcessor and
Flux2ParallelSelfAttnProcessor do and change only which keys each query sees. A
`PairAttention` shared by every processor of the model carries the layout of the sequence
being denoised; with no layout set they hand over to diffusers' own processors, so the
model stays a plain FLUX.2 transformer outside an interleaved forward.

Causal extension caches the past: with `capture` set, each single-stream block stores
the K/V of the pairs it sees (the past pairs, whose states never depend on a later pair
under the causal mask); with `past` set, a block's queries see the stored K/V before
their own, so each denoising step of a new keyframe computes only its own tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from cinema_cli.attention.kernels import dispatch_attend, flash_varlen, pick_kernel
from cinema_cli.attention.layout import Segment
from cinema_cli.attention.pairs import GlobalMask, PairLayout
from cinema_cli.attention.sparse import packed_attention, varlen_attention
from cinema_cli.runtime.torch_compat import prepare_torch

prepare_torch()
from diffusers.models.embeddings import apply_rotary_emb  # noqa: E402
from diffusers.models.transformers.transformer_flux2 import (  # noqa: E402
    Flux2AttnProcessor,
    Flux2ParallelSelfAttnProcessor,
    _get_qkv_projections,
)

# solver(q, k, v, segments) -> out; the default packs segments for SDPA / flash-attn varlen.
Solver = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Sequence[Segment]], torch.Tensor]


@dataclass
class PastKV:
    """K/V of the past pairs at one single-stream block: their text part and image part,
    kept apart so the new pair's tokens can be placed in the [text, image] order."""

    text_key: torch.Tensor
    text_value: torch.Tensor
    image_key: torch.Tensor
    image_value: torch.Tensor


@dataclass
class PairAttention:
    """The interleaved sequence being denoised: set by the model, read by every processor."""

    layout: PairLayout | None = None
    mask: GlobalMask = "bidirectional"
    kernel: str = "auto"
    solver: Solver | None = None  # tests put the dense masked reference here
    capture: list[PastKV] | None = None  # filled block by block when set
    past: list[PastKV] | None = None  # one per single-stream block, prepended to the keys
    past_layout: PairLayout | None = None
    _block: int = field(default=0, repr=False)


class _PairProcessor:
    _attention_backend = None
    _parallel_config = None

    def __init__(self, state: PairAttention):
        self.state = state

    def _solve(self, query, key, value, segments: Sequence[Segment]) -> torch.Tensor:
        if self.state.solver is not None:
            return self.state.solver(query, key, value, segments)
        if len(segments) == 1 and segments[0].queries == (0, query.shape[1]) and \
                segments[0].keys == ((0, key.shape[1]),):
            return dispatch_attend(self._attention_backend)(query, key, value)  # full attention
        if pick_kernel(self.state.kernel, query) == "flash-varlen":
            return varlen_attention(query, key, value, segments, flash_varlen())
        return packed_attention(query, key, value, segments, dispatch_attend(self._attention_backend))


class PairDoubleProcessor(_PairProcessor):
    """Double-stream blocks: pair i's caption and image attend to pair i only."""

    def __init__(self, state: PairAttention):
        super().__init__(state)
        self._plain = Flux2AttnProcessor()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        layout = self.state.layout
        if layout is None or encoder_hidden_states is None or attention_mask is not None:
            self._plain._attention_backend = self._attention_backend
            return self._plain(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        query, key, value, e_query, e_key, e_value = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        query, key, value = (t.unflatten(-1, (-1, attn.head_dim)) for t in (query, key, value))
        e_query, e_key, e_value = (t.unflatten(-1, (-1, attn.head_dim)) for t in (e_query, e_key, e_value))
        query = torch.cat([attn.norm_added_q(e_query), attn.norm_q(query)], dim=1)
        key = torch.cat([attn.norm_added_k(e_key), attn.norm_k(key)], dim=1)
        value = torch.cat([e_value, value], dim=1)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        out = self._solve(query, key, value, layout.local_segments()).flatten(2, 3).to(query.dtype)
        text, image = out.split_with_sizes([encoder_hidden_states.shape[1], hidden_states.shape[1]], dim=1)
        image = attn.to_out[1](attn.to_out[0](image))
        return image, attn.to_add_out(text)


class PairSingleProcessor(_PairProcessor):
    """Single-stream blocks: the global mask across pairs, with the cached past if any."""

    def __init__(self, state: PairAttention, block: int):
        super().__init__(state)
        self.block = block
        self._plain = Flux2ParallelSelfAttnProcessor()

    def __call__(self, attn, hidden_states, attention_mask=None, image_rotary_emb=None):
        state = self.state
        if state.layout is None or attention_mask is not None:
            self._plain._attention_backend = self._attention_backend
            return self._plain(attn, hidden_states, attention_mask, image_rotary_emb)
        layout = state.layout
        hidden_states = attn.to_qkv_mlp_proj(hidden_states)
        qkv, mlp = torch.split(hidden_states, [3 * attn.inner_dim, attn.mlp_hidden_dim * attn.mlp_mult_factor], dim=-1)
        query, key, value = (t.unflatten(-1, (-1, attn.head_dim)) for t in qkv.chunk(3, dim=-1))
        query, key = attn.norm_q(query), attn.norm_k(key)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        t = layout.text_length
        if state.capture is not None:
            state.capture.append(PastKV(key[:, :t], value[:, :t], key[:, t:], value[:, t:]))
        if state.past is not None:
            out = self._with_past(query, key, value, state.past[self.block], state.past_layout, layout)
        else:
            out = self._solve(query, key, value, layout.global_segments(state.mask))
        out = out.flatten(2, 3).to(query.dtype)
        return attn.to_out(torch.cat([out, attn.mlp_act_fn(mlp)], dim=-1))

    def _with_past(self, query, key, value, past: PastKV, past_layout: PairLayout, layout: PairLayout):
        """The new pairs' queries over [past text, own text, past image, own image]: the
        causal mask of the whole sequence, restricted to the new pairs' rows."""
        t = layout.text_length
        key = torch.cat([past.text_key, key[:, :t], past.image_key, key[:, t:]], dim=1)
        value = torch.cat([past.text_value, value[:, :t], past.image_value, value[:, t:]], dim=1)
        whole = PairLayout(
            past_layout.text + tuple(past_layout.text_length + x for x in layout.text[1:]),
            past_layout.image + tuple(past_layout.image_length + x for x in layout.image[1:]),
        )
        rows = []
        first = past_layout.pairs
        text_shift, image_shift = past_layout.text_length, past_layout.text_length + past_layout.image_length
        for segment in whole.global_segments(self.state.mask):
            start, end = segment.queries
            if end <= whole.text[first] or whole.text_length <= start < whole.text_length + whole.image[first]:
                continue  # a past pair's rows: already computed, not asked again
            local = (start - text_shift, end - text_shift) if start < whole.text_length else \
                (start - image_shift, end - image_shift)
            rows.append(Segment(local, segment.keys))
        return self._solve(query, key, value, rows)


def install_pair_attention(transformer, state: PairAttention) -> None:
    """Put the pair processors on every attention of a Flux2Transformer2DModel, keeping the
    attention backend already set on it."""
    processors = {}
    for name, old in transformer.attn_processors.items():
        if name.startswith("single_transformer_blocks."):
            new = PairSingleProcessor(state, int(name.split(".")[1]))
        else:
            new = PairDoubleProcessor(state)
        new._attention_backend = getattr(old, "_attention_backend", None)
        processors[name] = new
    transformer.set_attn_processor(processors)
