"""The `keyframe-scene` shot backend: all shots of a scene denoised together by one Wan
image-to-video model, each shot anchored to its keyframe, then split back into one MP4
per shot — Captain Cinema's bottom-up video model, V_k = {I_k, G(I_1:K, c_tiled)}.

Its attention is HoloCine's (window cross-attention, sparse inter-shot self-attention):
each shot reads its own keyframe through the I2V channels and the other shots' keyframes
as their first latent frames (the summary tokens). `cinema train video --mode keyframes`
trains an adapter for exactly this conditioning (the same `shot_condition`, prompt layout
and processors, train/video.py); without one, the stock I2V model runs the pattern
zero-shot and shots may drift or blend (`cinema doctor` says so). HoloCine's own released
model is the `holocine` backend. (`scene` is the old name of this backend and still works.)

A scene here is a run of consecutive storyboard shots with the same `scene:`; the
pipeline renders such a group at once, and an edit to any of its shots makes the whole
group stale. How the joint denoising works is in `scene_denoise`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from cinema_cli.project.schema import Storyboard
from cinema_cli.runtime.memory import out_of_memory_is_a_message
from cinema_cli.runtime.parallel import lead
from cinema_cli.runtime.tiny import TINY
from cinema_cli.video.base import EncodeSettings, RenderPlan, SceneRequest, StepProgress, shot_backends
from cinema_cli.video.lora import lora_files
from cinema_cli.video.wan_model import WanModel, WanOptions, snap_frames, write_video

DEFAULT_MODEL = "Wan-AI/Wan2.2-I2V-A14B-Diffusers"


class SceneOptions(WanOptions):
    # Latent frames of a shot that the other shots see (its summary).
    summary_frames: int = Field(1, ge=1, le=16)
    # Kernel of the sparse attention (cinema_cli.attention.kernels): flash-varlen (CUDA and
    # the `cuda` extra), sdpa (packed dense calls), or auto (flash-varlen where it can run).
    attention: Literal["auto", "flash-varlen", "sdpa"] = "auto"


@shot_backends.register
class KeyframeSceneShots:
    name = "keyframe-scene"
    version = "1"
    Options = SceneOptions
    # Shots join inside a scene by being denoised together, not by a last frame.
    uses_next_keyframe = False

    def __init__(self, options: SceneOptions):
        self.options = options
        self.model = WanModel(self.name, options.model or DEFAULT_MODEL, "i2v", on_load=self._install, loras=options)
        self._scene = None  # what the installed attention processors read

    def _install(self, pipe) -> None:
        from cinema_cli.attention.processors import SceneAttention, install_scene_attention

        self._scene = SceneAttention()
        for name in ("transformer", "transformer_2"):
            if getattr(pipe, name, None) is not None:
                install_scene_attention(getattr(pipe, name), self._scene)

    @classmethod
    def weights(cls, options: SceneOptions) -> list[str]:
        """The pretrained model it loads (none for the tiny preset): see runtime.inputs."""
        model = options.model or DEFAULT_MODEL
        return [] if model == TINY else [model]

    @classmethod
    def input_files(cls, options: SceneOptions) -> dict[str, Path]:
        """Its LoRA files (video.lora), hashed into every shot's recipe."""
        return lora_files(options, cls.name)

    def frames_for(self, requested: int) -> int:
        return snap_frames(requested)

    def groups(self, board: Storyboard, frames_of=None) -> list[list[str]]:
        """Consecutive shots of the same scene."""
        groups: list[list[str]] = []
        for index, shot in enumerate(board.shots):
            if index and shot.scene == board.shots[index - 1].scene:
                groups[-1].append(shot.id)
            else:
                groups.append([shot.id])
        return groups

    def preflight(self, plan: RenderPlan) -> list[str]:
        return self.model.preflight(plan)

    def scene_memory(self, plan: RenderPlan):
        return self.model.scene_memory(plan)

    def render_group(
        self, request: SceneRequest, outs: list[Path], encode: EncodeSettings, progress: StepProgress
    ) -> None:
        from cinema_cli.video.scene_denoise import denoise_scene

        lead(request.shots[0].runtime.cp, "render_group", request)
        pipe, runtime = self.model.pipeline(request.shots[0].runtime)
        shots = ", ".join(s.shot_id for s in request.shots)
        with out_of_memory_is_a_message(runtime, self.name, f"scene {request.scene_id} ({shots})"):
            videos = denoise_scene(
                pipe, request, self._scene, self.options.steps, self.options.guidance,
                self.options.negative_prompt, self.options.summary_frames, self.options.attention,
                progress, self.name,
            )
        for shot, out, video in zip(request.shots, outs, videos):
            write_video(video, out, shot.fps, encode, shot.frames, self.name)


@shot_backends.register
class SceneShots(KeyframeSceneShots):
    """The old name, kept for cinema.yaml files that say `backend: scene` (their recipes
    keep naming it, so their shots stay current)."""

    name = "scene"
