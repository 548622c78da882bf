"""`cinema bench direct`: the cost of directing a film shot by shot with the causal
Helios backend, against the length of the film, for each memory policy.

A film of `shots` shots (cuts and continues alternating, a new prompt each) is made with
the backend's own shot code (video.helios_shot) into a LatentHistory on disk, once with
each memory policy. Per shot it measures: seconds per second of video (denoising and
decoding; MP4 encoding is not the model's cost and is left out), the latency to the
shot's first frame (prompt encoding, routing — CAMR's probe included — the first chunk
and its decoding), and the active memory: the history latent frames and transformer
tokens a chunk sees, the bytes of latents held for it, and the process's resident memory.
CAMR and recency keep the history within the model's budget; `full` hands the model the
whole film, so its tokens, bytes and time grow with the film.

Presets: `tiny` (the tiny preset: 64x64, chunks of 2 latent frames, history [4, 2, 1]),
and `real-shape` (Helios-Base's frame size 640x384, chunks of 9 latent frames and history
[16, 2, 1], so token counts are the real model's; the transformer is narrowed to 2 layers
of 2 heads x 128 and the VAE and text encoder are the tiny ones, random weights, so it
runs on a CPU; the full 14B transformer needs a GPU). With CUDA the real-shape preset
uses Helios-Base's full transformer width and depth (random weights, bfloat16).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
import time
from pathlib import Path

from cinema_cli.errors import BadInput
from cinema_cli.runtime.torch_compat import prepare_torch

POLICIES = ("recency", "camr", "full")
PRESETS = {
    "tiny": dict(width=64, height=64, chunk=2, history=(4, 2, 1), steps=2, narrow=None, cpu_decode=True),
    # On a CPU the tiny VAE would take minutes per 640x384 chunk: the real shape times the
    # transformer (routing and denoising) and leaves decoding out there, saying so.
    "real-shape": dict(width=640, height=384, chunk=9, history=(16, 2, 1), steps=2, cpu_decode=False,
                       narrow=dict(num_layers=2, num_attention_heads=2, attention_head_dim=128, ffn_dim=512)),
}
FPS = 24


def history_tokens(sizes: tuple[int, int, int], latent_h: int, latent_w: int, patch: int = 2) -> int:
    """Transformer tokens of the history slots (prefix + short at 1x, mid 2x, long 4x, each padded as Helios pads)."""
    long, mid, short = sizes
    tokens = 0
    for frames, factor in ((1 + short, 1), (mid, 2), (long, 4)):
        if frames:
            side = patch * factor
            tokens += math.ceil(frames / factor) * math.ceil(latent_h / side) * math.ceil(latent_w / side)
    return tokens


def _rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MiB (Linux /proc)."""
    values = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    except OSError:
        return float("nan"), float("nan")
    return round(values.get("VmRSS", float("nan")), 1), round(values.get("VmHWM", float("nan")), 1)


def _pipeline(preset: dict, device: str):
    prepare_torch()
    import torch

    from cinema_cli.runtime.tiny import build_tiny, seeded
    from cinema_cli.runtime.tiny_helios import REAL_TRANSFORMER, TINY_TRANSFORMER, helios_transformer

    pipe = build_tiny("helios")
    if preset["narrow"] is not None:
        config = {**REAL_TRANSFORMER, "in_channels": TINY_TRANSFORMER["in_channels"],
                  "out_channels": TINY_TRANSFORMER["out_channels"], "text_dim": TINY_TRANSFORMER["text_dim"]}
        if device != "cuda":
            config.update(preset["narrow"])
        with seeded(0):
            pipe.transformer = helios_transformer(**config)
    pipe.to(device)
    if device == "cuda":
        pipe.transformer.to(torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_direct_bench(*, preset: str = "tiny", shots: int = 8, chunks_per_shot: int = 1,
                     on_row: Callable[[str, dict], None] = lambda policy, row: None) -> dict:
    """`on_row(policy, row)` hears of each shot as it is measured (a long run shows progress)."""
    if preset not in PRESETS:
        raise BadInput(f"--preset {preset!r}: expected one of {', '.join(PRESETS)}")
    if shots < 2:
        raise BadInput("--shots: at least 2 (the history must grow)")
    prepare_torch()
    import torch

    from cinema_cli.project.schema import Framing, Move, RuntimeSettings
    from cinema_cli.video.base import ShotRequest
    from cinema_cli.video.causal import LatentHistory
    from cinema_cli.video.helios import HeliosOptions

    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = PRESETS[preset]
    timed_maker = _routing_maker()
    decode = device == "cuda" or config["cpu_decode"]
    pipe = _pipeline(config, device)
    window = (config["chunk"] - 1) * 4 + 1
    frames = window * chunks_per_shot
    h, w = config["height"] // 8, config["width"] // 8
    channels = pipe.transformer.config.in_channels
    report_rows: dict[str, list[dict]] = {}
    for policy in POLICIES:
        options = HeliosOptions(model="tiny", steps=config["steps"], guidance=1.0, memory=policy,
                                history=config["history"], chunk=config["chunk"], probe_layers=(0, 1))
        rows = []
        with tempfile.TemporaryDirectory(prefix="cinema-bench-direct-") as folder:
            history = LatentHistory(Path(folder))
            for index in range(shots):
                request = ShotRequest(
                    shot_id=f"s{index + 1:02d}", caption=f"shot {index + 1}: {CAPTIONS[index % len(CAPTIONS)]}",
                    keyframe=Path(folder) / "no-keyframe.png", next_keyframe=None, framing=Framing.wide,
                    move=Move.static, frames=frames, fps=FPS, width=config["width"], height=config["height"],
                    seed=index, runtime=RuntimeSettings(device=device))
                cut = index % 2 == 0
                started = time.perf_counter()
                maker = timed_maker(pipe, options, request, cut, history, "bench")
                maker.next_chunk(lambda i: None, decode)
                _sync(device)
                latency = time.perf_counter() - started
                for _ in range(chunks_per_shot - 1):
                    maker.next_chunk(lambda i: None, decode)
                _sync(device)
                spent = time.perf_counter() - started
                routing = maker.routings[0]
                routed = len(routing.slots)
                slots = max(routed, sum(config["history"]))  # zeros fill a young film's slots
                sizes = config["history"] if policy != "full" else (
                    slots - config["history"][1] - config["history"][2], *config["history"][1:])
                history.append(request.shot_id, maker.shot_latents())
                rss, peak = _rss_mb()
                row = {
                    "shot": index + 1, "cut": cut, "film_latent_frames": routing.candidates,
                    "history_frames": slots, "history_tokens": history_tokens(sizes, h, w),
                    "history_bytes": slots * channels * h * w * 4,
                    "seconds": round(spent, 3), "seconds_per_video_second": round(spent / (frames / FPS), 3),
                    "first_frame_latency_s": round(latency, 3), "routing_s": round(maker.routing_seconds, 3),
                    "rss_mb": rss, "peak_rss_mb": peak,
                }
                rows.append(row)
                on_row(policy, row)
        report_rows[policy] = rows
    summary = {}
    for policy, rows in report_rows.items():
        late = rows[len(rows) // 2:]
        summary[policy] = {
            **{f"{key}_first_to_last": [rows[0][key], rows[-1][key]] for key in GROWING},
            **{f"{key}_growth": round(rows[-1][key] / rows[0][key], 3) for key in GROWING},
            "routing_s_late_shots": _mean(late, "routing_s"),
            "seconds_per_video_second_late_shots": _mean(late, "seconds_per_video_second"),
            "first_frame_latency_s_late_shots": _mean(late, "first_frame_latency_s"),
        }
    return {
        "device": device, "preset": preset,
        "frame": [config["width"], config["height"]], "fps": FPS, "frames_per_shot": frames,
        "chunk_latent_frames": config["chunk"], "history_sizes": list(config["history"]), "steps": config["steps"],
        "transformer": {k: pipe.transformer.config[k] for k in ("num_layers", "num_attention_heads",
                                                                "attention_head_dim", "in_channels")},
        "weights": "random", "shots": shots, "decoded": decode, "policies": summary, "rows": report_rows,
        # Bounded: the history a chunk sees did not grow from the first shot to the last.
        "bounded": {p: all(summary[p][f"{key}_growth"] <= 1.0 for key in GROWING) for p in summary},
    }


GROWING = ("history_frames", "history_tokens", "history_bytes")
CAPTIONS = ("a woman steps out of a car into the rain", "close-up on the bank's clock", "she crosses the street",
            "inside the bank, a queue", "the clerk looks up", "back outside, the car is gone")


def _routing_maker():
    from cinema_cli.video.helios_shot import ShotMaker

    class TimedRouting(ShotMaker):
        """The backend's shot maker, timing its routing (CAMR's probe, loading the routed frames)."""

        routing_seconds = 0.0

        def _route(self, noise):
            started = time.perf_counter()
            try:
                return super()._route(noise)
            finally:
                self.routing_seconds += time.perf_counter() - started

    return TimedRouting


def _mean(rows: list[dict], key: str) -> float:
    return round(sum(r[key] for r in rows) / len(rows), 3)


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
