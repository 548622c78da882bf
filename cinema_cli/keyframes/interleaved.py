"""The `interleaved` keyframe backend: Captain Cinema's interleaved model, causal mode.

Each keyframe extends the film: the context frames the memory planner chose (retrieved
earlier keyframes and cast references, each at its GoldenMem size) become context pairs,
each with its own caption, oldest first, given a small noise once (`context_noise`); the
new keyframe is the last pair, drawn under the causal mask with the context's K/V computed
once (`interleaved_sampling.sample_causal`). It runs FLUX.2 klein's weights — loading,
preflight and decoding are the `flux2` backend's — and is meant for a checkpoint or LoRA
trained on interleaved sequences (`cinema train keyframes`); on stock klein it is the
zero-shot use of the same architecture.

Joint sampling (a scene's keyframes drawn together) needs keyframe groups in the plan
and is not offered yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import Field, field_validator

from cinema_cli.keyframes.base import KeyframeRequest, StepProgress, keyframe_backends
from cinema_cli.keyframes.flux2 import Flux2Keyframes, Flux2Options, _open
from cinema_cli.keyframes.prompting import keyframe_prompt
from cinema_cli.project.schema import plain_text
from cinema_cli.runtime.memory import out_of_memory_is_a_message

PIXELS_PER_TOKEN = 16  # 8x VAE, then 2x2 patches


class InterleavedOptions(Flux2Options):
    references: Literal["auto"] = Field("auto", exclude=True)  # the pairs replace klein's references
    mode: Literal["causal"] = "causal"
    # Timesteps (of 1000) the context pairs are noised to, drawn per pair from the shot's seed.
    context_noise: tuple[int, int] = (1, 250)
    # Text tokens of each context pair's caption (the new keyframe's prompt keeps klein's 512).
    context_caption_tokens: int = Field(128, ge=8, le=512)
    # A LoRA from `cinema train keyframes`: the run folder, its lora/ folder or the file.
    lora: str | None = None

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
        return Image.fromarray((np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))

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

        if self.options.lora is not None:
            lora_weights(self.options.lora)  # missing: bad input before anything is written
        return super().preflight(plan)

    def _draw(self, pipe, request: KeyframeRequest, progress: StepProgress) -> np.ndarray:
        import torch
        from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu, retrieve_timesteps

        from cinema_cli.keyframes.flux2_denoise import checkpoint_defaults, decode, distilled, encode_image, text_layers
        from cinema_cli.keyframes.interleaved_model import Pair
        from cinema_cli.keyframes.interleaved_sampling import Target, sample_causal

        o = self.options
        device = pipe._execution_device
        layers = text_layers(pipe)

        def encode(text: str, tokens: int = 512) -> torch.Tensor:
            embeds, _ = pipe.encode_prompt(prompt=text, device=device, max_sequence_length=tokens,
                                           text_encoder_out_layers=layers)
            return embeds[0]

        context = []
        for frame in request.context:
            latent = encode_image(pipe, _open(frame.path, frame.shot, self.name), *frame.size).to(device)
            context.append(Pair(pipe._pack_latents(latent)[0].to(pipe.transformer.dtype), latent.shape[2],
                                latent.shape[3], encode(plain_text(frame.caption), o.context_caption_tokens)))
        rows, columns = request.height // PIXELS_PER_TOKEN, request.width // PIXELS_PER_TOKEN
        target = Target(encode(keyframe_prompt(request)), rows, columns)
        # The keyframe's noise as the flux2 backend draws it (same seed, same start); the
        # context's noise from a generator of its own.
        noise, _ = pipe.prepare_latents(
            batch_size=1, num_latents_channels=pipe.transformer.config.in_channels // 4, height=request.height,
            width=request.width, dtype=target.text.dtype, device=device,
            generator=torch.Generator(device=device).manual_seed(request.seed),
        )
        generator = torch.Generator(device="cpu").manual_seed(request.seed + 1)
        steps, guidance = checkpoint_defaults(pipe, o.steps, o.guidance)
        guided = guidance > 1 and not distilled(pipe)
        sigmas = np.linspace(1.0, 1 / steps, steps)
        mu = compute_empirical_mu(image_seq_len=rows * columns, num_steps=steps)
        timesteps, _ = retrieve_timesteps(pipe.scheduler, steps, device, sigmas=sigmas, mu=mu)
        pipe.scheduler.set_begin_index(0)

        def step(velocity, t, latents):
            return pipe.scheduler.step(velocity[None], t, latents[None], return_dict=False)[0][0]

        latents = sample_causal(
            pipe.interleaved, context, target, noise[0], timesteps, step, context_noise=o.context_noise,
            generator=generator, negative=encode("") if guided else None, guidance=guidance, progress=progress,
        )
        image = decode(pipe, latents[None], request.height, request.width)
        pipe.maybe_free_model_hooks()
        return image


def _load_lora(pipe, path: str, backend: str) -> None:
    from cinema_cli.errors import BadInput
    from cinema_cli.train.run import lora_weights

    weights = lora_weights(path)
    try:
        pipe.load_lora_weights(str(weights))
    except (RuntimeError, ValueError, KeyError) as err:
        raise BadInput(f"{backend}: the LoRA {weights} does not fit {type(pipe.transformer).__name__} "
                       f"(trained for another architecture or size?): {str(err).splitlines()[0]}") from None
