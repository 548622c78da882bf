"""One process of `cinema bench cp`: python -m cinema_cli.bench.cp_worker SHOTS TOKENS REPEATS MODE
[train], MODE single (alone) or ulysses / ring (one of torchrun's processes); `train`: forward
and backward (as training runs it), else forward only. Prints one JSON line."""

from __future__ import annotations

import json
import sys
import time

from cinema_cli.bench.attention import _status_bytes
from cinema_cli.bench.cp import FRAMES_PER_SHOT, HEAD_DIM, HEADS
from cinema_cli.runtime.torch_compat import prepare_torch


def main(shots: int, tokens: int, repeats: int, mode: str, train: bool = False) -> None:
    prepare_torch()
    import torch

    from cinema_cli.attention.context_parallel import ContextSplit, context_parallel_attention
    from cinema_cli.attention.kernels import dispatch_attend
    from cinema_cli.attention.layout import ShotLayout
    from cinema_cli.attention.sparse import packed_attention

    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    torch.set_num_threads(1)
    layout = ShotLayout.from_frames([FRAMES_PER_SHOT] * shots, tokens, own_summary_again=True)
    segments = layout.self_segments()
    attend = dispatch_attend()

    def solve(q, k, v, s):
        return packed_attention(q, k, v, s, attend)

    rank, size = 0, 1
    if mode == "single":
        run = lambda q, k, v: solve(q, k, v, segments)  # noqa: E731
        start, end = 0, layout.length
    else:
        import torch.distributed as dist

        from cinema_cli.project.schema import ContextParallelSettings
        from cinema_cli.runtime.parallel import diffusers_config, init_group

        init_group(device)
        rank, size = dist.get_rank(), dist.get_world_size()
        from diffusers.models._modeling_parallel import ParallelConfig
        from torch.distributed.device_mesh import init_device_mesh

        cp = diffusers_config(ContextParallelSettings(degree=size, mode=mode))
        mesh = init_device_mesh(device, cp.mesh_shape, mesh_dim_names=cp.mesh_dim_names)
        ParallelConfig(context_parallel_config=cp).setup(rank, size, torch.device(device), mesh=mesh)
        split = ContextSplit.of(cp, layout.length)
        start, end = split.own
        run = lambda q, k, v: context_parallel_attention(q, k, v, segments, split, solve)  # noqa: E731

    def inputs(count: int):
        g = torch.Generator(device).manual_seed(0)
        whole = [torch.randn(1, count, HEADS, HEAD_DIM, generator=g, device=device, dtype=dtype) for _ in range(3)]
        return [t[:, start:end].contiguous() if count == layout.length else t for t in whole]

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if train:
        attention = run

        def run(q, k, v):
            attention(q, k, v).sum().backward()

    with torch.enable_grad() if train else torch.no_grad():
        q, k, v = (t.requires_grad_(train) for t in inputs(layout.length))
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            run(q, k, v)
            sync()
            peak = torch.cuda.max_memory_allocated() - before
        else:
            before = _status_bytes("VmRSS")
            run(q, k, v)  # the first call: its peak, before repeats could raise it
            peak = _status_bytes("VmHWM") - before
        best = float("inf")
        for _ in range(repeats):
            sync()
            began = time.perf_counter()
            run(q, k, v)
            sync()
            best = min(best, time.perf_counter() - began)
    # One write of the whole line: the group's processes share the pipe (a write under
    # PIPE_BUF is atomic; print's separate newline could land after another rank's line).
    sys.stdout.write(json.dumps({
        "rank": rank, "mode": mode, "backward": train, "device": torch.cuda.get_device_name() if cuda else "cpu",
        "dtype": str(dtype).removeprefix("torch."), "tokens": layout.length, "own_tokens": end - start,
        "seconds": round(best, 5), "tokens_per_second": round((end - start) / best, 1),
        "peak_mb": round(peak / 2**20, 2),
    }) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5:] == ["train"])
