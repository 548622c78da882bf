"""`cinema bench attention`: is sparse inter-shot attention really cheaper than full
attention, by as much as its FLOPs say, and does its memory grow linearly in shots?

Scenes of 1..16 shots of 5 latent frames each, every shot summarised by its first latent
frame. Full attention is one dense call over the whole scene; the sparse path is the
packed kernel the scene processors use (and flash-attn varlen where it can run). Both go
through the same diffusers dispatch, so the ratio is the pattern's, not a kernel's.

Times are the best of several runs, full and sparse interleaved (a busy machine only ever
adds time); on a CPU with one thread by default, so a descheduled OpenMP thread cannot
stall the other at every barrier (the ratio, not the absolute time, is the result).
Peak memory is the extra the call needs beyond its inputs: measured in a fresh worker
process per point on a CPU (peak RSS, which only grows within a process), with
torch.cuda.max_memory_allocated on a GPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable

from cinema_cli.errors import CinemaError

SHOTS = (1, 2, 4, 8, 13, 16)
FRAMES_PER_SHOT = 5
SUMMARY_FRAMES = 1
# Tokens per latent frame: 480x832 on a GPU (30x52 patches); fewer on a CPU, so full
# attention over 16 shots stays well under a minute.
GPU_TOKENS, CPU_TOKENS = 1560, 96
HEADS, HEAD_DIM = 8, 64


def segments_of(shots: int, tokens: int):
    from cinema_cli.attention.layout import ShotLayout

    layout = ShotLayout.from_frames([FRAMES_PER_SHOT] * shots, tokens, SUMMARY_FRAMES)
    return layout, layout.self_segments()


def theoretical_speedup(shots: int, tokens: int) -> float:
    """Full attention's query-key pairs over the sparse pattern's (FLOPs are proportional)."""
    layout, segments = segments_of(shots, tokens)
    sparse = sum((s.queries[1] - s.queries[0]) * s.key_length for s in segments)
    return layout.length**2 / sparse


def paths(device: str) -> dict[str, Callable]:
    """Path name -> attend(q, k, v, segments) for this device."""
    from cinema_cli.attention.kernels import dispatch_attend, flash_varlen
    from cinema_cli.attention.sparse import packed_attention, varlen_attention

    dense = dispatch_attend()
    found = {
        "full": lambda q, k, v, segments: dense(q, k, v),
        "sparse-sdpa": lambda q, k, v, segments: packed_attention(q, k, v, segments, dense),
    }
    if device == "cuda" and flash_varlen() is not None:
        found["sparse-flash-varlen"] = lambda q, k, v, segments: varlen_attention(q, k, v, segments, flash_varlen())
    return found


def inputs(shots: int, tokens: int, device: str):
    import torch

    layout, segments = segments_of(shots, tokens)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    g = torch.Generator(device).manual_seed(0)
    q, k, v = (torch.randn(1, layout.length, HEADS, HEAD_DIM, generator=g, device=device, dtype=dtype)
               for _ in range(3))
    return q, k, v, segments


def best_times(shots: int, tokens: int, device: str, repeats: int) -> dict[str, float]:
    """Best seconds of each path, the paths run in turn `repeats` times after a warm-up."""
    import torch

    q, k, v, segments = inputs(shots, tokens, device)
    attend = paths(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    best = {name: float("inf") for name in attend}
    for round_ in range(repeats + 1):
        for name, run in attend.items():
            sync()
            start = time.perf_counter()
            run(q, k, v, segments)
            sync()
            if round_:  # round 0 warms up
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def _status_bytes(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in bytes."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def peak_bytes(shots: int, tokens: int, device: str, path: str) -> int:
    """Memory the call needs beyond its inputs (its output included). Call in a fresh process
    on a CPU: VmHWM, its peak RSS, only grows (and, unlike ru_maxrss, starts afresh at exec
    rather than from the parent's peak)."""
    import torch

    run = paths(device)[path]
    run(*inputs(1, 1, device))  # a tiny warm-up: the libraries' one-time allocations are not the call's
    q, k, v, segments = inputs(shots, tokens, device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run(q, k, v, segments)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    before = _status_bytes("VmRSS")
    run(q, k, v, segments)
    return _status_bytes("VmHWM") - before


def peak_in_worker(shots: int, tokens: int, device: str, path: str) -> int:
    proc = subprocess.run(
        [sys.executable, "-m", "cinema_cli.bench.attention_worker", str(shots), str(tokens), device, path],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise CinemaError(f"bench attention worker ({shots} shots, {path}) failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_bytes"]


def run_attention_bench(
    shots: tuple[int, ...] = SHOTS, tokens: int | None = None, repeats: int = 5, threads: int | None = 1
) -> dict:
    from cinema_cli.runtime.torch_compat import prepare_torch

    prepare_torch()
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokens = tokens or (GPU_TOKENS if device == "cuda" else CPU_TOKENS)
    if device == "cpu" and threads:
        torch.set_num_threads(threads)
    rows = []
    for count in shots:
        times = best_times(count, tokens, device, repeats)
        theoretical = theoretical_speedup(count, tokens)
        row = {"shots": count, "tokens": count * FRAMES_PER_SHOT * tokens, "theoretical_speedup": round(theoretical, 3)}
        for path, seconds in times.items():
            row[f"{path}_seconds"] = round(seconds, 5)
            peak = peak_bytes(count, tokens, device, path) if device == "cuda" else \
                peak_in_worker(count, tokens, device, path)
            row[f"{path}_peak_mb"] = round(peak / 2**20, 2)
            if path != "full":
                speedup = times["full"] / seconds
                row[f"{path}_speedup"] = round(speedup, 3)
                row[f"{path}_efficiency"] = round(speedup / theoretical, 3)
        rows.append(row)
    sparse = "sparse-flash-varlen" if "sparse-flash-varlen_seconds" in rows[0] else "sparse-sdpa"
    by_shots = {r["shots"]: r for r in rows}
    report = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "dtype": "bfloat16" if device == "cuda" else "float32",
        "threads": torch.get_num_threads(),
        "frames_per_shot": FRAMES_PER_SHOT,
        "summary_frames": SUMMARY_FRAMES,
        "tokens_per_frame": tokens,
        "heads": HEADS,
        "head_dim": HEAD_DIM,
        "sparse_path": sparse,
        "rows": rows,
        "efficiency_target": 0.8,
        # One shot has nothing to skip (the scene processors hand it to the dense path).
        "min_efficiency": min((r[f"{sparse}_efficiency"] for r in rows if r["shots"] > 1), default=None),
    }
    if 13 in by_shots:
        report["speedup_13_shots"] = by_shots[13][f"{sparse}_speedup"]
        report["speedup_13_shots_target"] = 3.0
    if 8 in by_shots and 16 in by_shots:
        # Linear memory doubles from 8 to 16 shots; a dense score matrix would quadruple.
        report["sparse_peak_ratio_16_over_8"] = round(
            by_shots[16][f"{sparse}_peak_mb"] / by_shots[8][f"{sparse}_peak_mb"], 3)
    return report
