"""Attention processors for diffusers' WanTransformer3DModel that denoise a scene's shots
jointly: sparse inter-shot self-attention (attn1) and window cross-attention (attn2).

They compute the projections, norms and rotary embedding exactly as diffusers'
WanAttnProcessor does and change only which keys each query sees. A `SceneAttention`
shared by all processors of a model carries the layout of the scene being denoised; with
no layout set (or one shot, or a cross-attention pass without a hierarchical prompt, such
as the negative prompt) they hand over to diffusers' own processor unchanged.

diffusers' configuration keeps working: `set_attention_backend` sets `_attention_backend`,
which the per-segment dense calls use; under context parallelism (`enable_parallelism`,
which sets `_parallel_config`) each process holds a slice of the video tokens, so the
self-attention gathers K/V from the group and each process answers its own queries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cinema_cli.attention.kernels import dispatch_attend, flash_varlen, pick_kernel
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
        return packed_attention(query, key, value, segments, dispatch_attend(self._attention_backend))

    def _finish(self, attn, out: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))

    # ------------------------------------------------------------ context parallelism

    def _context_parallel(self):
        return self._parallel_config.context_parallel_config if self._parallel_config is not None else None

    def _local_start(self, local: int, total: int) -> int:
        """Where this process's slice of the video tokens starts in the whole sequence."""
        cp = self._context_parallel()
        if cp is None:
            if local != total:
                raise ValueError(f"the scene layout has {total} video tokens, the model got {local}")
            return 0
        mesh = cp._flattened_mesh
        rank = torch.distributed.get_rank(mesh.get_group())
        # Split as diffusers' sharders split: tensor_split for "anything", chunk otherwise.
        index = torch.arange(total)
        uneven = cp.ulysses_anything or cp.ring_anything
        parts = index.tensor_split(mesh.size()) if uneven else index.chunk(mesh.size())
        return int(parts[rank][0])

    def _whole(self, x: torch.Tensor) -> torch.Tensor:
        """The whole sequence of K or V from the slices the context-parallel group holds."""
        cp = self._context_parallel()
        if cp is None:
            return x
        from diffusers.hooks.context_parallel import EquipartitionSharder, PartitionAnythingSharder

        if cp.ulysses_anything or cp.ring_anything:
            return PartitionAnythingSharder.unshard_anything(x, 1, cp._flattened_mesh)
        return EquipartitionSharder.unshard(x, 1, cp._flattened_mesh)


class ShotSelfAttnProcessor(_SceneProcessor):
    """Sparse inter-shot self-attention: dense within a shot, plus the summary tokens (the
    first latent frame) of every other shot."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        shots = self.scene.shots
        if shots is None or shots.shots == 1 or not self.scene.sparse_self or attention_mask is not None:
            return self._hand_over(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        query, key, value = self._project(attn, hidden_states, None, rotary_emb)
        start = self._local_start(query.shape[1], shots.length)
        key, value = self._whole(key), self._whole(value)
        segments = local_segments(shots.self_segments(), start, start + query.shape[1])
        return self._finish(attn, self._solve(query, key, value, segments), query)


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
        query, key, value = self._project(attn, hidden_states, encoder_hidden_states, None)
        start = self._local_start(query.shape[1], shots.length)
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
