"""Attention processors for diffusers' WanTransformer3DModel that denoise a scene's shots
jointly: sparse inter-shot self-attention (attn1) and window cross-attention (attn2).

They compute the projections, norms and rotary embedding exactly as diffusers'
WanAttnProcessor does and change only which keys each query sees. A `SceneAttention`
shared by all processors of a model carries the layout of the scene being denoised; with
no layout set (or one shot, or a cross-attention pass without a hierarchical prompt, such
as the negative prompt) they hand over to diffusers' own processor unchanged.

diffusers' configuration keeps working: `set_attention_backend` sets `_attention_backend`,
which the per-segment dense calls use; under context parallelism (`enable_parallelism`,
which sets `_parallel_config`) each process holds a slice of the video tokens: the
self-attention exchanges heads or K/V slices with the group (Ulysses or ring, see
`context_parallel`), the window cross-attention needs nothing (the prompt is whole everywhere).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cinema_cli.attention.kernels import dispatch_attend, flash_varlen, own_and_shared_kernel, pick_kernel
from cinema_cli.attention.layout import PromptLayout, Segment, ShotLayout, local_segments
from cinema_cli.attention.sparse import packed_attention, varlen_attention
from cinema_cli.runtime.torch_compat import prepare_torch

prepare_torch()
from diffusers.models.transformers.transformer_wan import WanAttnProcessor, _get_qkv_projections  # noqa: E402


@dataclass
class SceneAttention:
    """The scene being denoised: set by the denoising loop, read by every processor."""

    shots: ShotLayout | None = None
    prompts: PromptLayout | None = None  # None: this pass has a plain prompt (full cross-attention)
    kernel: str = "auto"
    # False: self-attention stays dense over the whole scene (HoloCine's full-attention model).
    sparse_self: bool = True


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # As diffusers' WanAttnProcessor: interleaved pairs rotated by the 3-D RoPE angles.
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


class _SceneProcessor:
    _attention_backend = None
    _parallel_config = None

    def __init__(self, scene: SceneAttention):
        self.scene = scene
        self._plain = WanAttnProcessor()

    def _hand_over(self, attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb):
        self._plain._attention_backend = self._attention_backend
        self._plain._parallel_config = self._parallel_config
        return self._plain(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)

    def _project(self, attn, hidden_states, context, rotary_emb):
        query, key, value = _get_qkv_projections(attn, hidden_states, context)
        query, key = attn.norm_q(query), attn.norm_k(key)
        query, key, value = (t.unflatten(2, (attn.heads, -1)) for t in (query, key, value))
        if rotary_emb is not None:
            query, key = _apply_rotary(query, *rotary_emb), _apply_rotary(key, *rotary_emb)
        return query, key, value

    def _solve(self, query, key, value, segments: list[Segment]) -> torch.Tensor:
        if pick_kernel(self.scene.kernel, query) == "flash-varlen":
            return varlen_attention(query, key, value, segments, flash_varlen())
        return packed_attention(query, key, value, segments, dispatch_attend(self._attention_backend),
                                own_and_shared=own_and_shared_kernel(query, self._attention_backend))

    def _finish(self, attn, out: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))

    # ------------------------------------------------------------ context parallelism

    def _context_parallel(self):
        return self._parallel_config.context_parallel_config if self._parallel_config is not None else None

    def _split(self, local: int, total: int):
        """How the scene's `total` video tokens are split across the context-parallel group
        (None without one), checked against the `local` tokens this process was given."""
        cp = self._context_parallel()
        if cp is None:
            if local != total:
                raise ValueError(f"the scene layout has {total} video tokens, the model got {local}")
            return None
        from cinema_cli.attention.context_parallel import ContextSplit

        split = ContextSplit.of(cp, total)
        start, end = split.own
        if end - start != local:
            raise ValueError(f"context parallelism: this process holds {local} of the scene's {total} video "
                             f"tokens, its split says {end - start}")
        return split


class ShotSelfAttnProcessor(_SceneProcessor):
    """Sparse inter-shot self-attention: dense within a shot, plus the summary tokens (the
    first latent frame) of every other shot.

    Under context parallelism dense self-attention (no layout, one shot, the full variant)
    runs here too, as the pattern of one segment: diffusers' own ring attention needs a
    kernel returning log-sum-exp, which its native (SDPA) backend is not."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        shots = self.scene.shots
        dense = shots is None or shots.shots == 1 or not self.scene.sparse_self
        if attention_mask is not None or (dense and self._context_parallel() is None):
            return self._hand_over(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        query, key, value = self._project(attn, hidden_states, None, rotary_emb)
        total = self._total(query.shape[1]) if shots is None else shots.length
        segments = [Segment((0, total), ((0, total),))] if dense else shots.self_segments()
        split = self._split(query.shape[1], total)
        if split is None:
            return self._finish(attn, self._solve(query, key, value, segments), query)
        from cinema_cli.attention.context_parallel import context_parallel_attention

        return self._finish(attn, context_parallel_attention(query, key, value, segments, split, self._solve), query)

    def _total(self, local: int) -> int:
        """The whole sequence's length when no layout says it (a plain clip): the even split's."""
        cp = self._context_parallel()
        if cp.ulysses_anything or cp.ring_anything:
            raise ValueError("a clip without a scene layout needs the even context-parallel split")
        return local * cp.ring_degree * cp.ulysses_degree


class ShotCrossAttnProcessor(_SceneProcessor):
    """Window cross-attention: shot i's video tokens see the global prompt and shot i's prompt."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        shots, prompts = self.scene.shots, self.scene.prompts
        if shots is None or prompts is None or attention_mask is not None:
            return self._hand_over(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        if attn.add_k_proj is not None:
            raise ValueError(
                "window cross-attention needs a Wan model without CLIP image context "
                "(a Wan2.2-style image-to-video model)"
            )
        if encoder_hidden_states.shape[1] != prompts.length:
            raise ValueError(
                f"the scene prompt layout has {prompts.length} tokens, the model got {encoder_hidden_states.shape[1]}"
            )
        # Every process holds the whole prompt: its own video tokens need no exchange.
        query, key, value = self._project(attn, hidden_states, encoder_hidden_states, None)
        split = self._split(query.shape[1], shots.length)
        start = split.own[0] if split is not None else 0
        segments = local_segments(prompts.window_segments(shots), start, start + query.shape[1])
        return self._finish(attn, self._solve(query, key, value, segments), query)


def install_scene_attention(transformer, scene: SceneAttention) -> None:
    """Put the scene processors on every block of a WanTransformer3DModel (attn1: self,
    attn2: cross), keeping the attention backend and parallel config already set on it."""
    processors = {}
    for name, old in transformer.attn_processors.items():
        cls = ShotSelfAttnProcessor if ".attn1." in name else ShotCrossAttnProcessor
        new = cls(scene)
        new._attention_backend = getattr(old, "_attention_backend", None)
        new._parallel_config = getattr(old, "_parallel_config", None)
        processors[name] = new
    transformer.set_attn_processor(processors)
