"""`cinema bench memory`: does the cost of remembering stay flat as the film grows?

For each history length (how many earlier keyframes there are), the tokens of the
context with GoldenMem and with naive memory (every earlier frame at full size), and the
measured time of one forward pass of a FLUX.2-style MM-DiT (diffusers
`Flux2Transformer2DModel`, random weights) over target + context image tokens and the
text tokens. On a CPU the model is narrowed (2 heads of 128, one double- and one
single-stream block) so it runs; with CUDA it is FLUX.2 klein 4B's size. Naive runs
stop where the next one is projected to exceed the time budget, or where memory runs out.
"""

from __future__ import annotations

import math
import time

from cinema_cli.memory.goldenmem import BOUND, schedule
from cinema_cli.project.schema import MemorySettings
from cinema_cli.runtime.torch_compat import prepare_torch

HISTORIES = (0, 1, 2, 4, 8, 16, 32, 48, 64)
TEXT_TOKENS = 512  # FLUX.2 klein's prompt length
LATENT_CHANNELS = 128  # 32 VAE channels x a 2x2 patch
CPU_MODEL = dict(num_layers=1, num_single_layers=1, num_attention_heads=2, attention_head_dim=128,
                 joint_attention_dim=256)
CUDA_MODEL = dict(num_layers=5, num_single_layers=20, num_attention_heads=24, attention_head_dim=128,
                  joint_attention_dim=7680)


class DiT:
    """A random-weight Flux2Transformer2DModel and a timer for one forward pass."""

    def __init__(self, device: str) -> None:
        prepare_torch()
        import torch
        from diffusers import Flux2Transformer2DModel

        from cinema_cli.runtime.tiny import seeded

        self.torch = torch
        self.device = device
        self.config = CUDA_MODEL if device == "cuda" else CPU_MODEL
        self.dtype = torch.bfloat16 if device == "cuda" else torch.float32
        with seeded(0):
            model = Flux2Transformer2DModel(
                in_channels=LATENT_CHANNELS, axes_dims_rope=(32, 32, 32, 32), guidance_embeds=False, **self.config
            )
        self.model = model.eval().to(device)
        if device == "cuda":
            self.model = _quietly(lambda: self.model.to(self.dtype))

    def seconds(self, frames: tuple[tuple[int, int], ...]) -> float:
        """One forward pass over image tokens of these (rows, cols) token grids (the
        target first, then the context frames) and the text tokens."""
        torch = self.torch
        ids = []
        for t, (rows, cols) in enumerate(frames):
            # FLUX.2's position ids: (frame, row, column, text position); each context
            # frame gets its own frame coordinate, as its reference images do.
            grid = torch.stack(torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij"), -1)
            frame = torch.cat([torch.full((rows * cols, 1), 10 * t), grid.reshape(-1, 2),
                               torch.zeros(rows * cols, 1, dtype=torch.long)], 1)
            ids.append(frame)
        img_ids = torch.cat(ids).to(self.device)
        txt_ids = torch.zeros(TEXT_TOKENS, 4, dtype=torch.long, device=self.device)
        txt_ids[:, 3] = torch.arange(TEXT_TOKENS)
        hidden = torch.randn(1, len(img_ids), LATENT_CHANNELS, device=self.device, dtype=self.dtype)
        text = torch.randn(1, TEXT_TOKENS, self.config["joint_attention_dim"], device=self.device, dtype=self.dtype)
        timestep = torch.tensor([0.5], device=self.device, dtype=self.dtype)
        self._sync()
        started = time.perf_counter()
        with torch.inference_mode():
            self.model(hidden_states=hidden, encoder_hidden_states=text, timestep=timestep,
                       img_ids=img_ids, txt_ids=txt_ids, return_dict=False)
        self._sync()
        return time.perf_counter() - started

    def _sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()


def _is_oom(err: BaseException) -> bool:
    return "out of memory" in str(err).lower() or type(err).__name__ == "OutOfMemoryError"


def _quietly(action):
    """Run `action` with diffusers' log warnings off (a dtype cast warns about nothing here)."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        return action()
    finally:
        diffusers_logging.set_verbosity(level)


class Timings:
    """The fastest of several forward passes per token layout. Layouts are timed in
    rounds, each round over all of them, so a busy moment on the machine slows every
    layout alike instead of skewing one ratio."""

    def __init__(self, dit: DiT) -> None:
        self.dit = dit
        self.times: dict[tuple, list[float]] = {}

    def first(self, frames: tuple[tuple[int, int], ...]) -> float:
        if frames not in self.times:
            self.times[frames] = [self.dit.seconds(frames)]
        return self.times[frames][0]

    def more_rounds(self, rounds: int) -> None:
        for _ in range(rounds):
            for frames, times in self.times.items():
                times.append(self.dit.seconds(frames))

    def best(self, frames: tuple[tuple[int, int], ...]) -> float:
        return min(self.times[frames])


def run_memory_bench(*, height: int = 512, width: int = 1024, budget_seconds: float = 20.0,
                     repeats: int = 3, histories: tuple[int, ...] = HISTORIES) -> dict:
    prepare_torch()
    import torch

    settings = MemorySettings()  # the defaults: g = 1, vae 8, patch 2, min side 4

    def plan(count: int):
        return schedule(height, width, count, vae_factor=settings.vae_factor, patch=settings.patch,
                        group=settings.group_size, min_side=settings.min_side)

    def grids(slots) -> tuple[tuple[int, int], ...]:
        return tuple((s.latent[0] // settings.patch, s.latent[1] // settings.patch) for s in slots)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dit = DiT(device)
    target = plan(0).target
    t0 = target.tokens
    dit.seconds(grids([target]))  # warm-up: first-call allocations and kernel choice
    timings = Timings(dit)

    # Round one decides what runs: every GoldenMem layout, and naive ones until the next
    # is projected past the budget (or memory runs out).
    layouts = []
    naive_stop: str | None = None
    naive_points: list[tuple[int, float]] = []  # (total tokens, seconds of the first pass)
    for history in histories:
        golden = plan(history)
        timings.first(grids([golden.target, *golden.context]))
        naive = grids([target] * (history + 1))
        if naive_stop is None:
            projected = _projected(naive_points, (history + 1) * t0)
            if projected is not None and projected > budget_seconds:
                naive_stop = f"not run: projected {projected:.0f} s (budget {budget_seconds:.0f} s)"
            else:
                try:
                    naive_points.append(((history + 1) * t0, timings.first(naive)))
                except (RuntimeError, MemoryError) as err:
                    if not _is_oom(err):
                        raise
                    naive_stop = "not run: out of memory"
        layouts.append((history, golden, naive if naive in timings.times else None))
    timings.more_rounds(repeats - 1)

    base = timings.best(grids([target]))
    rows = []
    for history, golden, naive in layouts:
        spent = timings.best(grids([golden.target, *golden.context]))
        row = {
            "history": history,
            "goldenmem": {
                "context_frames": len(golden.context), "context_tokens": golden.context_tokens,
                "total_tokens": golden.tokens, "total_ratio": round(golden.tokens / t0, 4),
                "seconds": round(spent, 4), "time_ratio": round(spent / base, 3),
            },
            "naive": {"context_tokens": history * t0, "total_tokens": (history + 1) * t0,
                      "total_ratio": float(history + 1)},
        }
        if naive is None:
            row["naive"].update(seconds=None, time_ratio=None, note=naive_stop)
        else:
            spent = timings.best(naive)
            row["naive"].update(seconds=round(spent, 4), time_ratio=round(spent / base, 3))
        rows.append(row)

    at48 = next((r for r in rows if r["history"] == 48), rows[-1])
    measured = [r for r in rows if r["naive"]["seconds"] is not None]
    return {
        "device": device,
        "model": {"class": "diffusers.Flux2Transformer2DModel", "weights": "random", **dit.config},
        "target": {"size": [height, width], "tokens": t0},
        "text_tokens": TEXT_TOKENS,
        "repeats": repeats,
        "rows": rows,
        "goldenmem_bound": round(BOUND, 4),
        "goldenmem_total_ratio_at_48": at48["goldenmem"]["total_ratio"],
        "goldenmem_total_ratio_target": 1.62,
        "goldenmem_time_ratio_at_48": at48["goldenmem"]["time_ratio"],
        "goldenmem_time_ratio_target": 2.0,
        "naive_time_ratios": {str(r["history"]): r["naive"]["time_ratio"] for r in measured},
        "naive_growth_exponent": _exponent([(r["naive"]["total_tokens"], r["naive"]["seconds"]) for r in measured]),
        "naive_stopped": naive_stop,
    }


def _exponent(points: list[tuple[int, float]]) -> float | None:
    """d log(time) / d log(tokens) between the two largest naive runs: 1 is linear, 2 quadratic."""
    if len(points) < 2:
        return None
    (n1, s1), (n2, s2) = points[-2], points[-1]
    return round(math.log(s2 / s1) / math.log(n2 / n1), 3)


def _projected(points: list[tuple[int, float]], tokens: int) -> float | None:
    """The time a run over `tokens` would take, extrapolated from the measured ones at
    their growth rate (never slower than linear)."""
    if not points:
        return None
    exponent = max(1.0, _exponent(points) or 1.0)
    n, spent = points[-1]
    return spent * (tokens / n) ** exponent
