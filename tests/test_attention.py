"""The multi-shot attention: the sparse patterns against their definition (dense masked
attention), the kernels against each other, and the processors inside diffusers'
WanTransformer3DModel against diffusers' own processor."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cinema_cli.attention.kernels import dispatch_attend, pick_kernel
from cinema_cli.attention.layout import PromptLayout, Segment, ShotLayout, local_segments
from cinema_cli.attention.processors import SceneAttention, install_scene_attention
from cinema_cli.attention.reference import masked_attention, segment_mask
from cinema_cli.attention.sparse import packed_attention, varlen_attention

HEADS, DIM = 2, 8


def qkv(queries: int, keys: int | None = None, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    keys = queries if keys is None else keys
    return (torch.randn(batch, queries, HEADS, DIM, generator=g),
            torch.randn(batch, keys, HEADS, DIM, generator=g),
            torch.randn(batch, keys, HEADS, DIM, generator=g))


def full_attention(q, k, v):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def fake_flash_varlen(q, k, v, cu_q, cu_k, max_q, max_k, dropout_p=0.0, softmax_scale=None, causal=False):
    """flash-attn's varlen contract on the CPU: packed (tokens, heads, dim) sequences cut by
    the cumulative offsets, each attended on its own."""
    assert cu_q.dtype == torch.int32 and cu_k.dtype == torch.int32 and not causal
    assert max_q == int((cu_q[1:] - cu_q[:-1]).max()) and max_k == int((cu_k[1:] - cu_k[:-1]).max())
    out = torch.empty_like(q)
    for i in range(len(cu_q) - 1):
        qs, qe, ks, ke = int(cu_q[i]), int(cu_q[i + 1]), int(cu_k[i]), int(cu_k[i + 1])
        out[qs:qe] = full_attention(q[None, qs:qe], k[None, ks:ke], v[None, ks:ke])[0]
    return out


# ---------------------------------------------------------------- masks


def test_sparse_self_mask_is_the_pattern():
    # Shots of 2, 3 and 2 latent frames of 2 tokens each; summary = the first frame.
    layout = ShotLayout.from_frames([2, 3, 2], tokens_per_frame=2)
    assert layout.bounds == (0, 4, 10, 14) and layout.summary == (2, 2, 2)
    mask = segment_mask(layout.self_segments(), 14, 14)
    shot = [0] * 4 + [1] * 6 + [2] * 4
    summary = {0, 1, 4, 5, 10, 11}
    for i in range(14):
        for j in range(14):
            assert bool(mask[i, j]) == (shot[i] == shot[j] or j in summary), (i, j)


def test_window_cross_mask_is_the_pattern():
    shots = ShotLayout.from_frames([1, 2], tokens_per_frame=3)
    prompts = PromptLayout.from_lengths(4, [2, 3])  # global 0-3, shot 0: 4-5, shot 1: 6-8
    mask = segment_mask(prompts.window_segments(shots), shots.length, prompts.length)
    for i in range(shots.length):
        own = range(4, 6) if i < 3 else range(6, 9)
        assert mask[i].nonzero().flatten().tolist() == [*range(4), *own]


def test_layout_refuses_a_summary_larger_than_its_shot():
    with pytest.raises(ValueError):
        ShotLayout((0, 4), (5,))


# ---------------------------------------------------------------- kernels


def test_summary_of_whole_shots_is_full_attention():
    """When every shot's summary is the whole shot, every token sees every token once."""
    frames = [2, 3, 1, 2]
    layout = ShotLayout.from_frames(frames, tokens_per_frame=3, summary_frames=max(frames))
    q, k, v = qkv(layout.length)
    expected = full_attention(q, k, v)
    for budget in (None, 7):  # one call per shape, and chunked down to one shot at a time
        sparse = packed_attention(q, k, v, layout.self_segments(), dispatch_attend(), budget=budget)
        torch.testing.assert_close(sparse, expected, rtol=1e-5, atol=1e-5)
    varlen = varlen_attention(q, k, v, layout.self_segments(), fake_flash_varlen)
    torch.testing.assert_close(varlen, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("frames,summary", [([3, 3, 3, 3], 1), ([2, 5, 1, 3, 4], 1), ([4, 2, 3], 2)])
def test_packed_sdpa_equals_masked_reference(frames, summary):
    layout = ShotLayout.from_frames(frames, tokens_per_frame=4, summary_frames=summary)
    q, k, v = qkv(layout.length)
    segments = layout.self_segments()
    reference = masked_attention(q, k, v, segment_mask(segments, layout.length, layout.length))
    for budget in (None, 1, 23):
        packed = packed_attention(q, k, v, segments, dispatch_attend(), budget=budget)
        torch.testing.assert_close(packed, reference, rtol=1e-5, atol=1e-5)
    for budget in (None, 9):
        varlen = varlen_attention(q, k, v, segments, fake_flash_varlen, budget=budget)
        torch.testing.assert_close(varlen, reference, rtol=1e-5, atol=1e-5)


def test_query_slices_give_the_whole():
    """Context parallelism: each process answers a slice of the queries against the whole
    K/V; the slices together are the whole answer."""
    layout = ShotLayout.from_frames([3, 2, 3], tokens_per_frame=2)
    q, k, v = qkv(layout.length)
    whole = packed_attention(q, k, v, layout.self_segments(), dispatch_attend())
    parts = [
        packed_attention(q[:, a:b], k, v, local_segments(layout.self_segments(), a, b), dispatch_attend())
        for a, b in ((0, 5), (5, 11), (11, 16))
    ]
    torch.testing.assert_close(torch.cat(parts, dim=1), whole)


def test_window_cross_attention_keeps_other_shots_prompts_out():
    shots = ShotLayout.from_frames([2, 2, 3], tokens_per_frame=3)
    prompts = PromptLayout.from_lengths(5, [3, 4, 2])
    q, k, v = qkv(shots.length, prompts.length)
    segments = prompts.window_segments(shots)
    out = packed_attention(q, k, v, segments, dispatch_attend())
    reference = masked_attention(q, k, v, segment_mask(segments, shots.length, prompts.length))
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    # A new prompt for shot 1 (text tokens 8-11): shots 0 and 2 are untouched, shot 1 is not.
    k2, v2 = k.clone(), v.clone()
    k2[:, 8:12], v2[:, 8:12] = torch.randn_like(k2[:, 8:12]), torch.randn_like(v2[:, 8:12])
    changed = packed_attention(q, k2, v2, segments, dispatch_attend())
    for shot in (0, 2):
        a, b = shots.run(shot)
        assert torch.equal(changed[:, a:b], out[:, a:b])
    a, b = shots.run(1)
    assert not torch.allclose(changed[:, a:b], out[:, a:b])


def _training_cases():
    """(name, query tokens, key tokens, segments): each layout the training path treats its own way."""
    holocine = ShotLayout.from_frames([3, 3, 3, 3], tokens_per_frame=4, own_summary_again=True)
    uneven = ShotLayout.from_frames([2, 3, 3, 1, 3], tokens_per_frame=4, own_summary_again=True)
    positional = ShotLayout.from_frames([3, 3, 3], tokens_per_frame=4)  # other shots' summaries only
    shots, prompts = ShotLayout.from_frames([2, 2, 2], tokens_per_frame=3), PromptLayout.from_lengths(5, [3, 3, 3])
    return [
        ("own and shared", holocine.length, holocine.length, holocine.self_segments()),
        ("own and shared, first shot left out", holocine.length, holocine.length, holocine.self_segments()[1:]),
        ("uneven shots", uneven.length, uneven.length, uneven.self_segments()),
        ("positional keys", positional.length, positional.length, positional.self_segments()),
        ("window cross-attention", shots.length, prompts.length, prompts.window_segments(shots)),
    ]


@pytest.mark.parametrize("case", _training_cases(), ids=lambda c: c[0])
def test_training_paths_match_the_looped_reference(case):
    """Under autograd the packed kernel builds its calls from views, shared gathers and (on
    the CPU) the own-and-shared split merged by log-sum-exp: outputs and the gradients of
    Q, K and V equal the definition solved segment by segment (which, unlike a mask, counts
    a key listed twice twice, as HoloCine's pattern lists a shot's own summary)."""
    from cinema_cli.attention.kernels import own_and_shared_kernel
    from cinema_cli.attention.reference import looped_attention

    _, queries, keys, segments = case
    q, k, v = (t.requires_grad_() for t in qkv(queries, keys))
    weights = torch.randn(q.shape, generator=torch.Generator().manual_seed(1))
    expected = looped_attention(q, k, v, segments)
    expected_grads = torch.autograd.grad((expected * weights).sum(), (q, k, v))
    split_calls = []

    def split(*args):
        split_calls.append(args[3])
        return own_and_shared_kernel(q)(*args)

    for kernel, budget in ((None, None), (split, None), (split, 40)):
        out = packed_attention(q, k, v, segments, dispatch_attend(), budget=budget, own_and_shared=kernel)
        grads = torch.autograd.grad((out * weights).sum(), (q, k, v))
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        for got, want in zip(grads, expected_grads):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    if case[0].startswith("own and shared"):
        assert split_calls and max(split_calls) > 2  # the split kernel solved several shots at once
    assert own_and_shared_kernel(q, "flash") is None  # another backend is the model's choice
    from diffusers.models.attention_dispatch import attention_backend

    with attention_backend("_native_math"):  # ... or the one active in diffusers
        assert own_and_shared_kernel(q) is None


def test_kernel_choice_on_this_machine():
    q = torch.zeros(1, 4, HEADS, DIM)
    assert pick_kernel("auto", q) == "sdpa"  # no CUDA tensors here, so never flash-attn
    assert pick_kernel("sdpa", q) == "sdpa"
    with pytest.raises(RuntimeError, match="flash-attn"):
        pick_kernel("flash-varlen", q)


def test_segments_outside_every_shot_are_zero():
    q, k, v = qkv(6)
    out = packed_attention(q, k, v, [Segment((0, 3), ((0, 6),))], dispatch_attend())
    assert torch.equal(out[:, 3:], torch.zeros_like(out[:, 3:]))


# ---------------------------------------------------------------- inside the Wan transformer


@pytest.fixture(scope="module")
def transformer():
    from cinema_cli.runtime.tiny import build_tiny

    return build_tiny("wan", kind="i2v").transformer


def wan_inputs(transformer, frames: int, text: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    config = transformer.config
    hidden = torch.randn(1, config.in_channels, frames, 8, 8, generator=g)
    context = torch.randn(1, text, config.text_dim, generator=g)
    return hidden, torch.tensor([500.0]), context


def test_scene_processors_match_diffusers_when_they_see_everything(transformer):
    """With summaries of whole shots and no prompt windows, the scene processors compute
    exactly what diffusers' WanAttnProcessor does (same projections, norms and RoPE)."""
    hidden, t, context = wan_inputs(transformer, frames=5, text=7)
    with torch.no_grad():
        expected = transformer(hidden, t, context, return_dict=False)[0]
        scene = SceneAttention(shots=ShotLayout.from_frames([2, 3], tokens_per_frame=16, summary_frames=3))
        original = transformer.attn_processors
        install_scene_attention(transformer, scene)
        try:
            got = transformer(hidden, t, context, return_dict=False)[0]
            scene.shots = ShotLayout.from_frames([2, 3], tokens_per_frame=16, summary_frames=1)
            sparse = transformer(hidden, t, context, return_dict=False)[0]
        finally:
            transformer.set_attn_processor(original)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(sparse, expected, atol=1e-4)  # the sparse pattern does change it


def test_window_cross_attention_in_the_model(transformer):
    """Changing shot 1's prompt leaves the cross-attention output of shot 0's tokens unchanged."""
    hidden, _, context = wan_inputs(transformer, frames=4, text=9)
    shots = ShotLayout.from_frames([2, 2], tokens_per_frame=16)
    scene = SceneAttention(shots=shots, prompts=PromptLayout.from_lengths(3, [3, 3]))
    width = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    tokens = torch.randn(1, shots.length, width)
    block = transformer.blocks[0]
    original = transformer.attn_processors
    install_scene_attention(transformer, scene)
    try:
        with torch.no_grad():
            text = transformer.condition_embedder.text_embedder(context)
            before = block.attn2(tokens, text)
            edited = text.clone()
            edited[:, 6:9] = torch.randn_like(edited[:, 6:9])  # shot 1's prompt tokens
            after = block.attn2(tokens, edited)
    finally:
        transformer.set_attn_processor(original)
    assert torch.equal(after[:, :32], before[:, :32])
    assert not torch.allclose(after[:, 32:], before[:, 32:])
