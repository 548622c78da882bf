"""Captain Cinema's interleaved keyframe model: the hybrid masks on FLUX.2's transformer,
checked against the plain transformer and against the masks' dense definition."""

from __future__ import annotations

import copy

import pytest
import torch

from cinema_cli.attention.pairs import PairLayout
from cinema_cli.attention.reference import masked_attention, segment_mask
from cinema_cli.keyframes.interleaved_model import InterleavedFlux2, Pair, interleave
from cinema_cli.runtime.tiny import seeded
from cinema_cli.runtime.tiny_flux2 import LATENT_CHANNELS, TEXT_WIDTH, tiny_transformer

TOL = 1e-5  # float32


def model(num_layers: int = 2, num_single_layers: int = 2) -> InterleavedFlux2:
    with seeded(0):
        return InterleavedFlux2(tiny_transformer(num_layers, num_single_layers), kernel="sdpa")


def pair(seed: int, height: int, width: int, text: int) -> Pair:
    g = torch.Generator().manual_seed(seed)
    return Pair(torch.randn(height * width, 4 * LATENT_CHANNELS, generator=g), height, width,
                torch.randn(text, 3 * TEXT_WIDTH, generator=g))


# Context pairs smaller than the target, as GoldenMem makes them, captions of varied length.
PAIRS = [pair(1, 2, 4, 5), pair(2, 3, 6, 7), pair(3, 4, 8, 6)]
TIMES = torch.tensor([[0.05, 0.2, 0.9]])


def dense_solver(q, k, v, segments):
    return masked_attention(q, k, v, segment_mask(segments, q.shape[1], k.shape[1]))


def image_of(out: torch.Tensor, layout: PairLayout, i: int) -> torch.Tensor:
    return out[0, layout.image[i]:layout.image[i + 1]]


def test_one_pair_is_the_plain_flux2_transformer():
    m = model()
    p = PAIRS[2]
    seq = interleave([p])
    plain = m.transformer(hidden_states=seq.latents, encoder_hidden_states=seq.text, timestep=torch.tensor([0.7]),
                          img_ids=seq.image_ids, txt_ids=seq.text_ids).sample
    ours = m(seq, torch.tensor([[0.7]]))
    assert plain.abs().mean() > 1e-2  # a transformer that returns nothing would pass trivially
    assert torch.allclose(ours, plain, atol=TOL, rtol=0)


@pytest.mark.parametrize("mask", ["bidirectional", "causal"])
def test_packed_equals_the_dense_masked_reference(mask):
    m = model()
    seq = interleave(PAIRS)
    packed = m(seq, TIMES, mask)
    m.attention.solver = dense_solver
    dense = m(seq, TIMES, mask)
    assert (packed - dense).abs().max() <= TOL


def test_local_blocks_see_their_own_pair_only():
    m = model(num_layers=2, num_single_layers=0)  # the double-stream (local) blocks alone
    seq = interleave(PAIRS)
    base = m(seq, TIMES)
    changed = interleave([PAIRS[0], pair(9, 3, 6, 7), PAIRS[2]])
    times = TIMES.clone()
    times[0, 1] = 0.5  # pair 1: other image, caption and noise level
    out = m(changed, times)
    for i in (0, 2):
        assert torch.allclose(image_of(out, seq.layout, i), image_of(base, seq.layout, i), atol=TOL, rtol=0)
    assert not torch.allclose(image_of(out, seq.layout, 1), image_of(base, seq.layout, 1), atol=1e-3)


def test_global_blocks_mix_pairs_and_the_causal_mask_hides_the_future():
    m = model()
    seq = interleave(PAIRS)
    future = interleave([*PAIRS[:2], pair(9, 4, 8, 6)])
    bidirectional = m(seq, TIMES), m(future, TIMES)
    causal = m(seq, TIMES, "causal"), m(future, TIMES, "causal")
    for i in (0, 1):
        # Bidirectional: a later pair changes the earlier ones; causal: it cannot.
        assert not torch.allclose(image_of(bidirectional[0], seq.layout, i), image_of(bidirectional[1], seq.layout, i),
                                  atol=1e-4)
        assert torch.allclose(image_of(causal[0], seq.layout, i), image_of(causal[1], seq.layout, i), atol=TOL, rtol=0)
    past = interleave([pair(8, 2, 4, 5), *PAIRS[1:]])
    assert not torch.allclose(image_of(m(past, TIMES, "causal"), seq.layout, 2), image_of(causal[0], seq.layout, 2),
                              atol=1e-4)


def test_each_pair_has_its_own_noise_level():
    m = model()
    seq = interleave(PAIRS)
    times = TIMES.clone()
    times[0, 0] = 0.6
    a, b = m(seq, TIMES, "causal"), m(seq, times, "causal")
    assert not torch.allclose(image_of(a, seq.layout, 0), image_of(b, seq.layout, 0), atol=1e-4)


def test_cached_past_extends_exactly_like_the_whole_causal_sequence():
    m = model()
    whole = m(interleave(PAIRS), TIMES, "causal")
    past = m.remember(interleave(PAIRS[:2]), TIMES[:, :2])
    new = interleave(PAIRS[2:], first_pair=2)
    extended = m(new, TIMES[:, 2:], "causal", past=past)
    layout = interleave(PAIRS).layout
    assert (extended[0] - image_of(whole, layout, 2)).abs().max() <= TOL
    with pytest.raises(ValueError, match="causal"):
        m(new, TIMES[:, 2:], "bidirectional", past=past)


def test_the_model_adds_no_weights_and_trains():
    m = model()
    plain = copy.deepcopy(m.transformer)
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in plain.parameters())
    seq = interleave(PAIRS)
    loss = m(seq, TIMES).square().mean()
    loss.backward()
    grads = [p.grad for p in m.transformer.transformer_blocks[0].parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_layouts_refuse_what_cannot_be_a_pair():
    with pytest.raises(ValueError):
        PairLayout.from_lengths([3], [0])
    with pytest.raises(ValueError):
        PairLayout.from_lengths([3, 2], [4])
    m = model()
    with pytest.raises(ValueError, match="timesteps"):
        m(interleave(PAIRS), torch.tensor([[0.1, 0.2]]))
