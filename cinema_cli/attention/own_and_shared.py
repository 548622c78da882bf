"""Training kernel for segments whose keys are their own run plus runs they all share
(HoloCine's pattern: a shot's tokens, then every shot's summary), on the CPU.

The packed call solves each segment as its own short problem: its queries against a copy
of its own keys and the shared ones. The CPU flash kernel is least efficient on short
query sequences (about 20 % more time per score at 256 queries than at 3,000, forward and
backward), and the copies cost memory traffic both ways. Here the keys are split in two
parts solved separately and merged by their log-sum-exp, as ring attention merges K/V
slices: every segment against its own keys (a view, batched over the segments), and all
the queries at once, as one long sequence, against the shared keys (one gather). The
backward pass runs the kernel's backward on each part with the merged output and
log-sum-exp, which gives each part's share of the exact gradient.

It uses torch's CPU flash-attention operators directly, so it stands in only for the
default (native) attention backend on CPU tensors.
"""

from __future__ import annotations

import torch

_FORWARD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_BACKWARD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward


def usable(q: torch.Tensor, backend) -> bool:
    """Whether this kernel may replace the model's attention backend for these tensors:
    the backend diffusers' dispatch would use (the model's, else the active one) is native."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    name = _AttentionBackendRegistry.get_active_backend()[0] if backend is None else AttentionBackendName(backend)
    return q.device.type == "cpu" and name == AttentionBackendName.NATIVE and q.dtype in (
        torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _per_segment(x: torch.Tensor, segments: int) -> torch.Tensor:
    """(batch, segments x tokens, ...) -> (batch x segments, tokens, ...)."""
    return x.unflatten(1, (segments, -1)).flatten(0, 1)


def _heads_first(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2)


class OwnAndShared(torch.autograd.Function):
    """q (batch, segments x tokens, heads, dim): the queries of consecutive segments of
    equal length; k, v (batch, keys, heads, dim): segment i's own keys are k[:, own + i x
    own_length : own + (i + 1) x own_length], the shared keys k[:, shared] (an index).
    Returns each query's attention over its own and the shared keys, shaped as q.

    K and V enter whole, so backward hands each one gradient tensor (the own part's, with
    the shared part's added at its positions) rather than one per part for autograd to sum."""

    @staticmethod
    def forward(ctx, q, k, v, segments: int, own: int, own_length: int, shared: torch.Tensor):
        k_own, v_own = (t.narrow(1, own, segments * own_length).unflatten(1, (segments, own_length)) for t in (k, v))
        k_shared, v_shared = k.index_select(1, shared), v.index_select(1, shared)
        part, part_lse = _FORWARD(*(_heads_first(t) for t in (
            _per_segment(q, segments), k_own.flatten(0, 1), v_own.flatten(0, 1))))
        other, other_lse = _FORWARD(*(_heads_first(t) for t in (q, k_shared, v_shared)))
        # Back to (batch, tokens, heads, ...) (the kernel's outputs are laid out so: views).
        part, part_lse = _heads_first(part).reshape(q.shape), _heads_first(part_lse).reshape(q.shape[:3])
        other, other_lse = _heads_first(other), _heads_first(other_lse)
        lse = torch.logaddexp(part_lse, other_lse)
        out = part.float().mul_((part_lse - lse).exp_().unsqueeze(-1))
        out.addcmul_(other.float(), (other_lse - lse).exp_().unsqueeze(-1))
        out = out.to(q.dtype)
        ctx.save_for_backward(q, k_own, v_own, k_shared, v_shared, out, lse, shared)
        ctx.layout = (k.shape, segments, own)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k_own, v_own, k_shared, v_shared, out, lse, shared = ctx.saved_tensors
        k_shape, segments, own = ctx.layout
        grad = grad.contiguous()
        # The merged output and log-sum-exp make each part's backward its share of the whole's.
        dq, dk_own, dv_own = _BACKWARD(
            *(_heads_first(_per_segment(t, segments)) for t in (grad, q)),
            *(_heads_first(t.flatten(0, 1)) for t in (k_own, v_own)),
            *(_heads_first(_per_segment(t, segments)) for t in (out, lse)), 0.0, False)
        dq_shared, dk_shared, dv_shared = _BACKWARD(
            *(_heads_first(t) for t in (grad, q, k_shared, v_shared, out, lse)), 0.0, False)
        dq = _heads_first(dq).reshape(q.shape).add_(_heads_first(dq_shared))
        dk, dv = (_whole(_heads_first(d_own).flatten(0, 1).unflatten(0, (k_shape[0], -1)), k_shape, own)
                  for d_own in (dk_own, dv_own))
        dk.index_add_(1, shared, _heads_first(dk_shared))
        dv.index_add_(1, shared, _heads_first(dv_shared))
        return dq, dk, dv, None, None, None, None


def _whole(part: torch.Tensor, shape: torch.Size, start: int) -> torch.Tensor:
    """A gradient of `shape` holding `part` from `start` on (along dim 1), zeros elsewhere
    (`part` itself when it is all of it)."""
    if start == 0 and part.shape[1] == shape[1]:
        return part
    whole = part.new_zeros(shape)
    whole.narrow(1, start, part.shape[1]).copy_(part)
    return whole
