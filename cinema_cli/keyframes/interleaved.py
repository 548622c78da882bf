"""The `interleaved` keyframe backend: Captain Cinema's interleaved model.

`mode: causal` (the default): each keyframe extends the film. The context frames the
memory planner chose (retrieved earlier keyframes and cast references, each at its
GoldenMem size) become context pairs, each with its own caption, oldest first, given a
small noise once (`context_noise`); the new keyframe is the last pair, drawn under the
causal mask with the context's K/V computed once (`interleaved_sampling.sample_causal`).

`mode: joint`: the keyframes of a scene (up to the trained context, `max_pairs`) are
drawn together under the bidirectional mask (`interleaved_sampling.sample_joint`), as the
model was trained: one artifact group, so editing one of them redraws them all
(pipeline/keyframes.py). Its keyframes see each other, not the memory of earlier scenes.

It runs FLUX.2 klein's weights — loading, preflight and decoding are the `flux2`
backend's — and is meant for a checkpoint or LoRA trained on interleaved sequences
(`cinema train keyframes`); on stock klein it is the zero-shot use of the same
architecture.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import Field, field_validator

from cinema_cli.keyframes.base import KeyframeRequest, StepProgress, keyframe_backends
from cinema_cli.keyframes.flux2 import Flux2Keyframes, Flux2Options, _open
from cinema_cli.keyframes.prompting import keyframe_prompt
from cinema_cli.project.schema import Storyboard, plain_text
from cinema_cli.runtime.inputs import FileOption
from cinema_cli.runtime.memory import out_of_memory_is_a_message
from cinema_cli.runtime.torch_compat import prepare_torch

PIXELS_PER_TOKEN = 16  # 8x VAE, then 2x2 patches
# Keyframes drawn together in joint mode when neither `max_pairs` nor the LoRA's training
# run says: the context Captain Cinema samples its storyboards with (Appendix A).
JOINT_PAIRS = 8


class InterleavedOptions(Flux2Options):
    references: Literal["auto"] = Field("auto", exclude=True)  # the pairs replace klein's references
    mode: Literal["causal", "joint"] = "causal"
    # Joint mode: at most this many keyframes of a scene drawn together; None: the largest
    # context the `lora` run trained on, else JOINT_PAIRS. Left out of the recipe: the
    # groups it makes are recorded there (pipeline/keyframes.py).
    max_pairs: int | None = Field(None, ge=1, le=64, exclude=True)
    # Timesteps (of 1000) the context pairs are noised to, drawn per pair from the shot's seed.
    context_noise: tuple[int, int] = (1, 250)
    # Text tokens of each context pair's caption (the new keyframe's prompt keeps klein's
    # 512), and of every pair in joint mode, as in training.
    context_caption_tokens: int = Field(128, ge=8, le=512)
    # A LoRA from `cinema train keyframes`: the run folder, its lora/ folder or the file.
    lora: FileOption = None

    @field_validator("context_noise")
    @classmethod
    def _range(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not 0 <= low <= high <= 1000:
            raise ValueError(f"context_noise must be two timesteps 0 <= low <= high <= 1000, got {list(value)}")
        return value


@keyframe_backends.register
class InterleavedKeyframes(Flux2Keyframes):
    name = "interleaved"
    version = "1"
    Options = InterleavedOptions

    def render(self, request: KeyframeRequest, progress: StepProgress) -> Image.Image:
        import torch

        pipe, runtime = self._pipeline(request.runtime)
        with torch.no_grad(), out_of_memory_is_a_message(runtime, self.name, f"keyframe {request.shot_id}"):
            pixels = self._draw(pipe, request, progress)
        return _image(pixels)

    def groups(self, board: Storyboard) -> list[list[str]] | None:
        """Joint mode: each scene's consecutive shots, split into near-equal runs of at most
        `max_pairs`. Causal mode: None, one keyframe at a time."""
        if self.options.mode != "joint":
            return None
        runs: list[list[str]] = []
        for index, shot in enumerate(board.shots):
            if index and shot.scene == board.shots[index - 1].scene:
                runs[-1].append(shot.id)
            else:
                runs.append([shot.id])
        size = self.joint_pairs()
        groups = []
        for run in runs:
            parts = -(-len(run) // size)
            bounds = [round(i * len(run) / parts) for i in range(parts + 1)]
            groups += [run[a:b] for a, b in zip(bounds, bounds[1:])]
        return groups

    def joint_pairs(self) -> int:
        if self.options.max_pairs is not None:
            return self.options.max_pairs
        from cinema_cli.train.run import trained_context

        return (trained_context(self.options.lora) if self.options.lora else None) or JOINT_PAIRS

    def render_group(self, requests: Sequence[KeyframeRequest], progress: StepProgress) -> list[Image.Image]:
        """The keyframes of one group drawn together, in storyboard order."""
        import torch

        first = requests[0]
        pipe, runtime = self._pipeline(first.runtime)
        shots = ", ".join(r.shot_id for r in requests)
        with torch.no_grad(), out_of_memory_is_a_message(runtime, self.name, f"keyframes {shots}"):
            o = self.options
            pixels = draw_joint(pipe, pipe.interleaved, [keyframe_prompt(r) for r in requests],
                                [r.seed for r in requests], first.height, first.width, steps=o.steps,
                                guidance=o.guidance, caption_tokens=o.context_caption_tokens, progress=progress)
        return [_image(p) for p in pixels]

    @classmethod
    def input_files(cls, options: InterleavedOptions) -> dict[str, Path]:
        """The adapter file, hashed into every keyframe's recipe: retraining into the same
        run folder makes exactly the keyframes drawn with it stale (runtime.inputs)."""
        from cinema_cli.train.run import lora_weights

        return {} if options.lora is None else {"lora": lora_weights(options.lora)}

    def _load(self, runtime):
        from cinema_cli.keyframes.interleaved_model import InterleavedFlux2

        pipe = super()._load(runtime)
        if self.options.lora is not None:
            _load_lora(pipe, self.options.lora, self.name)
        pipe.interleaved = InterleavedFlux2(pipe.transformer)  # installs the pair attention
        return pipe

    def preflight(self, plan) -> list[str]:
        from cinema_cli.train.run import lora_weights

        if self.options.lora is None:
            return super().preflight(plan)
        weights = lora_weights(self.options.lora)  # missing: bad input before anything is written
        notices = super().preflight(plan)
        modules = _transformer_modules(self.options.model)
        if modules is not None:
            _check_lora_fits(weights, modules, self.name)
        return notices

    def _draw(self, pipe, request: KeyframeRequest, progress: StepProgress) -> np.ndarray:
        import torch

        from cinema_cli.keyframes.flux2_denoise import decode, encode_image
        from cinema_cli.keyframes.interleaved_model import Pair
        from cinema_cli.keyframes.interleaved_sampling import Target, sample_causal

        o = self.options
        device = pipe._execution_device
        context = []
        for frame in request.context:
            latent = encode_image(pipe, _open(frame.path, frame.shot, self.name), *frame.size).to(device)
            caption = encode_caption(pipe, plain_text(frame.caption), o.context_caption_tokens)
            context.append(Pair(pipe._pack_latents(latent)[0].to(pipe.transformer.dtype), latent.shape[2],
                                latent.shape[3], caption))
        rows, columns = request.height // PIXELS_PER_TOKEN, request.width // PIXELS_PER_TOKEN
        target = Target(encode_caption(pipe, keyframe_prompt(request)), rows, columns)
        noise = keyframe_noise(pipe, request.seed, request.height, request.width, target.text.dtype)
        # The context's noise from a generator of its own.
        generator = torch.Generator(device="cpu").manual_seed(request.seed + 1)
        timesteps, step, guidance, guided = schedule(pipe, rows * columns, o.steps, o.guidance)
        latents = sample_causal(
            pipe.interleaved, context, target, noise, timesteps, step, context_noise=o.context_noise,
            generator=generator, negative=encode_caption(pipe, "") if guided else None, guidance=guidance,
            progress=progress,
        )
        image = decode(pipe, latents[None], request.height, request.width)
        pipe.maybe_free_model_hooks()
        return image


def _image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))


def encode_caption(pipe, text: str, tokens: int = 512):
    """A caption's text-encoder states (tokens, joint width), as FLUX.2 klein conditions on them."""
    from cinema_cli.keyframes.flux2_denoise import text_layers

    embeds, _ = pipe.encode_prompt(prompt=text, device=pipe._execution_device, max_sequence_length=tokens,
                                   text_encoder_out_layers=text_layers(pipe))
    return embeds[0]


def keyframe_noise(pipe, seed: int, height: int, width: int, dtype):
    """A keyframe's starting noise (image tokens, C) as the flux2 backend draws it: same
    seed, same start."""
    import torch

    device = pipe._execution_device
    noise, _ = pipe.prepare_latents(
        batch_size=1, num_latents_channels=pipe.transformer.config.in_channels // 4, height=height, width=width,
        dtype=dtype, device=device, generator=torch.Generator(device=device).manual_seed(seed),
    )
    return noise[0]


def schedule(pipe, image_tokens: int, steps: int | None, guidance: float | None):
    """(timesteps, step, guidance, guided): klein's flow-matching schedule for frames of
    `image_tokens`, and `step(velocity, t, latents)` advancing unbatched latents."""
    from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu, retrieve_timesteps

    from cinema_cli.keyframes.flux2_denoise import checkpoint_defaults, distilled

    steps, guidance = checkpoint_defaults(pipe, steps, guidance)
    guided = guidance > 1 and not distilled(pipe)
    sigmas = np.linspace(1.0, 1 / steps, steps)
    mu = compute_empirical_mu(image_seq_len=image_tokens, num_steps=steps)
    timesteps, _ = retrieve_timesteps(pipe.scheduler, steps, pipe._execution_device, sigmas=sigmas, mu=mu)
    pipe.scheduler.set_begin_index(0)

    def step(velocity, t, latents):
        return pipe.scheduler.step(velocity[None], t, latents[None], return_dict=False)[0][0]

    return timesteps, step, guidance, guided


def draw_joint(pipe, model, captions: Sequence[str], seeds: Sequence[int], height: int, width: int, *,
               steps: int | None, guidance: float | None, caption_tokens: int,
               progress: StepProgress = lambda done, total: None) -> list[np.ndarray]:
    """Keyframes drawn together by the interleaved `model` over `pipe`'s encoders: one per
    caption, each from its seed's noise, all at full size, decoded. The backend's joint
    mode and training's validation storyboards both draw with this."""
    from cinema_cli.keyframes.flux2_denoise import decode

    latents = joint_latents(pipe, model, captions, seeds, height, width, steps=steps, guidance=guidance,
                            caption_tokens=caption_tokens, progress=progress)
    images = [decode(pipe, x[None], height, width) for x in latents]
    pipe.maybe_free_model_hooks()
    return images


def joint_latents(pipe, model, captions: Sequence[str], seeds: Sequence[int], height: int, width: int, *,
                  steps: int | None, guidance: float | None, caption_tokens: int,
                  progress: StepProgress = lambda done, total: None) -> list:
    """`draw_joint` before decoding: each keyframe's packed latents (image tokens, C)."""
    from cinema_cli.keyframes.interleaved_sampling import Target, sample_joint

    rows, columns = height // PIXELS_PER_TOKEN, width // PIXELS_PER_TOKEN
    targets = [Target(encode_caption(pipe, c, caption_tokens), rows, columns) for c in captions]
    noises = [keyframe_noise(pipe, seed, height, width, targets[0].text.dtype) for seed in seeds]
    timesteps, step, guidance, guided = schedule(pipe, rows * columns, steps, guidance)
    negative = [encode_caption(pipe, "", caption_tokens)] * len(captions) if guided else None
    return sample_joint(model, targets, noises, timesteps, step, negative=negative, guidance=guidance,
                        progress=progress)


def _transformer_modules(model: str) -> dict[str, tuple[int, int]] | None:
    """(in, out) features of every Linear of `model`'s transformer, from its config alone
    (no weights read); None when its weights are not on disk yet."""
    import json

    import torch

    from cinema_cli.runtime.loading import local_folder
    from cinema_cli.runtime.tiny import is_tiny, seeded

    prepare_torch()
    from diffusers import Flux2Transformer2DModel

    if is_tiny(model):
        from cinema_cli.runtime.tiny_flux2 import tiny_transformer

        with seeded(0):
            transformer = tiny_transformer()
    else:
        folder = local_folder(model)
        config = folder / "transformer" / "config.json" if folder is not None else None
        if config is None or not config.is_file():
            return None
        with torch.device("meta"):
            transformer = Flux2Transformer2DModel.from_config(json.loads(config.read_text()))
    return {name: (m.in_features, m.out_features) for name, m in transformer.named_modules()
            if isinstance(m, torch.nn.Linear)}


def _check_lora_fits(weights: Path, modules: dict[str, tuple[int, int]], backend: str) -> None:
    """A LoRA in diffusers' layout whose layers are not the transformer's (another
    architecture or size) is refused before anything is written; other layouts are
    judged when loaded."""
    import re

    from safetensors import safe_open

    from cinema_cli.errors import BadInput

    layer = re.compile(r"^transformer\.(.+)\.lora_([AB])\.weight$")
    try:
        with safe_open(str(weights), "pt") as adapter:
            shapes = {k: adapter.get_slice(k).get_shape() for k in adapter.keys()}
    except Exception as err:  # noqa: BLE001 - safetensors raises several kinds for a bad file
        raise BadInput(f"{backend}: the LoRA {weights} is not a readable .safetensors file: {err}") from None
    for key, shape in shapes.items():
        match = layer.match(key)
        if match is None:
            continue
        module, side = match.groups()
        fits = module in modules and (shape[1] == modules[module][0] if side == "A" else
                                      shape[0] == modules[module][1])
        if not fits:
            have = f"{modules[module][0]}->{modules[module][1]}" if module in modules else "no such layer"
            raise BadInput(f"{backend}: the LoRA {weights} does not fit this transformer (trained for another "
                           f"architecture or size?): {key} has shape {list(shape)}, the model's {module} has {have}")


def _load_lora(pipe, path: str, backend: str) -> None:
    from cinema_cli.errors import BadInput
    from cinema_cli.train.run import lora_weights

    weights = lora_weights(path)
    try:
        pipe.load_lora_weights(str(weights))
    except (RuntimeError, ValueError, KeyError) as err:
        raise BadInput(f"{backend}: the LoRA {weights} does not fit {type(pipe.transformer).__name__} "
                       f"(trained for another architecture or size?): {str(err).splitlines()[0]}") from None
