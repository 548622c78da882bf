"""The sparse kernels: attention over segments, never a dense score matrix.

Tensors are in diffusers' layout, (batch, tokens, heads, head_dim). Each segment is a
dense problem (its queries against the concatenation of its key runs); segments of the
same shape are stacked along the batch and solved in one dense call (`packed_attention`),
or all segments go to flash-attn's varlen kernel in one call (`varlen_attention`).

The key runs of a segment are copied into one tensor for the dense call. Segments are
batched only while those copies stay within `budget` key tokens (default: as many as K
itself holds), so the extra memory stays linear in the number of shots.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from cinema_cli.attention.layout import Run, Segment

# attend(q, k, v) -> out, all (batch, tokens, heads, head_dim): one dense attention call.
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def gather_runs(x: torch.Tensor, runs: Sequence[Run], dim: int = 1) -> torch.Tensor:
    """The token runs of `x` along `dim`, concatenated (a view when there is one run)."""
    pieces = [x.narrow(dim, start, end - start) for start, end in runs if end > start]
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=dim)


def _chunks(segments: Sequence[Segment], budget: int) -> Iterator[list[Segment]]:
    """Consecutive runs of segments whose gathered keys fit in `budget` tokens (at least one)."""
    chunk: list[Segment] = []
    used = 0
    for segment in segments:
        if chunk and used + segment.key_length > budget:
            yield chunk
            chunk, used = [], 0
        chunk.append(segment)
        used += segment.key_length
    if chunk:
        yield chunk


def packed_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segments: Sequence[Segment], attend: Attend,
    budget: int | None = None, out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Each segment's queries attend to its key runs; one `attend` call per chunk of
    segments of one shape, stacked along the batch. Queries outside every segment are zero
    (or, when `out` is given, what it held: the answers are written into it)."""
    batch = q.shape[0]
    budget = budget or k.shape[1]
    if out is None and torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        return _packed_attention_for_training(q, k, v, segments, attend, budget)
    if out is None:
        covered = sum(s.queries[1] - s.queries[0] for s in segments) == q.shape[1]  # runs are disjoint
        out = torch.empty_like(q) if covered else torch.zeros_like(q)
    shapes: dict[tuple[int, int], list[Segment]] = {}
    for segment in segments:
        shape = (segment.queries[1] - segment.queries[0], segment.key_length)
        shapes.setdefault(shape, []).append(segment)
    for (q_length, k_length), group in shapes.items():
        per_call = max(1, budget // k_length)
        # Gather buffers made once per shape and refilled for every call (fresh memory costs
        # page faults on a CPU, every call over again), laid out head-major and seen through
        # a (batch, tokens, heads, dim) view: the dense kernel then reads each head's rows
        # contiguously, measurably faster on short sequences.
        rows = min(per_call, len(group)) * batch
        # Under autograd a refilled buffer would overwrite what backward needs: fresh ones.
        reuse = not (torch.is_grad_enabled() and q.requires_grad)
        for first in range(0, len(group), per_call):
            if first == 0 or not reuse:
                qs = _head_major(q, rows, q_length)
                ks, vs = _head_major(k, rows, k_length), _head_major(v, rows, k_length)
            chunk = group[first:first + per_call]
            for i, s in enumerate(chunk):
                rows_of = slice(i * batch, (i + 1) * batch)
                qs[rows_of] = q[:, s.queries[0]:s.queries[1]]
                _fill_runs(ks[rows_of], k, s.keys)
                _fill_runs(vs[rows_of], v, s.keys)
            used = len(chunk) * batch
            result = attend(qs[:used], ks[:used], vs[:used])
            for i, s in enumerate(chunk):
                out[:, s.queries[0]:s.queries[1]] = result[i * batch:(i + 1) * batch]
    return out


def _packed_attention_for_training(q, k, v, segments: Sequence[Segment], attend: Attend, budget: int) -> torch.Tensor:
    """`packed_attention` under autograd: each call's queries and key runs gathered with one
    index_select per tensor, and the outputs placed with one index_copy. (Slicing and slice
    assignment would cost backward a zero-filled full-size gradient per slice: quadratic in
    the number of shots.)"""
    batch, device = q.shape[0], q.device
    shapes: dict[tuple[int, int], list[Segment]] = {}
    for segment in segments:
        shapes.setdefault((segment.queries[1] - segment.queries[0], segment.key_length), []).append(segment)
    placed, results = [], []
    for (q_length, k_length), group in shapes.items():
        per_call = max(1, budget // k_length)
        for first in range(0, len(group), per_call):
            chunk = group[first:first + per_call]
            rows = [torch.arange(*s.queries, device=device) for s in chunk]
            keys = [torch.cat([torch.arange(a, b, device=device) for a, b in s.keys]) for s in chunk]
            qs = _rows(q.index_select(1, torch.cat(rows)), len(chunk), q_length)
            ks = _rows(k.index_select(1, torch.cat(keys)), len(chunk), k_length)
            vs = _rows(v.index_select(1, torch.cat(keys)), len(chunk), k_length)
            result = attend(qs, ks, vs)  # (chunk x batch, q_length, heads, dim)
            results.append(result.unflatten(0, (len(chunk), batch)).transpose(0, 1).flatten(1, 2))
            placed.extend(rows)
    if not results:
        return torch.zeros_like(q)
    return torch.zeros_like(q).index_copy(1, torch.cat(placed), torch.cat(results, dim=1))


def _rows(x: torch.Tensor, segments: int, tokens: int) -> torch.Tensor:
    """(batch, segments x tokens, heads, dim) -> (segments x batch, tokens, heads, dim),
    segment-major as packed_attention stacks them."""
    return x.unflatten(1, (segments, tokens)).transpose(0, 1).flatten(0, 1)


def _head_major(like: torch.Tensor, rows: int, tokens: int) -> torch.Tensor:
    """An empty (rows, tokens, heads, dim) tensor stored as (rows, heads, tokens, dim)."""
    heads, dim = like.shape[2:]
    return like.new_empty((rows, heads, tokens, dim)).transpose(1, 2)


def _fill_runs(target: torch.Tensor, x: torch.Tensor, runs: Sequence[Run]) -> None:
    """Copy the token runs of `x` one after another into `target` (along dim 1)."""
    offset = 0
    for start, end in runs:
        target[:, offset:offset + end - start] = x[:, start:end]
        offset += end - start


def varlen_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segments: Sequence[Segment], varlen: Callable,
    budget: int | None = None,
) -> torch.Tensor:
    """The same as `packed_attention` with flash-attn's `flash_attn_varlen_func`: every
    (batch item, segment) is one packed sequence, whatever its length, in one call per chunk."""
    batch = q.shape[0]
    budget = budget or k.shape[1]
    out = torch.zeros_like(q)
    for chunk in _chunks(segments, max(1, budget // batch)):
        pairs = [(b, s) for s in chunk for b in range(batch)]
        q_lengths = [s.queries[1] - s.queries[0] for _, s in pairs]
        k_lengths = [s.key_length for _, s in pairs]
        packed_q = torch.cat([q[b, s.queries[0]:s.queries[1]] for b, s in pairs])
        packed_k = torch.cat([gather_runs(k[b], s.keys, dim=0) for b, s in pairs])
        packed_v = torch.cat([gather_runs(v[b], s.keys, dim=0) for b, s in pairs])
        result = varlen(
            packed_q, packed_k, packed_v,
            _cumulative(q_lengths, q.device), _cumulative(k_lengths, q.device),
            max(q_lengths), max(k_lengths),
            dropout_p=0.0, softmax_scale=None, causal=False,
        )
        offset = 0
        for (b, s), length in zip(pairs, q_lengths):
            out[b, s.queries[0]:s.queries[1]] = result[offset:offset + length]
            offset += length
    return out


def _cumulative(lengths: list[int], device: torch.device) -> torch.Tensor:
    # flash-attn wants int32 offsets [0, l0, l0+l1, ...] on the tensors' device.
    return torch.tensor([0, *lengths], dtype=torch.int32, device=device).cumsum(0, dtype=torch.int32)
