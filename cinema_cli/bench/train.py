"""`cinema bench train`: training throughput (sequences/s) and peak memory against the
context length (1, 8, 16, 32 pairs), context pairs at GoldenMem sizes against all at
full size (naive).

One step is what `cinema train keyframes` does per sequence: the interleaved forward
under the bidirectional mask, the flow-matching loss, backward through a LoRA and an
AdamW step. Inputs are random latents and caption states of the real shapes (the VAE
and text encoder are frozen and their outputs cached in training, so they cost nothing
per step). On a GPU the transformer has FLUX.2 klein 4B's shape in bf16 at 400x800 and
peak GPU memory allocated is reported. On a CPU it is narrowed (2 layers of each kind, 2
heads of 64) at 128x256 so a run takes a few minutes, and each row runs in a fresh
process (`train_worker`) that reports the peak resident memory its steps add over the
loaded model (a process's peak only grows, and freed memory stays resident, so rows
measured in one process would hide each other).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from cinema_cli.errors import CinemaError

CONTEXTS = (1, 8, 16, 32)


def run_train_bench(contexts=CONTEXTS, steps: int = 2, frame: tuple[int, int] | None = None) -> dict:
    """`frame`: (height, width) in place of the device's default."""
    import torch

    cuda = torch.cuda.is_available()
    height, width = frame or ((400, 800) if cuda else (128, 256))
    if cuda:
        bench = Bench(True, height, width)
        rows = [bench.row(pairs, goldenmem, steps) for pairs in contexts for goldenmem in (True, False)]
    else:
        rows = [row_in_worker(pairs, goldenmem, steps, height, width) for pairs in contexts
                for goldenmem in (True, False)]
    by = {(r["pairs"], r["goldenmem"]): r for r in rows}
    longest = max(contexts)
    gm, naive = by[(longest, True)], by[(longest, False)]
    ratio = (gm["samples_per_s"] / naive["samples_per_s"]) if gm["samples_per_s"] and naive["samples_per_s"] else None
    memory = (gm["peak_bytes"] / naive["peak_bytes"]) if gm["peak_bytes"] and naive["peak_bytes"] else None
    shape = transformer_shape(cuda)
    return {"device": "cuda" if cuda else "cpu", "frames": [height, width], "caption_tokens": caption_tokens(cuda),
            "transformer": {k: shape[k] for k in ("num_layers", "num_single_layers", "num_attention_heads",
                                                  "attention_head_dim")},
            "peak_bytes_is": "peak GPU memory allocated" if cuda else "peak resident memory the steps add",
            "rows": rows, f"goldenmem_speedup_at_{longest}_pairs": ratio,
            f"goldenmem_memory_ratio_at_{longest}_pairs": memory,
            "not_measured": None if cuda else "bf16 MFU at klein-4B's shape: needs a CUDA GPU"}


def transformer_shape(cuda: bool) -> dict:
    from cinema_cli.bench.keyframes import KLEIN_4B

    return dict(KLEIN_4B) if cuda else {**KLEIN_4B, "num_layers": 2, "num_single_layers": 2,
                                        "num_attention_heads": 2, "attention_head_dim": 64,
                                        "axes_dims_rope": (16, 16, 16, 16)}


def caption_tokens(cuda: bool) -> int:
    return 128 if cuda else 32


def row_in_worker(pairs: int, goldenmem: bool, steps: int, height: int, width: int) -> dict:
    args = [str(pairs), str(int(goldenmem)), str(steps), str(height), str(width)]
    proc = subprocess.run([sys.executable, "-m", "cinema_cli.bench.train_worker", *args], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise CinemaError(f"bench train worker ({pairs} pairs) failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class Bench:
    """A LoRA'd transformer of the bench's shape, its AdamW, and one row's measurement."""

    def __init__(self, cuda: bool, height: int, width: int):
        from cinema_cli.runtime.torch_compat import prepare_torch

        prepare_torch()  # before peft, which imports transformers
        import torch
        from peft import LoraConfig

        from cinema_cli.keyframes.interleaved_model import InterleavedFlux2
        from cinema_cli.runtime.tiny import seeded
        from cinema_cli.train.keyframes import LORA_TARGETS
        from diffusers import Flux2Transformer2DModel

        self.cuda, self.height, self.width = cuda, height, width
        self.device = torch.device("cuda" if cuda else "cpu")
        self.dtype = torch.bfloat16 if cuda else torch.float32
        self.shape = transformer_shape(cuda)
        with seeded(0):
            transformer = Flux2Transformer2DModel(**self.shape).to(self.device, self.dtype).requires_grad_(False)
            transformer.add_adapter(LoraConfig(r=64, lora_alpha=64, init_lora_weights="gaussian",
                                               target_modules=LORA_TARGETS))
        for p in transformer.parameters():
            if p.requires_grad:
                p.data = p.data.float()
        self.model = InterleavedFlux2(transformer)
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=1e-4)

    def row(self, pairs: int, goldenmem: bool, steps: int) -> dict:
        import torch

        from cinema_cli.keyframes.interleaved_model import Pair, interleave
        from cinema_cli.keyframes.interleaved_sampling import noised
        from cinema_cli.train.keyframes import pair_sizes

        device, dtype, cuda = self.device, self.dtype, self.cuda
        caption = caption_tokens(cuda)
        channels, text_width = self.shape["in_channels"], self.shape["joint_attention_dim"]
        sizes = pair_sizes(self.height, self.width, pairs - 1, goldenmem)
        seq_pairs = [Pair(torch.randn((h // 16) * (w // 16), channels, device=device, dtype=dtype), h // 16, w // 16,
                          torch.randn(caption, text_width, device=device, dtype=dtype)) for h, w in sizes]
        tokens = sum(p.latents.shape[0] + caption for p in seq_pairs)

        def step():
            sigmas = torch.rand(len(seq_pairs))
            noises = [torch.randn_like(p.latents) for p in seq_pairs]
            seq = interleave([Pair(noised(p.latents, n, float(s)), p.height, p.width, p.text)
                              for p, n, s in zip(seq_pairs, noises, sigmas)])
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                prediction = self.model(seq, sigmas[None].to(device, dtype))
            target = torch.cat([n - p.latents for p, n in zip(seq_pairs, noises)])[None]
            loss = torch.nn.functional.mse_loss(prediction.float(), target.float())
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

        row = {"pairs": pairs, "goldenmem": goldenmem, "tokens": tokens}
        try:
            resident = start_peak() if not cuda else None
            step()  # warm-up (AdamW's moments appear here: every row has the same)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            for _ in range(steps):
                step()
            if cuda:
                torch.cuda.synchronize()
            seconds = (time.perf_counter() - started) / steps
            peak = torch.cuda.max_memory_allocated() if cuda else rise_since(resident)
            return {**row, "samples_per_s": round(1 / seconds, 4), "peak_bytes": peak}
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            return {**row, "samples_per_s": None, "peak_bytes": None, "error": "out of memory"}


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith(field + ":")).split()[1]) * 1024


def start_peak() -> int | None:
    """Reset this process's resident high-water mark (Linux); the resident bytes now, or
    None where it cannot be done."""
    import gc

    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return _status_bytes("VmRSS")
    except OSError:
        return None


def rise_since(resident: int | None) -> int | None:
    return None if resident is None else max(0, _status_bytes("VmHWM") - resident)
