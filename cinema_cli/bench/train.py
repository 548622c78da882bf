"""`cinema bench train`: training throughput (sequences/s) and peak memory against the
context length (1, 8, 16, 32 pairs), context pairs at GoldenMem sizes against all at
full size (naive).

One step is what `cinema train keyframes` does per sequence: the interleaved forward
under the bidirectional mask, the flow-matching loss, backward through a LoRA and an
AdamW step. Inputs are random latents and caption states of the real shapes (the VAE
and text encoder are frozen and their outputs cached in training, so they cost nothing
per step). On a GPU the transformer has FLUX.2 klein 4B's shape in bf16 at 400x800 and
peak GPU memory is reported; on a CPU it is narrowed (2 layers of each kind, 2 heads of
64) at 128x256 so a run takes a minute or two, and memory is not measured.
"""

from __future__ import annotations

import time

CONTEXTS = (1, 8, 16, 32)


def run_train_bench(contexts=CONTEXTS, steps: int = 2) -> dict:
    from cinema_cli.runtime.torch_compat import prepare_torch

    prepare_torch()  # before peft, which imports transformers
    import torch
    from peft import LoraConfig

    from cinema_cli.bench.keyframes import KLEIN_4B
    from cinema_cli.keyframes.interleaved_model import InterleavedFlux2, Pair, interleave
    from cinema_cli.keyframes.interleaved_sampling import noised
    from cinema_cli.runtime.tiny import seeded
    from cinema_cli.train.keyframes import LORA_TARGETS, pair_sizes
    from diffusers import Flux2Transformer2DModel

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    shape = dict(KLEIN_4B) if cuda else {**KLEIN_4B, "num_layers": 2, "num_single_layers": 2,
                                         "num_attention_heads": 2, "attention_head_dim": 64,
                                         "axes_dims_rope": (16, 16, 16, 16)}
    height, width, caption = (400, 800, 128) if cuda else (128, 256, 32)
    dtype = torch.bfloat16 if cuda else torch.float32
    with seeded(0):
        transformer = Flux2Transformer2DModel(**shape).to(device, dtype).requires_grad_(False)
        transformer.add_adapter(LoraConfig(r=64, lora_alpha=64, init_lora_weights="gaussian",
                                           target_modules=LORA_TARGETS))
    for p in transformer.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    model = InterleavedFlux2(transformer)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    channels, text_width = shape["in_channels"], shape["joint_attention_dim"]
    rows = []
    for pairs in contexts:
        for goldenmem in (True, False):
            sizes = pair_sizes(height, width, pairs - 1, goldenmem)
            seq_pairs = [Pair(torch.randn((h // 16) * (w // 16), channels, device=device, dtype=dtype), h // 16, w // 16,
                              torch.randn(caption, text_width, device=device, dtype=dtype)) for h, w in sizes]
            tokens = sum(p.latents.shape[0] + caption for p in seq_pairs)

            def step():
                sigmas = torch.rand(len(seq_pairs))
                noises = [torch.randn_like(p.latents) for p in seq_pairs]
                seq = interleave([Pair(noised(p.latents, n, float(s)), p.height, p.width, p.text)
                                  for p, n, s in zip(seq_pairs, noises, sigmas)])
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                    prediction = model(seq, sigmas[None].to(device, dtype))
                target = torch.cat([n - p.latents for p, n in zip(seq_pairs, noises)])[None]
                loss = torch.nn.functional.mse_loss(prediction.float(), target.float())
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            try:
                step()  # warm-up
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                started = time.perf_counter()
                for _ in range(steps):
                    step()
                if cuda:
                    torch.cuda.synchronize()
                seconds = (time.perf_counter() - started) / steps
                peak = torch.cuda.max_memory_allocated() if cuda else None
                rows.append({"pairs": pairs, "goldenmem": goldenmem, "tokens": tokens,
                             "samples_per_s": round(1 / seconds, 4), "peak_bytes": peak})
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                rows.append({"pairs": pairs, "goldenmem": goldenmem, "tokens": tokens, "samples_per_s": None,
                             "peak_bytes": None, "error": "out of memory"})
    by = {(r["pairs"], r["goldenmem"]): r for r in rows}
    longest = max(contexts)
    gm, naive = by[(longest, True)], by[(longest, False)]
    ratio = (gm["samples_per_s"] / naive["samples_per_s"]) if gm["samples_per_s"] and naive["samples_per_s"] else None
    return {"device": "cuda" if cuda else "cpu", "frames": [height, width], "caption_tokens": caption,
            "transformer": {k: shape[k] for k in ("num_layers", "num_single_layers", "num_attention_heads",
                                                  "attention_head_dim")},
            "rows": rows, f"goldenmem_speedup_at_{longest}_pairs": ratio}
