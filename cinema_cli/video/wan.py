"""The `wan` shot backend: each shot moved from its keyframe by a Wan video model
(diffusers' WanImageToVideoPipeline), one shot at a time.

Modes:
- `i2v`: the shot starts on its keyframe.
- `flf2v`: it starts on its keyframe and, when the next shot joins it `continuous`, ends
  on the next shot's keyframe (first-last-frame: `last_image=`).
- `ti2v`: Wan2.2 TI2V; it starts on its keyframe. Its pipeline ignores `last_image`, so
  a continuous join does not end on the next keyframe (a notice says so).

Wan makes 4k+1 frames; `frames_for` snaps each shot's duration x fps to the nearest such
count, and the pipeline takes that as the shot's length everywhere (status, film, probes).

The shot is exactly what diffusers' WanImageToVideoPipeline makes of the keyframe (and
the last frame), conditioned as the checkpoints were trained: through the I2V mask and
latent channels (or TI2V's clean first latent). Nothing is pinned along the schedule:
the real checkpoints' UniPC solver rebuilds each sample from its own history, so a
sample edited between steps would be dropped, and the models reproduce the frames they
are given. The prompt is the caption with the storyboard's camera directive in words.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from cinema_cli.runtime.memory import out_of_memory_is_a_message
from cinema_cli.runtime.parallel import lead
from cinema_cli.runtime.tiny import TINY
from cinema_cli.video.base import EncodeSettings, RenderPlan, ShotRequest, StepProgress, shot_backends
from cinema_cli.video.lora import lora_files
from cinema_cli.video.prompting import shot_prompt
from cinema_cli.video.wan_model import WanModel, WanOptions, latent_frames, read_image, snap_frames, write_video

DEFAULT_MODELS = {
    "i2v": "Wan-AI/Wan2.1-I2V-14B-480P-diffusers",
    "flf2v": "Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers",
    "ti2v": "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
}


class WanShotOptions(WanOptions):
    mode: Literal["i2v", "flf2v", "ti2v"] = "i2v"


@shot_backends.register
class WanShots:
    name = "wan"
    version = "1"
    Options = WanShotOptions
    uses_next_keyframe = False

    def __init__(self, options: WanShotOptions):
        self.options = options
        # Only first-last-frame reads the next keyframe; then shot k depends on keyframe k+1.
        self.uses_next_keyframe = options.mode == "flf2v"
        model = options.model or DEFAULT_MODELS[options.mode]
        self.model = WanModel(self.name, model, "ti2v" if options.mode == "ti2v" else "i2v", loras=options)

    @classmethod
    def weights(cls, options: WanShotOptions) -> list[str]:
        """The pretrained model it loads (none for the tiny preset): see runtime.inputs."""
        model = options.model or DEFAULT_MODELS[options.mode]
        return [] if model == TINY else [model]

    @classmethod
    def input_files(cls, options: WanShotOptions) -> dict[str, Path]:
        """Its LoRA files (video.lora), hashed into every shot's recipe."""
        return lora_files(options, cls.name)

    def frames_for(self, requested: int) -> int:
        return snap_frames(requested)

    def preflight(self, plan: RenderPlan) -> list[str]:
        notices = self.model.preflight(plan)
        if self.options.mode == "ti2v" and plan.continuous:
            notices.append(
                f"wan ti2v: {plan.continuous} shot(s) should flow into a continuous next shot, but the "
                "TI2V pipeline ignores last_image, so they start on their keyframe only; mode: flf2v "
                "also ends them on the next keyframe"
            )
        return notices

    def scene_memory(self, plan: RenderPlan):
        return self.model.scene_memory(plan)

    def render(self, request: ShotRequest, out: Path, encode: EncodeSettings, progress: StepProgress) -> None:
        lead(request.runtime.cp, "render", request)
        video = self.frames(request, progress)
        write_video(video, out, request.fps, encode, request.frames, self.name)

    def frames(self, request: ShotRequest, progress: StepProgress) -> np.ndarray:
        """The shot's frames in [0, 1], (frames, height, width, 3)."""
        import torch

        pipe, runtime = self.model.pipeline(request.runtime)
        size = (request.width, request.height)
        image = read_image(request.keyframe, *size, self.name)
        last = None
        if self.options.mode == "flf2v" and request.next_keyframe is not None:
            last = read_image(request.next_keyframe, *size, self.name)
        steps = self.options.steps
        # The noise is drawn from the shot's seed on the CPU: the same shot on any device.
        shape = (1, pipe.vae.config.z_dim, latent_frames(request.frames),
                 request.height // pipe.vae_scale_factor_spatial, request.width // pipe.vae_scale_factor_spatial)
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(request.seed))

        def step_done(pipe, index: int, timestep, tensors: dict) -> dict:
            progress(index + 1, steps)
            return {}

        with out_of_memory_is_a_message(runtime, self.name, f"shot {request.shot_id}"):
            return pipe(
                image=image,
                last_image=last,
                prompt=shot_prompt(request.caption, request.framing, request.move),
                negative_prompt=self.options.negative_prompt,
                height=request.height,
                width=request.width,
                num_frames=request.frames,
                num_inference_steps=steps,
                guidance_scale=self.options.guidance,
                latents=noise.to(pipe._execution_device),
                output_type="np",
                callback_on_step_end=step_done,
            ).frames[0]
