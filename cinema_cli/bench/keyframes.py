"""`cinema bench keyframes`: seconds per keyframe against history length, with the
reference K/V cache on and off.

A keyframe drawn after h earlier keyframes is conditioned on the context `cinema plan`
gives it with the default memory settings: up to h frames at GoldenMem's sizes (the
schedule stops at its minimum side, so a long history costs no more than a short one),
so each row is what a plan pays per keyframe that far into a film. Every keyframe runs the flux2 backend's own
code (`flux2_denoise.generate`): prompt, reference encoding, denoising, decoding.

The transformer has FLUX.2 klein 4B's shape (5 double- and 20 single-stream blocks, heads
of 128, 512 prompt tokens) with random weights: all 24 heads on a GPU, 2 on a CPU so a
run takes minutes. The VAE and text encoder are the tiny preset's: history and the
cache change only the transformer's work. On a GPU the run is repeated in bfloat16 and
float32 and reports peak GPU memory.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
from PIL import Image

from cinema_cli.memory.goldenmem import Schedule, schedule
from cinema_cli.project.schema import MemorySettings
from cinema_cli.runtime.tiny import build_tiny
from cinema_cli.runtime.tiny_flux2 import LATENT_CHANNELS, TEXT_WIDTH
from cinema_cli.runtime.torch_compat import prepare_torch

HISTORIES = (0, 4, 16, 48)
TARGET = 1.5  # history 48 / history 0, per keyframe, with the cache and GoldenMem
# FLUX.2 klein 4B's transformer (its config.json), but for the two widths that only meet
# the tiny VAE and text encoder: the latent channels in, the prompt features in.
KLEIN_4B = dict(
    patch_size=1, num_layers=5, num_single_layers=20, attention_head_dim=128, num_attention_heads=24,
    timestep_guidance_channels=256, mlp_ratio=3.0, axes_dims_rope=(32, 32, 32, 32), rope_theta=2000,
    guidance_embeds=False, in_channels=4 * LATENT_CHANNELS, joint_attention_dim=3 * TEXT_WIDTH,
)
CPU_HEADS = 2
# (width, height): the paper's 1:2 frame on a GPU, a quarter of it on a CPU.
GPU_FRAME, CPU_FRAME = (1024, 512), (512, 256)


def run_keyframes_bench(histories: tuple[int, ...] = HISTORIES, steps: int = 4, repeats: int = 5) -> dict:
    prepare_torch()
    import torch

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    width, height = GPU_FRAME if cuda else CPU_FRAME
    shape = KLEIN_4B if cuda else {**KLEIN_4B, "num_attention_heads": CPU_HEADS}
    runs = []
    for dtype in ("bfloat16", "float32") if cuda else ("float32",):
        pipe = _pipeline(shape, device, getattr(torch, dtype))
        runs += [{"dtype": dtype, **row} for row in _measure(pipe, histories, width, height, steps, repeats, cuda)]
        del pipe
        if cuda:
            torch.cuda.empty_cache()
    ratios = _ratios(runs, histories)
    return {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "transformer": {k: v for k, v in shape.items() if k in ("num_layers", "num_single_layers",
                                                                 "num_attention_heads", "attention_head_dim")},
        "resolution": f"{width}x{height}",
        "steps": steps,
        "runs": runs,
        "ratio_vs_history_0": ratios,
        "target": f"history {max(histories)} <= {TARGET} x history 0 with the cache",
        "meets_target": all(r["cache"] <= TARGET for r in ratios.values()),
    }


def _pipeline(shape: dict, device: str, dtype):
    import torch
    from diffusers import Flux2Transformer2DModel

    from cinema_cli.keyframes.flux2_denoise import use_kv_processors
    from cinema_cli.runtime.tiny import seeded

    with seeded(0), torch.device(device):  # built where it runs: 4B parameters in float32 are 16 GB
        transformer = Flux2Transformer2DModel(**shape).to(dtype).eval()
    pipe = build_tiny("flux2", transformer=transformer)
    use_kv_processors(pipe.transformer)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)  # built in float32


def _measure(pipe, histories, width: int, height: int, steps: int, repeats: int, cuda: bool) -> list[dict]:
    import torch

    from cinema_cli.keyframes.flux2_denoise import Job, generate

    rng = np.random.default_rng(0)
    earlier = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    base = Job(prompt="Medium shot. A woman in a red coat looks out to sea.", references=(), width=width,
               height=height, steps=steps, guidance=1.0, seed=0, mode="kv")
    generate(pipe, base, lambda done, total: None)  # warm-up: kernels, allocator
    rows, jobs = [], []
    for history in histories:
        schedule_ = memory_schedule(MemorySettings(), width, height, history)
        slots = schedule_.context
        for cache in (True, False) if slots else (True,):
            jobs.append(replace(base, references=tuple((earlier, slot.pixels) for slot in slots), cache=cache))
            rows.append({"history": history, "context_frames": len(slots), "frame_tokens": schedule_.target.tokens,
                         "context_tokens": schedule_.context_tokens, "cache": cache, "seconds": []})
    # Round robin, fastest of the rounds: a machine that slows down for a while slows every
    # row alike instead of one of them.
    for _ in range(repeats):
        for row, job in zip(rows, jobs):
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            generate(pipe, job, lambda done, total: None)
            row["seconds"].append(time.perf_counter() - started)
            if cuda:
                row["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 1024**3, 2)
    for row in rows:
        row["seconds_per_keyframe"] = round(min(row.pop("seconds")), 3)
    return rows


def memory_schedule(settings: MemorySettings, width: int, height: int, history: int) -> Schedule:
    """The sizes `cinema plan` gives the context of a keyframe with `history` earlier ones."""
    return schedule(height, width, min(history, settings.max_context), vae_factor=settings.vae_factor,
                    patch=settings.patch, group=settings.group_size, min_side=settings.min_side,
                    budget=settings.token_budget)


def _ratios(runs: list[dict], histories) -> dict:
    """Per dtype: seconds at the longest history over seconds at history 0, cache on and off."""
    out = {}
    for dtype in dict.fromkeys(r["dtype"] for r in runs):
        rows = [r for r in runs if r["dtype"] == dtype]
        zero = next(r["seconds_per_keyframe"] for r in rows if r["history"] == min(histories))
        longest = [r for r in rows if r["history"] == max(histories)]
        pick = {cache: next((r["seconds_per_keyframe"] for r in longest if r["cache"] is cache), zero)
                for cache in (True, False)}
        out[dtype] = {"cache": round(pick[True] / zero, 3), "no_cache": round(pick[False] / zero, 3)}
    return out
