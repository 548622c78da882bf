"""Content-Aware Memory Routing (CausalCine): score past latent frames by how much the
new chunk attends to them.

A probe pass runs Helios's transformer on the new chunk (its starting noise, at the first
timestep, with the shot's prompt) and a group of candidate frames placed in the short
history, and stops after the deepest probe layer. An attention processor on the probe
layers' self-attention takes the queries of the chunk (and of the shot's prefix frame
when that is real: its keyframe, or its first frame) and the keys, exactly as the model
computes them (norms, rotary embedding), and keeps per query and head only the
log-sum-exp of the scores over each candidate frame's keys and over the chunk's own keys.

Every candidate gets the same temporal position, so positions do not favour a frame; a
frame's score is the softmax of those log-sum-exps over all candidates (and the chunk
itself), averaged over queries, heads and layers: the share of the chunk's attention its
keys would take. Candidates go through in groups, so the probe's memory is bounded by the
group (and the queries are a strided subset), never by the length of the film. At the
first probe layer the scores are exact (its queries depend on the chunk alone); deeper
layers see each group separately, an approximation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cinema_cli.video.causal import FrameRef

if TYPE_CHECKING:
    import torch


class _ProbeDone(Exception):
    """Raised after the deepest probe layer: the rest of the forward pass is not needed."""


@dataclass(frozen=True)
class ProbeLayout:
    tokens_per_frame: int
    prefix_frames: int  # 1: the prefix frame before the candidates in the short history
    candidates: int  # in this group
    chunk_tokens: int
    query_positions: torch.Tensor  # sequence positions whose queries are read


class _LogSumExps:
    """Collects, per probe layer, lse over each candidate frame's keys and over the chunk's own."""

    def __init__(self):
        self.frames: list = []  # per layer: [heads, queries, candidates]
        self.own: list = []  # per layer: [heads, queries]
        self.layout: ProbeLayout | None = None

    def __call__(self, query, key) -> None:
        import torch

        lay = self.layout
        n = lay.tokens_per_frame
        start = lay.prefix_frames * n
        stop = start + lay.candidates * n
        scale = 1.0 / math.sqrt(query.shape[-1])
        frames, own = [], []
        for head in range(query.shape[2]):
            q = query[0, lay.query_positions, head].float()
            logits = q @ key[0, :, head].float().T * scale  # [queries, sequence]: queries are a bounded subset
            frames.append(logits[:, start:stop].unflatten(1, (lay.candidates, n)).logsumexp(-1))
            own.append(torch.cat([logits[:, :start], logits[:, stop:]], dim=1).logsumexp(-1))
        self.frames.append(torch.stack(frames))
        self.own.append(torch.stack(own))


class _ProbeProcessor:
    """Wraps a Helios self-attention processor: hands q and k to the sink, then attends as before."""

    def __init__(self, inner, sink: _LogSumExps, last: bool):
        self.inner, self.sink, self.last = inner, sink, last

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None,
                 original_context_length=None):
        import torch
        from diffusers.models.transformers.transformer_helios import (
            _get_qkv_projections,
            apply_rotary_emb_transposed,
        )

        query, key, _ = _get_qkv_projections(attn, hidden_states, None)
        query = attn.norm_q(query).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            query = apply_rotary_emb_transposed(query, rotary_emb)
            key = apply_rotary_emb_transposed(key, rotary_emb)
        if attn.is_amplify_history:  # as the processor does: history keys scaled up
            history = hidden_states.shape[1] - original_context_length
            scale = 1.0 + torch.sigmoid(attn.history_key_scale) * (attn.max_scale - 1.0)
            if attn.history_scale_mode == "per_head":
                scale = scale.view(1, 1, -1, 1)
            key = torch.cat([key[:, :history] * scale, key[:, history:]], dim=1)
        self.sink(query, key)
        if self.last:
            raise _ProbeDone
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb,
                          original_context_length)


def probe_scores(transformer, noise, timestep, prompt_embeds, prefix, prefix_queries: bool,
                 groups: Iterable[tuple[list[FrameRef], object]], layers: tuple[int, ...], queries: int,
                 slot_position: int) -> dict[FrameRef, float]:
    """The attention mass of the chunk `noise` [1, C, L, h, w] on each candidate frame.

    `groups` yields (refs, latents [1, C, G, h, w]); `prefix` is the shot's prefix frame
    [1, C, 1, h, w]; `slot_position` the temporal index of the short history slot."""
    import torch

    blocks = transformer.blocks
    bad = [layer for layer in layers if not 0 <= layer < len(blocks)]
    if bad or not layers:
        raise ValueError(f"probe layers {list(layers)} must be within the model's {len(blocks)} layers")
    p = transformer.config.patch_size
    chunk = noise.shape[2]
    n = (noise.shape[3] // p[1]) * (noise.shape[4] // p[2])
    dtype = transformer.dtype
    sink = _LogSumExps()
    originals = {layer: blocks[layer].attn1.processor for layer in layers}
    deepest = max(layers)
    refs_seen: list[FrameRef] = []
    frame_lse, own_lse = [], []
    try:
        for layer, inner in originals.items():
            blocks[layer].attn1.set_processor(_ProbeProcessor(inner, sink, last=layer == deepest))
        for refs, latents in groups:
            count = len(refs)
            chunk_positions = torch.arange((1 + count) * n, (1 + count + chunk) * n)
            picked = chunk_positions[torch.linspace(0, len(chunk_positions) - 1, min(queries, len(chunk_positions)))
                                     .round().long()]
            if prefix_queries:
                picked = torch.cat([torch.arange(n), picked])
            sink.layout = ProbeLayout(n, 1, count, chunk * n, picked)
            sink.frames, sink.own = [], []
            short_index = torch.tensor([[0] + [slot_position] * count])
            chunk_index = torch.arange(slot_position + 1, slot_position + 1 + chunk).unsqueeze(0)
            with torch.no_grad():
                try:
                    transformer(hidden_states=noise.to(dtype), timestep=timestep, encoder_hidden_states=prompt_embeds,
                                indices_hidden_states=chunk_index, indices_latents_history_short=short_index,
                                latents_history_short=torch.cat([prefix, latents], dim=2).to(dtype),
                                return_dict=False)
                except _ProbeDone:
                    pass
            frame_lse.append(torch.stack(sink.frames))  # [layers, heads, queries, G]
            own_lse.append(torch.stack(sink.own))  # [layers, heads, queries]
            refs_seen.extend(refs)
    finally:
        for layer, inner in originals.items():
            blocks[layer].attn1.set_processor(inner)
    if not refs_seen:
        return {}
    logits = torch.cat([*frame_lse, torch.stack(own_lse).mean(0).unsqueeze(-1)], dim=-1)
    mass = logits.softmax(-1)[..., :-1].mean(dim=(0, 1, 2))
    return {ref: float(m) for ref, m in zip(refs_seen, mass)}
