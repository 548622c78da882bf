"""`cinema bench cp`: what context parallelism buys one scene's sparse self-attention —
time and memory of each of N processes against one process doing it all.

The scene is `bench attention`'s (shots of 5 latent frames, each summarised by its first,
8 heads of 64). One process solves the whole pattern; then N processes (torchrun, gloo on
a CPU, NCCL on CUDA) each hold 1/N of Q/K/V and run the scene processors' exchange
(Ulysses: all-to-all of heads; ring: K/V slices passed around). Each process reports its
best time over the repeats (after a warm-up) and its peak memory for one call beyond its
inputs (peak RSS in a fresh process on a CPU, as `bench attention` measures). Throughput is
query tokens per second: per process (its share) and for the whole group.

`training` measures the same with the backward pass (as `cinema train video --cp N`
runs it), for Ulysses only: ring attention has no backward.

On a CPU every process runs one thread, so N processes use N cores against one core for
the single process: the speedup is what splitting the work across devices gives.
"""

from __future__ import annotations

import json
import subprocess
import sys

from cinema_cli.errors import CinemaError

SHOTS, FRAMES_PER_SHOT, TOKENS_PER_FRAME = 8, 5, 96
HEADS, HEAD_DIM = 8, 64


def _run(command: list[str]) -> list[dict]:
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CinemaError(f"bench cp worker failed:\n{proc.stderr[-2000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def run_cp_bench(degree: int = 2, shots: int = SHOTS, tokens: int = TOKENS_PER_FRAME, repeats: int = 3) -> dict:
    worker = [sys.executable, "-m", "cinema_cli.bench.cp_worker", str(shots), str(tokens), str(repeats)]
    single = _run([*worker, "single"])[0]
    report = {"device": single["device"], "dtype": single["dtype"], "threads_per_process": 1, "shots": shots,
              "tokens": single["tokens"], "heads": HEADS, "head_dim": HEAD_DIM, "degree": degree,
              "single": single, "modes": {}}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(degree),
              "-m", "cinema_cli.bench.cp_worker", str(shots), str(tokens), str(repeats)]
    for mode in ("ulysses", "ring"):
        report["modes"][mode] = _group(_run([*launch, mode]), single)
    alone = _run([*worker, "single", "train"])[0]
    report["training"] = {"single": alone, "ulysses": _group(_run([*launch, "ulysses", "train"]), alone)}
    return report


def _group(ranks: list[dict], single: dict) -> dict:
    """The group's figures against one process's: it is as fast as its slowest rank."""
    ranks = sorted(ranks, key=lambda r: r["rank"])
    slowest = max(r["seconds"] for r in ranks)
    return {
        "ranks": ranks,
        "group_tokens_per_second": round(single["tokens"] / slowest, 1),
        "speedup": round(single["seconds"] / slowest, 3),
        "peak_mb_per_rank_over_single": round(max(r["peak_mb"] for r in ranks) / single["peak_mb"], 3),
    }
