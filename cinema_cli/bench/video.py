"""`cinema bench video`: seconds and memory of the video models at real shapes.

- `wan`: one shot, 81 frames at 480x832 (21 latent frames of 1560 tokens), one expert of
  Wan2.2 A14B's shape (40 blocks of width 5120, 40 heads, FFN 13824).
- `holocine`: one scene of 5 and of 13 shots, 12 latent frames each (48 video frames, one
  4t+1 video: 241 frames at 5 shots, HoloCine's training length), the same expert with
  the scene processors: window cross-attention always, self-attention `full` (dense over
  the scene) or `sparse` (own shot + every shot's first latent frame).

Random weights; what is timed is one transformer forward (one denoising step of one
guidance branch), the best of `repeats` after a warm-up; a shot or scene costs
steps x 2 of them with guidance. On CUDA in bfloat16, the FLOPs of that forward (the
linear layers' 2 x weights x tokens, and attention's 4 x queries x keys x width per layer,
counting only the keys the pattern keeps) give the achieved TFLOP/s and the MFU against
the device's dense bf16 peak. On a CPU the same code runs on a narrowed model (2 blocks of
width 256, 2 heads) and 64x112 frames, in float32, so the ratios (sparse vs full, 13 vs 5
shots) are the result, not the seconds.
"""

from __future__ import annotations

import time

# Wan2.2 A14B's transformer (each expert).
A14B = {"num_layers": 40, "num_attention_heads": 40, "attention_head_dim": 128, "ffn_dim": 13824}
NARROW = {"num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 128, "ffn_dim": 512}
COMMON = {"patch_size": (1, 2, 2), "in_channels": 16, "out_channels": 16, "text_dim": 4096, "freq_dim": 256,
          "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "rope_max_seq_len": 1024}
GPU_SIZE, CPU_SIZE = (480, 832), (64, 112)  # height, width in pixels
WAN_FRAMES = 81
SHOT_LATENT_FRAMES = 12
SCENES = (5, 13)
TEXT_TOKENS = 512
# Dense bf16 tensor-core peak (TFLOP/s, no sparsity) by device name.
BF16_PEAK = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "RTX 4090": 165.0, "A6000": 155.0}


def peak_bf16_tflops(name: str) -> float | None:
    """The device's dense bf16 peak in TFLOP/s, None for a device not in the table."""
    return next((peak for key, peak in BF16_PEAK.items() if key in name), None)


def forward_flops(config: dict, video_tokens: int, keys_per_query: float) -> float:
    """FLOPs of one forward: linear layers and attention (QK and PV), per the pattern."""
    width = config["num_attention_heads"] * config["attention_head_dim"]
    per_block_linear = (4 * width * width + 2 * width * width + 2 * width * config["ffn_dim"]) * video_tokens
    per_block_linear += 2 * width * width * TEXT_TOKENS  # cross-attention K, V of the text
    per_block_attention = 4 * video_tokens * (keys_per_query + TEXT_TOKENS) * width
    return config["num_layers"] * (2 * per_block_linear + per_block_attention)


def _best_forward(model, x, timestep, text, repeats: int, cuda: bool) -> float:
    import torch

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    best = float("inf")
    with torch.no_grad():
        for round_ in range(repeats + 1):
            sync()
            start = time.perf_counter()
            model(hidden_states=x, timestep=timestep, encoder_hidden_states=text, return_dict=False)
            sync()
            if round_:
                best = min(best, time.perf_counter() - start)
    return best


def _peak_gib(cuda: bool) -> float:
    import torch

    if cuda:
        return round(torch.cuda.max_memory_allocated() / 1024**3, 2)
    with open("/proc/self/status") as status:  # the process's peak RSS so far (runs go smallest first)
        line = next(line for line in status if line.startswith("VmHWM:"))
    return round(int(line.split()[1]) / 1024**2, 2)


def run_video_bench(repeats: int = 3, steps: int = 40) -> dict:
    from cinema_cli.runtime.torch_compat import prepare_torch

    prepare_torch()
    import torch
    from diffusers import WanTransformer3DModel

    from cinema_cli.attention.layout import PromptLayout
    from cinema_cli.attention.processors import SceneAttention, install_scene_attention
    from cinema_cli.video.holocine_denoise import SceneJob, shot_layout

    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    shape = A14B if cuda else NARROW
    config = {**COMMON, **shape}
    height, width = GPU_SIZE if cuda else CPU_SIZE
    tokens_per_frame = (height // 16) * (width // 16)
    with torch.device(device):
        model = WanTransformer3DModel(**config).eval()
    if dtype != torch.float32:
        model.to(dtype)
    scene = SceneAttention()
    install_scene_attention(model, scene)
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    peak = peak_bf16_tflops(name) if cuda else None
    gen = torch.Generator(device).manual_seed(0)
    text = torch.randn((1, TEXT_TOKENS, COMMON["text_dim"]), generator=gen, device=device, dtype=dtype)
    timestep = torch.tensor([500.0], device=device)

    def measure(latent_frames: int) -> tuple[float, float]:
        x = torch.randn((1, 16, latent_frames, height // 8, width // 8), generator=gen, device=device, dtype=dtype)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        return _best_forward(model, x, timestep, text, repeats, cuda), _peak_gib(cuda)

    def row(label: dict, seconds: float, memory: float, video_tokens: int, keys: float) -> dict:
        flops = forward_flops(config, video_tokens, keys)
        out = {**label, "video_tokens": video_tokens, "seconds_per_forward": round(seconds, 4),
               "seconds_per_clip": round(seconds * steps * 2, 2), "peak_gib": memory,
               "tflop_per_forward": float(f"{flops / 1e12:.4g}")}
        if cuda:
            achieved = flops / seconds / 1e12
            out["tflop_per_s"] = round(achieved, 1)
            out["mfu"] = round(achieved / peak, 3) if peak else None
        return out

    runs = []
    latents = (WAN_FRAMES - 1) // 4 + 1
    seconds, memory = measure(latents)
    tokens = latents * tokens_per_frame
    runs.append(row({"model": "wan", "frames": WAN_FRAMES}, seconds, memory, tokens, tokens))
    for shots in SCENES:
        frames = (4 * SHOT_LATENT_FRAMES,) * shots
        job = SceneJob("", ("",) * shots, frames, width, height, 0, steps, 5.0, "", True)
        layout = shot_layout(job, tokens_per_frame)
        bounds = [layout.run(i) for i in range(shots)]
        windows = PromptLayout((0, 40), tuple((40 + 20 * i, 60 + 20 * i) for i in range(shots)), TEXT_TOKENS,
                               ((40 + 20 * shots, TEXT_TOKENS),))
        for variant in ("full", "sparse"):
            scene.shots, scene.prompts, scene.sparse_self = layout, windows, variant == "sparse"
            try:
                seconds, memory = measure(latent_frames=layout.length // tokens_per_frame)
            finally:
                scene.shots = scene.prompts = None
            if variant == "sparse":
                keys = sum((b - a) * s.key_length for (a, b), s in zip(bounds, layout.self_segments())) / layout.length
            else:
                keys = layout.length
            runs.append(row({"model": "holocine", "variant": variant, "shots": shots, "frames": 1 + sum(frames)},
                            seconds, memory, layout.length, keys))
    speedups = {str(s): round(next(r["seconds_per_forward"] for r in runs if r.get("shots") == s
                                   and r["variant"] == "full")
                              / next(r["seconds_per_forward"] for r in runs if r.get("shots") == s
                                     and r["variant"] == "sparse"), 2) for s in SCENES}
    return {
        "device": name, "dtype": str(dtype).removeprefix("torch."),
        "transformer": {k: config[k] for k in ("num_layers", "num_attention_heads", "attention_head_dim", "ffn_dim")},
        "resolution": f"{width}x{height}", "steps": steps, "guidance_branches": 2,
        "peak_bf16_tflops": peak, "runs": runs, "sparse_speedup_vs_full": speedups,
        "note": None if cuda else "CPU: a narrowed model at 64x112; compare ratios, not seconds; peak_gib is the "
                                   "process's peak RSS so far",
    }
