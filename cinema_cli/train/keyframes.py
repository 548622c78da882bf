"""The keyframe family: Captain Cinema's interleaved model trained on a prepared dataset.

Each training sequence is L keyframes of one film (dynamic-stride sampling,
sequences.py), each with its own caption. The last is the target at full size; the
others are context pairs at their GoldenMem sizes (the nearest the largest), as the
interleaved backend shows them at inference. Every pair is noised at its own level
(diffusion forcing, logit-normal σ) and the loss is the flow-matching MSE over all pairs'
tokens under the bidirectional mask. Images and captions are encoded once per size with
the base model's VAE and text encoder (frozen) and kept in memory.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

from cinema_cli.errors import BadInput
from cinema_cli.train import sequences as seqs
from cinema_cli.train.engine import make_trainable
from cinema_cli.train.config import TrainConfig

# LoRA on every attention projection of both block kinds (and the single blocks' fused
# QKV+MLP input); the double blocks' to_out is a ModuleList, so its Linear is named.
LORA_TARGETS = (r".*\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out|to_qkv_mlp_proj)$"
                r"|.*single_transformer_blocks\.\d+\.attn\.to_out$")


class KeyframeTraining:
    name = "keyframes"

    def __init__(self, config: TrainConfig, dataset: Path):
        """Reads and checks the dataset and the context stages; loads no model."""
        from cinema_cli.data.reader import Dataset

        self.config = config
        data = Dataset(dataset)
        self.films: dict[str, list] = {}
        for sample in data.keyframes():
            self.films.setdefault(sample.film, []).append(sample)
        if not self.films:
            raise BadInput(f"{dataset} holds no kept keyframes to train on")
        counts = {film: len(samples) for film, samples in self.films.items()}
        self.held_out = held_out(counts, config)
        self.pools = []
        for length in config.context:
            pool = seqs.pool(counts, length, config.max_stride, config.max_overlap)
            if not pool:
                raise BadInput(f"a context of {length} pairs is longer than the films allow: the longest film has "
                               f"{max(counts.values())} kept keyframes; lower `context` (or add films)")
            pool = [s for s in pool if not seqs.shares_keyframes(s, self.held_out)]
            if not pool:
                raise BadInput(f"holding out {len(self.held_out)} validation sequence(s) leaves no training sequence "
                               f"of {length} pairs; lower validation.sequences or validation.pairs (or add films)")
            self.pools.append(pool)
        self.report = seqs.sampling_report(counts, sorted(set(config.context)), config.max_stride, config.max_overlap)
        self._latents: dict = {}
        self._texts: dict = {}

    # ------------------------------------------------------------ model

    def build(self, device):
        """The pipeline's frozen encoders and the interleaved model, LoRA attached (or
        every transformer weight trainable for `method: full`)."""
        import torch

        from cinema_cli.keyframes.interleaved_model import InterleavedFlux2

        cuda = device.type == "cuda"
        weights = torch.bfloat16 if cuda and self.config.precision != "fp32" else torch.float32
        self.pipe = load_base(self.config.base, weights)
        self.pipe.vae.to(device).requires_grad_(False)
        self.pipe.text_encoder.to(device).requires_grad_(False)
        transformer = self.pipe.transformer.to(device)
        transformer.requires_grad_(False)
        make_trainable(transformer, self.config, LORA_TARGETS)
        transformer.train()
        self.device = device
        return InterleavedFlux2(transformer)

    def save_weights(self, model, folder: Path) -> None:
        """The trained weights in diffusers' formats: a LoRA `load_lora_weights` reads,
        or (full fine-tune) a transformer folder `from_pretrained` reads."""
        transformer = model.transformer
        if self.config.method == "lora":
            from peft.utils import get_peft_model_state_dict

            type(self.pipe).save_lora_weights(folder, transformer_lora_layers=get_peft_model_state_dict(transformer))
        else:
            transformer.save_pretrained(folder / "transformer")

    def validate(self, model, run: Path, step: int) -> dict[str, float]:
        """The held-out sequences drawn by `model`; RUN/validation/step-N.png shows each
        sequence's keyframes over its drawing. Returns the drawings' errors."""
        errors, truths, drawings = self.storyboard_error(model, self.held_out)
        write_sheet(run / "validation" / f"step-{step:08d}.png", truths, drawings)
        return errors

    def storyboard_error(self, model, sequences: list[seqs.Sequence]) -> tuple[dict[str, float], list, list]:
        """Each sequence's keyframes drawn jointly by `model` from their captions, as the
        backend's joint mode draws a scene. Returns the mean squared errors against the
        keyframes — `latent` (the model's own space: what it learns, whatever the VAE) and
        `pixel` (in [0, 1], what a person sees) — with the keyframes and the drawings."""
        import numpy as np
        import torch

        from cinema_cli.keyframes.flux2_denoise import decode
        from cinema_cli.keyframes.interleaved import joint_latents

        c = self.config
        steps = c.validation.steps if c.validation is not None else 8
        truths, drawings, latent_errors, pixel_errors = [], [], [], []
        for n, sequence in enumerate(sequences):
            samples = [self.films[sequence.film][i] for i in sequence.indices]
            with torch.no_grad():
                latents = joint_latents(self.pipe, model, [caption_text(s) for s in samples],
                                        [c.seed + 1000 * n + i for i in range(len(samples))], c.height, c.width,
                                        steps=steps, guidance=None, caption_tokens=c.caption_tokens)
                drawn = [decode(self.pipe, x[None], c.height, c.width) for x in latents]
            truth = [fitted(s.image(), c.height, c.width) for s in samples]
            latent_errors += [torch.mean((x.float() - self._latent(s, c.height, c.width)[0]) ** 2).item()
                              for x, s in zip(latents, samples)]
            pixel_errors += [float(np.mean((d - t) ** 2)) for d, t in zip(drawn, truth)]
            truths.append(truth)
            drawings.append(drawn)
        return {"latent": float(np.mean(latent_errors)), "pixel": float(np.mean(pixel_errors))}, truths, drawings

    # ------------------------------------------------------------ data

    def step_sequences(self, step: int, rank: int, world: int) -> list[seqs.Sequence]:
        stage, first = self.config.stage(step)
        chosen = seqs.step_sequences(self.pools[stage], self.config.seed, stage, step - first, self.config.batch_size)
        local = self.config.batch_size // world
        return chosen[rank * local:(rank + 1) * local]

    def loss(self, model, step: int, rank: int, world: int):
        """This process's share of step `step`'s batch, its mean flow-matching loss. The
        noise of global sample j depends on (seed, step, j) only, not on the process count."""
        import torch

        from cinema_cli.keyframes.interleaved_model import interleave
        from cinema_cli.keyframes.interleaved_sampling import noised

        local = self.config.batch_size // world
        noisy, sigmas, targets = [], [], []
        for offset, sequence in enumerate(self.step_sequences(step, rank, world)):
            j = rank * local + offset
            generator = torch.Generator().manual_seed(random.Random(f"{self.config.seed}:{step}:{j}").getrandbits(63))
            pairs = self.pairs(sequence)
            sigma = torch.sigmoid(torch.randn(len(pairs), generator=generator))  # logit-normal, as FLUX trains
            noises = [torch.randn(p.latents.shape, generator=generator).to(p.latents) for p in pairs]
            noisy.append(interleave([replace(p, latents=noised(p.latents, n, float(s)))
                                     for p, n, s in zip(pairs, noises, sigma)]))
            sigmas.append(sigma)
            targets.append(torch.cat([n - p.latents for p, n in zip(pairs, noises)]))
        # Sequences of one step share their layout (same pair count, sizes and caption length).
        batch = replace(noisy[0], latents=torch.cat([s.latents for s in noisy]), text=torch.cat([s.text for s in noisy]))
        prediction = model(batch, torch.stack(sigmas).to(self.device, batch.latents.dtype), "bidirectional")
        return torch.nn.functional.mse_loss(prediction.float(), torch.stack(targets).float())

    def pairs(self, sequence: seqs.Sequence) -> list:
        from cinema_cli.keyframes.interleaved_model import Pair

        sizes = self.sizes(len(sequence.indices) - 1)
        samples = self.films[sequence.film]
        pairs = []
        for position, index in enumerate(sequence.indices):
            height, width = sizes[position]
            latents, rows, columns = self._latent(samples[index], height, width)
            pairs.append(Pair(latents, rows, columns, self._text(samples[index])))
        return pairs

    def sizes(self, context: int) -> list[tuple[int, int]]:
        return pair_sizes(self.config.height, self.config.width, context, self.config.goldenmem)

    def _latent(self, sample, height: int, width: int):
        import torch

        from cinema_cli.keyframes.flux2_denoise import encode_image

        key = (sample.key, height, width)
        if key not in self._latents:
            with torch.no_grad():
                latent = encode_image(self.pipe, sample.image(), height, width)
                packed = self.pipe._pack_latents(latent)[0].float()
            self._latents[key] = (packed.to(self.device), latent.shape[2], latent.shape[3])
        return self._latents[key]

    def _text(self, sample):
        import torch

        from cinema_cli.keyframes.flux2_denoise import text_layers

        if sample.key not in self._texts:
            with torch.no_grad():
                embeds, _ = self.pipe.encode_prompt(prompt=caption_text(sample), device=self.device,
                                                    max_sequence_length=self.config.caption_tokens,
                                                    text_encoder_out_layers=text_layers(self.pipe))
            self._texts[sample.key] = embeds[0].float()
        return self._texts[sample.key]


def caption_text(sample) -> str:
    """A keyframe's caption as the model reads it: character tags as plain names."""
    from cinema_cli.project.schema import CHARACTER_TAG

    return CHARACTER_TAG.sub(r"\1", sample.caption or "")


def held_out(films: dict[str, int], config: TrainConfig) -> list[seqs.Sequence]:
    """The validation sequences: `validation.sequences` runs of `validation.pairs`
    consecutive keyframes (default: the largest context), sharing none, chosen by the seed.
    Training never sees their keyframes."""
    v = config.validation
    if v is None:
        return []
    length = v.pairs or max(config.context)
    candidates = seqs.pool(films, length, 1, 0.0)
    if len(candidates) < v.sequences:
        raise BadInput(f"validation needs {v.sequences} held-out sequence(s) of {length} keyframes; the films hold "
                       f"{len(candidates)}; lower validation.sequences or validation.pairs (or add films)")
    return sorted(random.Random(f"{config.seed}:validation").sample(candidates, v.sequences),
                  key=lambda s: (s.film, s.indices))


def fitted(image, height: int, width: int):
    """A keyframe as the model is trained on it (centre crop, resize), pixels in [0, 1]."""
    from cinema_cli.keyframes.flux2_denoise import _pixels

    return (_pixels(image, height, width)[0].permute(1, 2, 0).numpy() + 1) / 2


def write_sheet(path: Path, truths: list[list], drawings: list[list]) -> None:
    """Each sequence's keyframes (a row) over its drawing (the row below), one frame per
    column; written whole or not at all."""
    import os

    import numpy as np
    from PIL import Image

    height, width = truths[0][0].shape[:2]
    columns = max(len(t) for t in truths)
    sheet = Image.new("RGB", (columns * width, 2 * len(truths) * height), (32, 32, 32))
    for row, frames in enumerate(r for pair in zip(truths, drawings) for r in pair):
        for column, pixels in enumerate(frames):
            tile = Image.fromarray((np.clip(pixels, 0, 1) * 255 + 0.5).astype(np.uint8))
            sheet.paste(tile, (column * width, row * height))
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".tmp-{path.name}")
    sheet.save(temp, format="PNG")
    os.replace(temp, path)


def pair_sizes(height: int, width: int, context: int, goldenmem: bool = True) -> list[tuple[int, int]]:
    """Pixel sizes of the context pairs (oldest first) and then the target. GoldenMem
    gives the nearest context pair the largest size; past its last size (frames too
    small to shrink further) the smallest is repeated."""
    from cinema_cli.memory.goldenmem import schedule

    full = (height, width)
    if not goldenmem or context == 0:
        return [full] * (context + 1)
    slots = [s.pixels for s in schedule(height, width, context).context] or [full]
    slots += [slots[-1]] * (context - len(slots))
    return list(reversed(slots)) + [full]


def load_base(base: str, dtype):
    """FLUX.2 klein from a diffusers folder or hub id, or the tiny preset (`tiny`)."""
    if base == "tiny":
        from cinema_cli.runtime.tiny import build_tiny

        return build_tiny("flux2")
    from cinema_cli.runtime.torch_compat import prepare_torch

    prepare_torch()
    from diffusers import Flux2KleinPipeline

    try:
        return Flux2KleinPipeline.from_pretrained(base, torch_dtype=dtype)
    except (OSError, ValueError) as err:
        raise BadInput(f"cannot load base model {base!r} as FLUX.2 klein: {err}") from None
