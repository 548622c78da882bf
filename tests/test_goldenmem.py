"""GoldenMem: the schedule's sizes and its token bound, as properties over every shape
and history length (hypothesis), plus the memory benchmark's report on a small frame."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cinema_cli.memory.goldenmem import BOUND, PHI, schedule, short_sides

sides = st.integers(4, 512).map(lambda n: n * 16)  # pixels, multiples of 16 as cinema.yaml asks
vae = st.sampled_from([1, 2, 4, 8, 16])
patch = st.sampled_from([1, 2, 4])
history = st.integers(0, 300)


def latent(height: int, width: int, vae_factor: int) -> tuple[int, int]:
    """(short, long) sides of the target in latent units."""
    return min(height, width) // vae_factor, max(height, width) // vae_factor


def test_the_golden_steps():
    assert short_sides(25, 4) == [15, 9, 5, 3]
    assert short_sides(25, 9, group=3) == [15, 15, 15, 9, 9, 9, 5, 5, 5]
    assert short_sides(25, 10, min_side=5) == [15, 9, 5]
    assert math.isclose(BOUND, PHI)  # φ²/(φ²−1) = φ


@settings(max_examples=300, deadline=None)
@given(sides, sides, vae, patch, history)
def test_target_plus_context_never_exceeds_phi_times_the_frame(height, width, vae_factor, p, count):
    plan = schedule(height, width, count, vae_factor=vae_factor, patch=p)
    s0, l0 = latent(height, width, vae_factor)
    # Exact up to float: the floors only ever round down.
    assert plan.tokens * p * p <= BOUND * s0 * l0 * (1 + 1e-12)
    assert plan.target.tokens == (s0 // p) * (l0 // p)


@settings(max_examples=300, deadline=None)
@given(sides, sides, vae, patch, history, st.integers(1, 8), st.integers(1, 8))
def test_groups_cost_at_most_g_times_the_ungrouped_context(height, width, vae_factor, p, count, g, min_side):
    one = schedule(height, width, count, vae_factor=vae_factor, patch=p, min_side=min_side)
    grouped = schedule(height, width, count, vae_factor=vae_factor, patch=p, group=g, min_side=min_side)
    assert grouped.context_tokens <= g * one.context_tokens
    assert len(grouped.context) <= count
    # Each scale is used by g frames (the last group may be cut short by `count`).
    shorts = [min(s.latent) for s in grouped.context]
    assert all(shorts.count(side) <= g for side in set(shorts))


@settings(max_examples=300, deadline=None)
@given(sides, sides, vae, patch, history, st.integers(1, 8), st.integers(1, 40))
def test_sizes_shrink_keep_the_aspect_and_respect_min_side(height, width, vae_factor, p, count, g, min_side):
    plan = schedule(height, width, count, vae_factor=vae_factor, patch=p, group=g, min_side=min_side)
    s0, l0 = latent(height, width, vae_factor)
    frames = [plan.target, *plan.context]
    for bigger, smaller in zip(frames, frames[1:]):
        assert min(smaller.latent) <= min(bigger.latent)
        assert max(smaller.latent) <= max(bigger.latent)
        assert smaller.tokens <= bigger.tokens
    for frame in plan.context:
        short, long = min(frame.latent), max(frame.latent)
        assert short >= min_side and frame.tokens > 0
        assert long * s0 <= l0 * short  # the long side follows the aspect, rounded down
        assert frame.pixels == (frame.latent[0] * vae_factor, frame.latent[1] * vae_factor)
        assert (frame.pixels[0] > frame.pixels[1]) == (height > width) or frame.pixels[0] == frame.pixels[1]
    # It stops early only below the min side, or where a frame would have no whole token.
    offered = short_sides(s0, count, g, min_side)
    assert all(side >= min_side for side in offered)
    if len(plan.context) < len(offered):
        side = offered[len(plan.context)]
        assert (side // p) * (side * l0 // s0 // p) == 0


@settings(max_examples=300, deadline=None)
@given(sides, sides, vae, patch, history, st.integers(1, 100_000))
def test_the_token_budget_is_respected(height, width, vae_factor, p, count, budget):
    plan = schedule(height, width, count, vae_factor=vae_factor, patch=p, budget=budget)
    if budget < plan.target.tokens:
        assert plan.context == ()  # the frame itself is always drawn; its memory is what gives
    else:
        assert plan.tokens <= budget
    free = schedule(height, width, count, vae_factor=vae_factor, patch=p)
    assert plan.context == free.context[: len(plan.context)]  # a golden prefix


def test_the_default_frame_at_48_frames_of_history():
    """1024x512 (the paper's 1:2 frame), vae 8, patch 2: t0 = 32 x 64 tokens."""
    plan = schedule(512, 1024, 48, vae_factor=8, patch=2, min_side=4)
    assert plan.target.tokens == 2048
    assert [s.pixels for s in plan.context] == [(312, 624), (192, 384), (112, 224), (64, 128), (32, 64)]
    assert plan.tokens <= 1.62 * plan.target.tokens


@pytest.mark.filterwarnings("ignore")
def test_memory_bench_reports_tokens_times_and_where_naive_stops():
    from cinema_cli.bench.memory import run_memory_bench

    report = run_memory_bench(height=128, width=256, budget_seconds=0.001, repeats=1, histories=(0, 1, 48))
    rows = {r["history"]: r for r in report["rows"]}
    t0 = report["target"]["tokens"]
    assert t0 == 8 * 16
    assert rows[48]["goldenmem"]["total_tokens"] <= 1.62 * t0
    assert rows[48]["naive"]["total_tokens"] == 49 * t0
    assert rows[0]["goldenmem"]["time_ratio"] == 1.0 and rows[0]["naive"]["seconds"] is not None
    # Any measured run outlasts a 1 ms budget, so the next naive run is projected and skipped.
    assert rows[1]["naive"]["seconds"] is None and rows[1]["naive"]["note"].startswith("not run: projected")
    assert report["naive_stopped"] == rows[48]["naive"]["note"]
    assert all(r["goldenmem"]["seconds"] > 0 for r in report["rows"])
