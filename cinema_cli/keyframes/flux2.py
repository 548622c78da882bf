"""The `flux2` keyframe backend: each keyframe drawn by FLUX.2 klein through diffusers.

The prompt is the caption with every <Name> written out with the character's description,
the shot size and the project's style (`prompting`). The model is shown every context
frame the memory library chose, as a reference image at exactly its GoldenMem size: earlier
keyframes, and the cast's reference images as identity anchors (context "@Name"), so the
sidecar lists exactly what the model saw. How references are encoded and attended, and
the reference K/V cache, is `flux2_denoise`. The noise comes from the shot's seed.

`model` is a Hugging Face id, a local folder holding a diffusers FLUX.2 klein pipeline, or
a tiny preset (random weights, offline: tests and `cinema doctor --smoke`): `tiny` (klein,
distilled), `tiny-kv` (klein KV) or `tiny-base` (klein base, guided). `references: auto`
caches the references' K/V (`kv`) on checkpoints trained for it (the klein KV ones) and
attends them jointly at every step (`joint`) on the others, as they were trained.

Steps and guidance default to what the checkpoint was made for: its config says whether
it is step-distilled (klein KV checkpoints all are); distilled ones run 4 steps without
guidance, base ones 50 steps with guidance 4.0, as diffusers' examples for them do.
cinema.yaml's `steps:` / `guidance:` override either.

torch and diffusers are imported only when a keyframe is drawn or checked: choosing the
backend, validating its options or reading `cinema status` must not pay for them.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from cinema_cli.errors import BackendError, BadInput
from cinema_cli.keyframes.base import KeyframePlan, KeyframeRequest, StepProgress, keyframe_backends
from cinema_cli.keyframes.prompting import keyframe_prompt
from cinema_cli.memory.goldenmem import PHI
from cinema_cli.project.schema import RuntimeSettings
from cinema_cli.runtime.inputs import ModelOption
from cinema_cli.runtime.loading import apply_profile, load_pretrained, local_folder, preflight_weights
from cinema_cli.runtime.memory import check_fits, free_gpu_bytes, model_size, out_of_memory_is_a_message
from cinema_cli.runtime.profiles import Runtime, resolve_runtime
from cinema_cli.runtime.tiny import build_tiny, is_tiny, tiny_kind
from cinema_cli.runtime.torch_compat import prepare_torch

DEFAULT_MODEL = "black-forest-labs/FLUX.2-klein-4B"
KLEIN_PIPELINES = ("Flux2KleinPipeline", "Flux2KleinKVPipeline")
PREVIZ = "keyframes.backend: sketch"
TEXT_TOKENS = 512  # the pipeline pads every prompt to this many tokens
PIXELS_PER_TOKEN = 16  # 8x VAE, then 2x2 patches


class Flux2Options(BaseModel, extra="forbid"):
    model: ModelOption = DEFAULT_MODEL  # a Hugging Face id, a local folder, or a tiny preset
    # Empty: the checkpoint's own (distilled: 4, base: 50).
    steps: int | None = Field(None, ge=1, le=200)
    # Classifier-free guidance; distilled checkpoints ignore it. 1 = off. Empty: the
    # checkpoint's own (distilled: off, base: 4.0).
    guidance: float | None = Field(None, ge=1.0, le=20.0)
    references: Literal["auto", "kv", "joint"] = "auto"


@keyframe_backends.register
class Flux2Keyframes:
    name = "flux2"
    version = "1"
    Options = Flux2Options

    def __init__(self, options: Flux2Options) -> None:
        self.options = options
        self._loaded: tuple[RuntimeSettings, Runtime, object] | None = None

    @classmethod
    def weights(cls, options: Flux2Options) -> list[str]:
        """The pretrained model it loads (none for the tiny preset): see runtime.inputs."""
        return [] if is_tiny(options.model) else [options.model]

    def preflight(self, plan: KeyframePlan) -> list[str]:
        """Before anything is written: a runtime this machine can run, the weights here, a
        FLUX.2 klein pipeline in them, and (on CUDA) enough free memory."""
        runtime, notices = resolve_runtime(plan.runtime, self.name, PREVIZ)
        if is_tiny(self.options.model):
            _tiny_kind(self.options.model)  # an unknown tiny preset is refused here
        folder = preflight_weights(self.options.model, runtime, self.name, notices)
        if folder is None:
            return notices
        _pipeline_class(folder, self.options.model)
        if runtime.device == "cuda":
            check_fits(flux2_size(folder), runtime, planned_tokens(plan.width, plan.height),
                       plan.width * plan.height, free_gpu_bytes(), self.name)
        return notices

    def render(self, request: KeyframeRequest, progress: StepProgress) -> Image.Image:
        from cinema_cli.keyframes.flux2_denoise import Job, checkpoint_defaults, generate

        pipe, runtime = self._pipeline(request.runtime)
        refs = tuple((_open(frame.path, frame.shot, self.name), frame.size) for frame in request.context)
        steps, guidance = checkpoint_defaults(pipe, self.options.steps, self.options.guidance)
        job = Job(
            prompt=keyframe_prompt(request), references=refs, width=request.width, height=request.height,
            steps=steps, guidance=guidance, seed=request.seed, mode=self._mode(pipe),
        )
        with out_of_memory_is_a_message(runtime, self.name, f"keyframe {request.shot_id}"):
            pixels = generate(pipe, job, progress)
        return Image.fromarray((np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))

    def _mode(self, pipe) -> str:
        if self.options.references != "auto":
            return self.options.references
        return "kv" if type(pipe).__name__ == "Flux2KleinKVPipeline" else "joint"

    def _pipeline(self, settings: RuntimeSettings) -> tuple[object, Runtime]:
        """The loaded pipeline and the runtime it runs with (loaded on first use, kept for the run)."""
        if self._loaded is None or self._loaded[0] != settings:
            runtime, _ = resolve_runtime(settings, self.name, PREVIZ)
            self._loaded = (settings, runtime, self._load(runtime))
        return self._loaded[2], self._loaded[1]

    def _load(self, runtime: Runtime):
        from cinema_cli.keyframes.flux2_denoise import use_kv_processors

        model = self.options.model
        if is_tiny(model):
            pipe = build_tiny("flux2", kind=_tiny_kind(model))
            use_kv_processors(pipe.transformer)
            if pipe.transformer.dtype != runtime.torch_dtype:  # built in float32
                pipe.to(dtype=runtime.torch_dtype)
            apply_profile(pipe, runtime)
            return pipe
        prepare_torch()
        import diffusers

        # A model not here yet is downloaded now; DiffusionPipeline then takes the class its
        # model_index.json names, so a KV checkpoint gets the KV pipeline (and `auto` its cache).
        folder = local_folder(model)
        cls = getattr(diffusers, _pipeline_class(folder, model)) if folder else diffusers.DiffusionPipeline
        pipe = load_pretrained(cls, model, runtime, self.name)
        _klein(type(pipe).__name__, model)
        use_kv_processors(pipe.transformer)
        return pipe


def _tiny_kind(model: str) -> str:
    from cinema_cli.runtime.tiny_flux2 import KINDS

    kind = tiny_kind(model, "klein")
    if kind not in KINDS:
        raise BadInput(f"keyframes.options.model: {model} is not a tiny preset; use tiny, tiny-kv or tiny-base")
    return kind


def planned_tokens(width: int, height: int) -> int:
    """Transformer tokens of one keyframe: the prompt, the frame, and its context, which
    GoldenMem keeps under (φ - 1) x the frame."""
    frame = (width // PIXELS_PER_TOKEN) * (height // PIXELS_PER_TOKEN)
    return TEXT_TOKENS + math.ceil(PHI * frame)


def flux2_size(folder: Path):
    """The model's size for the preflight estimate; its VAE decodes one image at a time."""
    return replace(model_size(folder), vae_frames=1)


def _pipeline_class(folder: Path, model: str) -> str:
    try:
        name = json.loads((folder / "model_index.json").read_text(encoding="utf-8")).get("_class_name", "")
    except (OSError, ValueError):
        name = ""
    return _klein(name, model)


def _klein(name: str, model: str) -> str:
    if name not in KLEIN_PIPELINES:
        raise BadInput(
            f"keyframes.options.model: {model} is not a diffusers FLUX.2 klein pipeline "
            f"(its model_index.json names {name or 'no pipeline'}, flux2 needs {' or '.join(KLEIN_PIPELINES)})"
        )
    return name


def _open(path: Path, source: str, who: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as err:
        raise BackendError(f"{who}: cannot read the reference image of {source}, {path}: {err}") from err
