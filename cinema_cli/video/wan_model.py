"""What the `wan` and `scene` backends share: their common options, Wan's 4k+1 frame rule,
loading the pipeline (tiny or pretrained) under the runtime profile with its checks, and
anchoring a shot's first frame to its keyframe.

torch and diffusers are imported inside the functions: choosing a backend, validating its
options or reading `cinema status` must not pay for them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import Field

from cinema_cli.assemble.ffmpeg import VideoWriter
from cinema_cli.errors import BackendError, BadInput
from cinema_cli.project.schema import RuntimeSettings
from cinema_cli.runtime.inputs import ModelOption
from cinema_cli.runtime.loading import load_pretrained, local_folder, preflight_weights
from cinema_cli.runtime.memory import SceneMemory, check_fits, free_gpu_bytes, model_size
from cinema_cli.runtime.parallel import check_tokens, gpu_count, parallelize, possible_degrees
from cinema_cli.runtime.profiles import Runtime, resolve_runtime
from cinema_cli.runtime.tiny import TINY, build_tiny, is_tiny
from cinema_cli.video.base import EncodeSettings, RenderPlan
from cinema_cli.video.lora import (
    VideoLoraOptions, folder_transformers, load_loras, pipeline_transformers, preflight_loras,
)

# Wan's VAE: a latent frame holds 4 video frames, after a first latent of the first frame alone.
TEMPORAL = 4


class WanOptions(VideoLoraOptions, extra="forbid"):
    # A Hugging Face id, a local folder with a diffusers Wan pipeline, or `tiny` (random
    # weights, offline; for tests). Empty: the mode's default model.
    model: ModelOption | None = None
    steps: int = Field(40, ge=1, le=200)  # denoising steps
    guidance: float = Field(5.0, ge=1.0, le=20.0)  # classifier-free guidance; 1 = off (twice as fast)
    negative_prompt: str = ""


def snap_frames(requested: int) -> int:
    """The nearest Wan frame count 4k+1 (k >= 1) to `requested`."""
    return TEMPORAL * max(1, round((requested - 1) / TEMPORAL)) + 1


def latent_frames(frames: int) -> int:
    return (frames - 1) // TEMPORAL + 1


def read_image(path: Path, width: int, height: int, who: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except OSError as err:
        raise BackendError(f"{who}: cannot read keyframe {path}: {err}") from err
    return image if image.size == (width, height) else image.resize((width, height), Image.Resampling.LANCZOS)


def write_video(frames: np.ndarray, out: Path, fps: int, encode: EncodeSettings, expected: int, who: str) -> None:
    """Frames in [0, 1], (frames, height, width, 3), streamed into the shot's MP4."""
    count, height, width = frames.shape[:3]
    if count != expected:
        raise BackendError(f"{who}: the model returned {count} frames, {expected} were asked for")
    with VideoWriter(out, width, height, fps, encode) as writer:
        for frame in frames:
            writer.write((np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))


def _heads(folder: Path) -> int | None:
    """The transformer's attention heads, from its config (what Ulysses splits)."""
    config = folder / "transformer" / "config.json"
    return json.loads(config.read_text(encoding="utf-8")).get("num_attention_heads") if config.is_file() else None


class WanModel:
    """The Wan pipeline a backend renders with, loaded once and kept for the run."""

    def __init__(self, who: str, model: str, kind: str, on_load: Callable[[object], None] | None = None,
                 loras: VideoLoraOptions | None = None):
        self.who = who  # the backend's name, for messages
        self.model = model
        self.kind = kind  # the conditioning: i2v | ti2v | t2v
        self.on_load = on_load  # what the backend does to a freshly loaded pipeline
        self.loras = loras or VideoLoraOptions()  # the LoRAs it renders with (video.lora)
        self._loaded: tuple[RuntimeSettings, Runtime, object] | None = None

    def preflight(self, plan: RenderPlan) -> list[str]:
        """Before anything is written: a runtime this machine can run, weights present,
        a frame size the model can make, and (on CUDA) enough free memory."""
        runtime, notices = resolve_runtime(plan.runtime, self.who)
        folder = preflight_weights(self.model, runtime, self.who, notices)
        if folder is not None:
            check_kind(folder, self.model, self.kind, self.who)
        preflight_loras(self.loras, self.model, self.who, lambda: (
            pipeline_transformers(build_tiny("wan", kind=self.kind)) if self.model == TINY
            else None if folder is None else folder_transformers(folder)))
        if folder is None:
            if self.model == TINY:
                self._check_size(plan, 16)
                check_tokens(plan.runtime.cp, (plan.height // 16) * (plan.width // 16), None, self.who)
            return notices
        multiple = _spatial_multiple(folder)
        self._check_size(plan, multiple)
        per_frame = (plan.height // multiple) * (plan.width // multiple)
        heads = _heads(folder)
        check_tokens(plan.runtime.cp, per_frame, heads, self.who)
        scene = self.scene_memory(plan)
        if scene is not None:
            check_fits(scene.size, runtime, scene.tokens, scene.pixels, free_gpu_bytes(), self.who,
                       plan.runtime.cp.degree, possible_degrees(plan.runtime.cp, per_frame, heads, gpu_count()))
        return notices

    def scene_memory(self, plan: RenderPlan) -> SceneMemory | None:
        """The longest shot's (or scene's) ask of a GPU, on CUDA with the weights already here."""
        runtime, _ = resolve_runtime(plan.runtime, self.who)
        folder = None if is_tiny(self.model) else local_folder(self.model)
        if runtime.device != "cuda" or folder is None:
            return None
        multiple = _spatial_multiple(folder)
        per_frame = (plan.height // multiple) * (plan.width // multiple)
        tokens = max(latent_frames(f) for f in plan.frames) * per_frame
        return SceneMemory(plan.longest, model_size(folder), runtime, tokens, plan.width * plan.height, per_frame,
                           _heads(folder))

    def _check_size(self, plan: RenderPlan, multiple: int) -> None:
        if plan.width % multiple or plan.height % multiple:
            fit = f"{plan.width // multiple * multiple}x{plan.height // multiple * multiple}"
            raise BadInput(
                f"cinema.yaml: resolution: {plan.width}x{plan.height} cannot be made by {self.model}, "
                f"whose frames are multiples of {multiple} pixels a side; use e.g. {fit}"
            )

    def pipeline(self, settings: RuntimeSettings) -> tuple[object, Runtime]:
        """The loaded pipeline and the runtime it runs with (loaded on first use)."""
        if self._loaded is None or self._loaded[0] != settings:
            runtime, _ = resolve_runtime(settings, self.who)
            if self.model == TINY:
                from cinema_cli.runtime.loading import apply_profile

                pipe = build_tiny("wan", kind=self.kind)
                self._load_loras(pipe)
                if runtime.dtype != "float32":  # built in float32
                    pipe.to(dtype=runtime.torch_dtype)
                apply_profile(pipe, runtime)
            else:
                from cinema_cli.runtime.torch_compat import prepare_torch

                prepare_torch()
                import diffusers

                cls = diffusers.WanPipeline if self.kind == "t2v" else diffusers.WanImageToVideoPipeline
                pipe = load_pretrained(cls, self.model, runtime, self.who, before_profile=self._load_loras)
            if self.on_load is not None:
                self.on_load(pipe)
            parallelize(pipe, settings.cp, runtime.device, self.who)
            self._loaded = (settings, runtime, pipe)
        return self._loaded[2], self._loaded[1]

    def _load_loras(self, pipe) -> None:
        """Before the profile moves, offloads or compiles it: fused on the loaded weights."""
        load_loras(pipe, self.loras, self.model, self.who)


KIND_NAMES = {"i2v": "image-to-video (mask and latent channels)", "ti2v": "text-image-to-video (Wan2.2 TI2V)",
              "t2v": "text-to-video"}


def check_kind(folder: Path, model: str, kind: str, who: str) -> None:
    """A checkpoint of the conditioning the backend feeds it, told by its transformer's
    input channels: I2V reads 2 x latent + 4 mask channels, T2V and TI2V the latents alone."""
    transformer = _config(folder / "transformer" / "config.json", who)
    latent = _config(folder / "vae" / "config.json", who).get("z_dim", 16)
    channels = transformer.get("in_channels")
    found = "i2v" if channels == 2 * latent + TEMPORAL else "t2v"
    if (found == "i2v") != (kind == "i2v"):
        raise BadInput(
            f"{who}: {model} is a {KIND_NAMES[found]} model ({folder / 'transformer' / 'config.json'}: "
            f"in_channels {channels}), but {who} needs a {KIND_NAMES[kind]} one; set video.options.model"
        )


def _config(path: Path, who: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise BadInput(f"{who}: cannot read {path}: {err}") from err


def _spatial_multiple(folder: Path) -> int:
    """The pixel multiple a pipeline's frames must be: the VAE's spatial factor x the
    transformer's patch (16 for Wan2.1, 32 for Wan2.2 TI2V)."""
    vae = json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8"))
    transformer = json.loads((folder / "transformer" / "config.json").read_text(encoding="utf-8"))
    spatial = vae.get("scale_factor_spatial") or 8
    return spatial * transformer.get("patch_size", [1, 2, 2])[1]


# ---------------------------------------------------------------- first-frame anchoring


def clean_first_latent(pipe, image) -> "torch.Tensor":  # noqa: F821
    """The normalised VAE latent of the keyframe alone: what the first latent frame of a
    video starting on it is (Wan's VAE is causal, so frame 0 is encoded by itself)."""
    import torch
    from diffusers.pipelines.wan.pipeline_wan_i2v import retrieve_latents

    vae = pipe.vae
    pixels = image.unsqueeze(2).to(device=pipe._execution_device, dtype=vae.dtype)
    latent = retrieve_latents(vae.encode(pixels), sample_mode="argmax").to(torch.float32)
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(latent)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(latent)
    return (latent - mean) / std


def on_path(clean, noise, sigma: float):
    """Where the flow-matching path from `noise` to `clean` is at `sigma`."""
    return (1.0 - sigma) * clean + sigma * noise


def anchor_prediction(prediction, latents, frame: int, clean, sigma: float):
    """The flow prediction with latent frame `frame` replaced by the velocity whose clean
    estimate (sample - sigma x velocity) is exactly `clean`.

    Anchoring the prediction, not the sample, is what holds for any flow-matching solver:
    Euler steps along it, and multistep solvers (UniPC, DPM) combine clean estimates and
    the current sample linearly, so a frame whose every clean estimate is `clean` stays on
    the path to it and ends there. (Replacing the sample after a step does not: UniPC's
    corrector rebuilds each sample from its own history and drops the replacement.)"""
    prediction = prediction.clone()
    current = latents[:, :, frame:frame + 1].to(prediction.dtype)
    prediction[:, :, frame:frame + 1] = (current - clean.to(prediction)) / sigma
    return prediction


def decode(pipe, latents) -> np.ndarray:
    """Normalised latents to frames in [0, 1], (frames, height, width, 3), as the Wan pipelines decode."""
    import torch

    vae = pipe.vae
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(latents)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(latents)
    video = vae.decode((latents * std + mean).to(vae.dtype), return_dict=False)[0]
    return pipe.video_processor.postprocess_video(video, output_type="np")[0]
