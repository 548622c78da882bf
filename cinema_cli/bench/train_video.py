"""`cinema bench train` video rows: a `cinema train video --mode scene` step at 2, 4, 8
and 13 shots — forward and backward through the recipe's LoRA on a Wan transformer with
the scene processors installed and gradient checkpointing, as `make_trainable` sets a
model up for training — HoloCine's full self-attention against its sparse inter-shot
attention (window cross-attention in both, as in training).

Each row reports video tokens/s and peak memory (CUDA only; a CPU's allocator is not
measured). The ratio that matters is measured in one run: the sparse row's speedup over
the full row (each the fastest of `steps` alternating steps, after two warm-up rounds),
against the speedup its FLOPs allow (`theoretical_speedup`: the whole step's FLOPs —
projections, feed-forward, LoRA, cross-attention and self-attention, forward, backward
and the checkpointed forward again — counted for both patterns), and their quotient
`fraction_of_theoretical`.

On a CPU the transformer is narrowed (2 blocks, 2 heads of 128, feed-forward 688, 64
tokens a latent frame, 4 latent frames a shot) so a run takes a minute or two, and runs on
one thread, timed by the process's CPU time (two threads spend time waiting on each other,
more so when other work shares the cores); on a GPU the blocks have Wan 14B's
width (40 heads of 128, feed-forward 13824) at 480x832 (1560 tokens a latent frame, 5
latent frames a shot) in bf16, `layers` of them (the full model's 40 need more memory
than one GPU holds unsharded at 13 shots; the per-block figures are what scale), and each
row adds the model FLOPs of its step per second (the recomputed forward of checkpointing
left out, as MFU conventionally does) and the MFU against the device's dense bf16 peak.
"""

from __future__ import annotations

import time

SHOTS = (2, 4, 8, 13)
TEXT_TOKENS = 512
WARMUP_ROUNDS = 2  # the first rounds also grow the allocator's pools to the largest row


def _shapes(cuda: bool, layers: int) -> dict:
    if cuda:
        return {"heads": 40, "head_dim": 128, "ffn": 13824, "layers": layers, "tokens_per_frame": 1560,
                "frames_per_shot": 5, "text_dim": 4096}
    # Wan's head width (128) and feed-forward ratio (2.7x): narrower heads would let the
    # per-token elementwise work (norms, rotary, LoRA, modulation) weigh more than it does
    # at Wan's width, where the matrix products dominate.
    return {"heads": 2, "head_dim": 128, "ffn": 688, "layers": 2, "tokens_per_frame": 64, "frames_per_shot": 4,
            "text_dim": 64}


def block_flops(shots, text_window: int, dim: int, ffn: int, rank: int, sparse: bool) -> dict[str, float]:
    """FLOPs (multiply-adds x 2) of one block's forward over a scene: the base's linear
    layers (`frozen`: their backward computes only input gradients, 1 forward's worth),
    the LoRA's and attention's (their backward costs 2 forwards)."""
    n = shots.length
    if sparse:
        pairs = sum((s.queries[1] - s.queries[0]) * s.key_length for s in shots.self_segments())
    else:
        pairs = n * n
    # (tokens, in, out) of every linear layer the LoRA targets: self-attention's q, k, v,
    # out; cross-attention's q, out (video) and k, v (text); the feed-forward's two.
    linears = [(n, dim, dim)] * 6 + [(TEXT_TOKENS, dim, dim)] * 2 + [(n, dim, ffn), (n, ffn, dim)]
    return {"frozen": sum(2 * t * i * o for t, i, o in linears),
            "lora": sum(2 * t * rank * (i + o) for t, i, o in linears),
            "attention": 4 * dim * pairs + 4 * dim * n * text_window}


def step_flops(block: dict[str, float], recompute: bool) -> float:
    """A training step's FLOPs: forward and backward, plus the forward gradient
    checkpointing runs again when `recompute` (what the hardware does; MFU leaves it out)."""
    trained = block["lora"] + block["attention"]
    return (3 if recompute else 2) * block["frozen"] + (4 if recompute else 3) * trained


def run_video_bench(shots=SHOTS, steps: int = 5, layers: int = 4) -> dict:
    from cinema_cli.runtime.torch_compat import prepare_torch

    prepare_torch()
    import torch

    threads = torch.get_num_threads()
    if not torch.cuda.is_available():
        torch.set_num_threads(1)  # see the module's docstring
    try:
        return _measure(shots, steps, layers)
    finally:
        torch.set_num_threads(threads)


def _measure(shots, steps: int, layers: int) -> dict:
    import torch
    from diffusers import WanTransformer3DModel

    from cinema_cli.attention.layout import PromptLayout, ShotLayout
    from cinema_cli.attention.processors import SceneAttention, install_scene_attention
    from cinema_cli.bench.video import peak_bf16_tflops
    from cinema_cli.runtime.tiny import seeded
    from cinema_cli.train.engine import make_trainable
    from cinema_cli.train.video import LORA_TARGETS
    from cinema_cli.train.video_config import VideoTrainConfig

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    # A GPU is timed by the wall clock; a CPU by this process's CPU time, which other work
    # on a shared machine does not inflate (tokens/s is then per CPU-second).
    clock = time.perf_counter if cuda else time.process_time
    dtype = torch.bfloat16 if cuda else torch.float32
    shape = _shapes(cuda, layers)
    dim = shape["heads"] * shape["head_dim"]
    side = int(round((shape["tokens_per_frame"]) ** 0.5))
    rows_h, rows_w = (30, 52) if cuda else (side, side)  # tokens: 480x832 / (8 VAE x 2 patch)
    peak = peak_bf16_tflops(torch.cuda.get_device_name(0)) if cuda else None
    with seeded(0):
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=shape["heads"], attention_head_dim=shape["head_dim"],
            in_channels=16, out_channels=16, text_dim=shape["text_dim"], freq_dim=256, ffn_dim=shape["ffn"],
            num_layers=shape["layers"], rope_max_seq_len=1024,
        ).to(device, dtype).requires_grad_(False)
        # The scene recipe's LoRA (rank 64, fp32 over the base's dtype) and checkpointing.
        recipe = VideoTrainConfig(base="tiny", mode="scene")
        make_trainable(transformer, recipe, LORA_TARGETS)
    rank = recipe.lora.rank
    scene = SceneAttention()
    install_scene_attention(transformer, scene)
    rows = []
    for count in shots:
        frames = [shape["frames_per_shot"]] * count
        layout = ShotLayout.from_frames(frames, rows_h * rows_w, 1, own_summary_again=True)
        caption = TEXT_TOKENS // (count + 2)  # each shot's caption run, the global one as long
        prompts = PromptLayout.from_lengths(caption, [caption] * count)
        prompts = PromptLayout(prompts.global_run, prompts.shot_runs, TEXT_TOKENS, ((prompts.length, TEXT_TOKENS),))
        window = prompts.window_segments(layout)[0].key_length  # global + own caption + the padding
        latents = torch.randn((1, 16, sum(frames), 2 * rows_h, 2 * rows_w), device=device, dtype=dtype)
        text = torch.randn((1, TEXT_TOKENS, shape["text_dim"]), device=device, dtype=dtype)

        def step(sparse: bool) -> float:
            scene.shots, scene.prompts, scene.sparse_self = layout, prompts, sparse
            if cuda:
                torch.cuda.synchronize()
            started = clock()
            out = transformer(hidden_states=latents, timestep=torch.tensor([500.0], device=device),
                              encoder_hidden_states=text, return_dict=False)[0]
            out.float().square().mean().backward()
            transformer.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize()
            return clock() - started

        # Full and sparse alternate, and each keeps its fastest step: on a shared machine
        # that is the figure least disturbed by other work.
        times = {False: [], True: []}
        peaks = {False: None, True: None}
        failed = set()
        for repeat in range(WARMUP_ROUNDS + steps):
            for sparse in (False, True):
                if sparse in failed:
                    continue
                try:
                    if cuda:
                        torch.cuda.reset_peak_memory_stats()
                    seconds = step(sparse)
                    if cuda:
                        peaks[sparse] = max(peaks[sparse] or 0, torch.cuda.max_memory_allocated())
                    if repeat >= WARMUP_ROUNDS:
                        times[sparse].append(seconds)
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    failed.add(sparse)
        for sparse in (False, True):
            row = {"shots": count, "attention": "sparse" if sparse else "full", "video_tokens": layout.length}
            if sparse in failed:
                row.update(tokens_per_s=None, seconds=None, peak_bytes=None, error="out of memory")
            else:
                seconds = min(times[sparse])
                row.update(tokens_per_s=round(layout.length / seconds, 1), seconds=round(seconds, 4),
                           peak_bytes=peaks[sparse])
            block = block_flops(layout, window, dim, shape["ffn"], rank, sparse)
            row["step_flops_per_block"] = step_flops(block, recompute=True)
            if cuda and row["seconds"]:
                achieved = shape["layers"] * step_flops(block, recompute=False) / row["seconds"] / 1e12
                row.update(tflop_per_s=round(achieved, 1), mfu=round(achieved / peak, 3) if peak else None)
            rows.append(row)
    scene.shots = scene.prompts = None
    ratios = {}
    for count in shots:
        full, sparse = (next(r for r in rows if r["shots"] == count and r["attention"] == a) for a in ("full", "sparse"))
        theoretical = full["step_flops_per_block"] / sparse["step_flops_per_block"]
        measured = full["seconds"] / sparse["seconds"] if full["seconds"] and sparse["seconds"] else None
        ratios[str(count)] = {"measured_speedup": round(measured, 3) if measured else None,
                              "theoretical_speedup": round(theoretical, 3),
                              "fraction_of_theoretical": round(measured / theoretical, 3) if measured else None}
    return {"device": "cuda" if cuda else "cpu", "timer": "wall" if cuda else "process CPU time", "dtype": str(dtype).removeprefix("torch."),
            "threads": torch.get_num_threads(), "transformer": shape, "peak_bf16_tflops": peak, "rows": rows,
            "sparse_vs_full": ratios}
