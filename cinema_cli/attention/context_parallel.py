"""Context parallelism for the shot-aware processors: the video tokens of one scene split
across the processes of a context-parallel group.

diffusers does the splitting: `enable_parallelism(config=ContextParallelConfig(...))`
hooks the model by its `_cp_plan` (the Wan transformer splits the hidden states and the
RoPE before the first block and gathers after `proj_out`), and hands the config to every
attention processor. What diffusers' templated Ulysses/ring attention cannot do is our
pattern: they wrap one dense attention call per process (at most with a dense mask),
while the sparse pattern is many packed dense problems (`Segment`s), so the exchange is
done here with torch.distributed collectives (gloo on the CPU, NCCL on CUDA) and the
pattern is applied in between:

- Ulysses: one all-to-all turns (own tokens, all heads) into (the group's tokens, heads/U);
  each process then solves the whole pattern for its heads, unchanged; a second
  all-to-all turns the answer back. Slices may be uneven (diffusers' `*_anything` split,
  `torch.tensor_split`); the heads must divide by U. Differentiable (training).
- ring: the K/V slices travel around the ring (send/recv, the next slice in flight while
  this one is solved); against each slice, every segment's key runs are cut to that
  slice, and the partial answers merge by their log-sum-exp. A process holds two K/V
  slices at a time, never the whole. Inference only (no backward pass).

With both degrees above 1 they compose as diffusers' unified attention does: Ulysses
inside groups of U consecutive slices, a ring across those groups.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from cinema_cli.attention.layout import Run, Segment
from cinema_cli.attention.sparse import packed_attention

# solve(q, k, v, segments) -> out: the pattern's attention on one process (any kernel).
Solve = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, list[Segment]], torch.Tensor]


def split_sizes(total: int, parts: int, uneven: bool) -> tuple[int, ...]:
    """Tokens of each process, as diffusers' sharders split: `tensor_split` in the
    `*_anything` modes, else `chunk` (which needs a length divisible by `parts`)."""
    if not uneven and total % parts:
        raise ValueError(
            f"context parallelism over {parts} processes needs a token count divisible by {parts} "
            f"(got {total}); use the uneven split (ulysses_anything / ring_anything)"
        )
    return tuple(len(p) for p in torch.arange(total).tensor_split(parts)) if uneven else (total // parts,) * parts


@dataclass(frozen=True)
class ContextSplit:
    """Where the tokens of a sequence of `sum(sizes)` lie across the group. Process
    (r, u) of the (ring, ulysses) mesh holds slice r*U + u (diffusers' flattened mesh)."""

    sizes: tuple[int, ...]
    ring: int
    ulysses: int
    ring_rank: int
    ulysses_rank: int
    ring_group: object
    ulysses_group: object

    @classmethod
    def of(cls, cp, total: int) -> ContextSplit:
        """The split of `total` tokens under a set-up diffusers ContextParallelConfig."""
        world = cp.ring_degree * cp.ulysses_degree
        return cls(
            split_sizes(total, world, cp.ulysses_anything or cp.ring_anything),
            cp.ring_degree, cp.ulysses_degree, cp._ring_local_rank, cp._ulysses_local_rank,
            cp._ring_mesh.get_group(), cp._ulysses_mesh.get_group(),
        )

    def start(self, index: int) -> int:
        return sum(self.sizes[:index])

    @property
    def own(self) -> Run:
        """This process's tokens."""
        index = self.ring_rank * self.ulysses + self.ulysses_rank
        return self.start(index), self.start(index + 1)

    def ring_slice(self, ring_rank: int) -> Run:
        """The tokens of one Ulysses group (all of them after its all-to-all)."""
        return self.start(ring_rank * self.ulysses), self.start((ring_rank + 1) * self.ulysses)

    @property
    def group_sizes(self) -> list[int]:
        """Tokens of each process of this process's Ulysses group."""
        first = self.ring_rank * self.ulysses
        return list(self.sizes[first:first + self.ulysses])


# ---------------------------------------------------------------- Ulysses


def _sequence_to_heads(x: torch.Tensor, split: ContextSplit) -> torch.Tensor:
    """(B, own tokens, H, D) -> (B, group tokens, H/U, D): head group j goes to process j."""
    batch, tokens, heads, dim = x.shape
    u = split.ulysses
    send = x.reshape(batch, tokens, u, heads // u, dim).permute(2, 1, 0, 3, 4)
    send = send.reshape(u * tokens, batch, heads // u, dim)
    sizes = split.group_sizes
    recv = x.new_empty(sum(sizes), batch, heads // u, dim)
    dist.all_to_all_single(recv, send.contiguous(), sizes, [tokens] * u, group=split.ulysses_group)
    return recv.permute(1, 0, 2, 3)


def _heads_to_sequence(y: torch.Tensor, split: ContextSplit) -> torch.Tensor:
    """The inverse: (B, group tokens, H/U, D) -> (B, own tokens, H, D)."""
    batch, _, local_heads, dim = y.shape
    u = split.ulysses
    sizes = split.group_sizes
    tokens = sizes[split.ulysses_rank]
    recv = y.new_empty(u * tokens, batch, local_heads, dim)
    dist.all_to_all_single(recv, y.permute(1, 0, 2, 3).contiguous(), [tokens] * u, sizes, group=split.ulysses_group)
    out = recv.reshape(u, tokens, batch, local_heads, dim).permute(2, 1, 0, 3, 4)
    return out.reshape(batch, tokens, u * local_heads, dim)


class _SequenceToHeads(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, split):
        ctx.split = split
        return _sequence_to_heads(x, split)

    @staticmethod
    def backward(ctx, grad):
        return _heads_to_sequence(grad.contiguous(), ctx.split), None


class _HeadsToSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, split):
        ctx.split = split
        return _heads_to_sequence(y, split)

    @staticmethod
    def backward(ctx, grad):
        return _sequence_to_heads(grad.contiguous(), ctx.split), None


def ulysses_attention(q, k, v, segments: Sequence[Segment], split: ContextSplit, solve: Solve) -> torch.Tensor:
    """The pattern over the Ulysses group's tokens, each process solving H/U heads.
    `segments` are the pattern's, with query runs made local to the group's tokens."""
    heads = q.shape[2]
    if heads % split.ulysses:
        raise ValueError(f"Ulysses context parallelism over {split.ulysses} processes needs the attention heads "
                         f"({heads}) to divide by {split.ulysses}; choose another degree or ring")
    q, k, v = (_SequenceToHeads.apply(t, split) for t in (q, k, v))
    return _HeadsToSequence.apply(solve(q, k, v, list(segments)), split)


# ---------------------------------------------------------------- ring


def cut_keys(segments: Sequence[Segment], start: int, end: int) -> list[Segment]:
    """The segments against the keys [start, end) only, key runs made local to it;
    segments left without keys are dropped."""
    cut = []
    for segment in segments:
        keys = tuple((max(a, start) - start, min(b, end) - start)
                     for a, b in segment.keys if min(b, end) > max(a, start))
        if keys:
            cut.append(Segment(segment.queries, keys))
    return cut


def attend_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One dense attention call, (B, S, H, D) in, (B, S, H, D + 1) float32 out: the
    answer and, in the last channel, each query's log-sum-exp of its scores."""
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    if q.is_cuda:
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(qt, kt, vt, None, True)[:2]
        lse = lse[..., :q.shape[1]]  # padded to a multiple of 32 queries
    else:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(qt, kt, vt)[:2]
    return torch.cat([out.float(), lse.float().unsqueeze(-1)], dim=-1).transpose(1, 2)


def _merge(acc: torch.Tensor, part: torch.Tensor) -> None:
    """Fold one K/V slice's (answer, lse) into the running one, in place: the softmax over
    the union of keys is each part weighted by exp(its lse - the union's lse)."""
    lse_acc, lse_part = acc[..., -1:], part[..., -1:]
    union = torch.logaddexp(lse_acc, lse_part)
    safe = torch.where(torch.isneginf(union), torch.zeros_like(union), union)  # no keys yet: stays 0
    acc[..., :-1] = acc[..., :-1] * torch.exp(lse_acc - safe) + part[..., :-1] * torch.exp(lse_part - safe)
    acc[..., -1:] = union


def _exchange(kv: torch.Tensor, split: ContextSplit, step: int) -> tuple[torch.Tensor, list]:
    """Send the K/V slice held at `step` to the next process of the ring and receive the
    previous one's (asynchronously): the slice of ring rank (rank - step - 1)."""
    ring, rank = split.ring, split.ring_rank
    start, end = split.ring_slice((rank - step - 1) % ring)
    recv = kv.new_empty((kv.shape[0], kv.shape[1], end - start, *kv.shape[3:]))
    group = split.ring_group
    ops = [dist.P2POp(dist.isend, kv.contiguous(), dist.get_global_rank(group, (rank + 1) % ring), group),
           dist.P2POp(dist.irecv, recv, dist.get_global_rank(group, (rank - 1) % ring), group)]
    return recv, dist.batch_isend_irecv(ops)


def ring_attention(q, k, v, segments: Sequence[Segment], split: ContextSplit, attend_lse=attend_with_lse,
                   budget: int | None = None) -> torch.Tensor:
    """The pattern against every K/V slice of the ring in turn, merged by log-sum-exp.
    `segments` have query runs local to `q` and key runs in whole-sequence positions."""
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        raise RuntimeError("ring context parallelism runs inference only; train with Ulysses (mode: ulysses)")
    batch, tokens, heads, dim = q.shape
    acc = q.new_zeros((batch, tokens, heads, dim + 1), dtype=torch.float32)
    acc[..., -1] = float("-inf")
    kv = torch.stack([k, v])
    for step in range(split.ring):
        pending = _exchange(kv, split, step) if step < split.ring - 1 else None
        start, end = split.ring_slice((split.ring_rank - step) % split.ring)
        cut = cut_keys(segments, start, end)
        if cut:
            part = torch.full_like(acc, 0.0)
            part[..., -1] = float("-inf")
            packed_attention(q, kv[0], kv[1], cut, attend_lse, budget=budget or kv.shape[2], out=part)
            _merge(acc, part)
        if pending is not None:
            kv, works = pending
            for work in works:
                work.wait()
    return acc[..., :-1].to(q.dtype)


# ---------------------------------------------------------------- the processors' entry point


def context_parallel_attention(q, k, v, segments: Sequence[Segment], split: ContextSplit, solve: Solve) -> torch.Tensor:
    """Self-attention of the pattern for this process's queries, (B, own tokens, H, D), from
    the local slices of Q, K and V. `segments` are the whole sequence's."""
    from cinema_cli.attention.layout import local_segments

    start, end = split.ring_slice(split.ring_rank)
    local = local_segments(segments, start, end)
    if split.ring == 1:
        return ulysses_attention(q, k, v, local, split, solve)
    if split.ulysses == 1:
        return ring_attention(q, k, v, local, split)
    return ulysses_attention(q, k, v, local, split, lambda q, k, v, s: ring_attention(q, k, v, s, split))
