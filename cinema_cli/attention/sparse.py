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
    budget: int | None = None, out: torch.Tensor | None = None, own_and_shared: Callable | None = None,
) -> torch.Tensor:
    """Each segment's queries attend to its key runs; one `attend` call per chunk of
    segments of one shape, stacked along the batch. Queries outside every segment are zero
    (or, when `out` is given, what it held: the answers are written into it).
    `own_and_shared`: a kernel for the training path (see there)."""
    if out is None and torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        return _packed_attention_for_training(q, k, v, segments, attend, budget, own_and_shared)
    batch = q.shape[0]
    budget = budget or k.shape[1]
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


def _packed_attention_for_training(q, k, v, segments: Sequence[Segment], attend: Attend, budget: int | None,
                                   own_and_shared: Callable | None) -> torch.Tensor:
    """`packed_attention` under autograd, built from views and few autograd nodes (slicing
    and slice assignment per segment would cost backward a zero-filled full-size gradient
    per slice: quadratic in the number of shots).

    Every call's inputs are kept for backward anyway, so calls are not split to save memory:
    one call per shape of segment unless `budget` asks for smaller ones. Its queries are a
    view of `q` when the segments follow one another, its keys the segments' own runs (a
    view) next to the runs they all share (one gather, expanded), and its answers are
    placed by concatenation. With `own_and_shared` (`own_and_shared.OwnAndShared.apply`),
    consecutive segments whose keys are one own run and shared runs go to it instead."""
    batch = q.shape[0]
    shapes: dict[tuple[int, int], list[Segment]] = {}
    for segment in segments:
        shapes.setdefault((segment.queries[1] - segment.queries[0], segment.key_length), []).append(segment)
    answers: list[tuple[int, torch.Tensor]] = []  # (first query, (batch, queries, heads, dim))
    for (q_length, k_length), group in shapes.items():
        per_call = len(group) if budget is None else max(1, budget // k_length)
        for first in range(0, len(group), per_call):
            chunk = group[first:first + per_call]
            start, advancing = chunk[0].queries[0], _advancing([s.queries for s in chunk])
            split = _split_runs([s.keys for s in chunk]) if own_and_shared is not None and advancing else None
            if split is not None and len(split[0]) == 1 and split[1]:
                (own,), shared = split
                rows = _narrow(q, start, len(chunk) * q_length)
                answers.append((start, own_and_shared(rows, k, v, len(chunk), own[0], own[1] - own[0],
                                                      _positions(shared, q.device))))
                continue
            qs = _stacked(q, [(s.queries,) for s in chunk], q_length)
            ks = _stacked(k, [s.keys for s in chunk], k_length)
            vs = _stacked(v, [s.keys for s in chunk], k_length)
            result = attend(qs.flatten(0, 1), ks.flatten(0, 1), vs.flatten(0, 1)).unflatten(0, (batch, len(chunk)))
            if advancing:
                answers.append((start, result.flatten(1, 2)))
            else:
                answers.extend((s.queries[0], result[:, i]) for i, s in enumerate(chunk))
    return _placed(q, answers)


def _advancing(runs: Sequence[Run]) -> bool:
    """Runs of one length, each starting where the one before ended."""
    return all(nxt[0] == cur[1] and nxt[1] - nxt[0] == cur[1] - cur[0] for cur, nxt in zip(runs, runs[1:]))


def _stacked(x: torch.Tensor, runs_of: Sequence[Sequence[Run]], length: int) -> torch.Tensor:
    """(batch, segments, length, heads, dim): each segment's runs of `x` (along dim 1) one
    after another, `length` tokens in all: its own runs next to the shared ones expanded
    where the layout allows (attention does not depend on the keys' order), else gathered
    with one index_select."""
    parts = _own_and_shared(x, runs_of)
    if parts is None:
        index = _positions([run for runs in runs_of for run in runs], x.device)
        return x.index_select(1, index).unflatten(1, (len(runs_of), length))
    own, shared = parts
    if shared is not None:
        shared = shared.unsqueeze(1).expand(x.shape[0], len(runs_of), *shared.shape[1:])
    if own is None or shared is None:
        return shared if own is None else own
    return torch.cat([own, shared], dim=2)


def _own_and_shared(x: torch.Tensor, runs_of: Sequence[Sequence[Run]]):
    """The segments' runs of `x` as (own, shared): the runs that advance with the segment,
    (batch, segments, tokens, heads, dim), a view when there is one, and the runs every
    segment has, (batch, tokens, heads, dim), gathered once; either may be None. None when
    some run is neither."""
    split = _split_runs(runs_of)
    if split is None:
        return None
    own, shared = split
    count = len(runs_of)
    own_parts = [_narrow(x, first[0], count * (first[1] - first[0])).unflatten(1, (count, first[1] - first[0]))
                 for first in own]
    own_keys = (own_parts[0] if len(own_parts) == 1 else torch.cat(own_parts, dim=2)) if own_parts else None
    shared_keys = None
    if shared:
        shared_keys = gather_runs(x, shared) if len(shared) == 1 else x.index_select(1, _positions(shared, x.device))
    return own_keys, shared_keys


def _split_runs(runs_of: Sequence[Sequence[Run]]) -> tuple[list[Run], list[Run]] | None:
    """The segments' runs by position: (the first segment's run of each position that
    advances with the segment, the runs every segment has), or None when some are neither."""
    if len({len(runs) for runs in runs_of}) != 1:
        return None
    by_position = list(zip(*runs_of))
    own = [p for p in by_position if len(runs_of) > 1 and _advancing(p)]
    shared = [p[0] for p in by_position if p not in own and len(set(p)) == 1]
    if len(own) + len(shared) != len(by_position):
        return None
    return [p[0] for p in own], shared


def _narrow(x: torch.Tensor, start: int, length: int) -> torch.Tensor:
    """x[:, start:start + length], x itself when that is all of it (no autograd node)."""
    return x if start == 0 and length == x.shape[1] else x.narrow(1, start, length)


def _positions(runs: Sequence[Run], device: torch.device) -> torch.Tensor:
    return torch.cat([torch.arange(a, b, device=device) for a, b in runs])


def _placed(like: torch.Tensor, answers: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
    """The answers at their query positions in a tensor shaped as `like`, zeros elsewhere,
    by one concatenation (its backward hands each answer a view of the gradient)."""
    pieces, at = [], 0
    for start, answer in sorted(answers, key=lambda a: a[0]):
        if start > at:
            pieces.append(like.new_zeros((like.shape[0], start - at, *like.shape[2:])))
        pieces.append(answer)
        at = start + answer.shape[1]
    if at < like.shape[1]:
        pieces.append(like.new_zeros((like.shape[0], like.shape[1] - at, *like.shape[2:])))
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)


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
