"""The dense masked reference: the sparse patterns as boolean masks over the full score
matrix. Quadratic in memory by construction, so it is used only by the tests, to check
the sparse kernels against the definition."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from cinema_cli.attention.layout import Segment


def segment_mask(segments: Sequence[Segment], queries: int, keys: int) -> torch.Tensor:
    """(queries, keys) bool: True where a query may see a key."""
    mask = torch.zeros(queries, keys, dtype=torch.bool)
    for segment in segments:
        for start, end in segment.keys:
            mask[segment.queries[0]:segment.queries[1], start:end] = True
    return mask


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Dense attention under a boolean mask, in diffusers' (batch, tokens, heads, dim) layout."""
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask.to(q.device)
    )
    return out.transpose(1, 2)


def looped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segments: Sequence[Segment]) -> torch.Tensor:
    """The definition segment by segment: each segment's queries against the concatenation
    of its key runs, one dense call each (a key run listed twice counts twice, which a
    mask cannot say: HoloCine's own-summary-again pattern). Queries outside every segment
    are zero."""
    rows = []
    for segment in segments:
        keys = torch.cat([torch.arange(a, b) for a, b in segment.keys]).to(q.device)
        rows.append((segment.queries, masked_attention(
            q[:, segment.queries[0]:segment.queries[1]], k[:, keys], v[:, keys],
            torch.ones(segment.queries[1] - segment.queries[0], len(keys), dtype=torch.bool))))
    out = torch.zeros_like(q)
    for (start, end), answer in rows:
        out = out.index_copy(1, torch.arange(start, end, device=q.device), answer)
    return out
