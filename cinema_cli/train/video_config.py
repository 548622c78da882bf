"""train.yaml for `cinema train video`: a video run's settings, validated like the keyframe
family's (train/config.py), resolved the same way (defaults, then --config, then flags)
and saved with the run.

The defaults are the papers' recipes. `mode: scene` is HoloCine's (§4: Wan2.2, LR 1e-5
with linear warmup, 480x832, FSDP + context parallelism for long samples, sigma shift 5);
`mode: keyframes` is Captain Cinema's bottom-up video model (Appendix A: LR 1e-5,
constant). A field the file leaves out takes its mode's default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from cinema_cli.project.schema import Strict
from cinema_cli.train.config import LoraSettings

# mode -> (LR schedule, warmup steps, frames per shot). Scene shots are multiples of 4
# frames (HoloCine's cut rule, holocine_prompt); keyframe-mode shots are Wan clips of
# 4k+1 frames, each opening on its keyframe (scene_denoise).
MODE_DEFAULTS = {"scene": ("warmup", 500, 32), "keyframes": ("constant", 0, 33)}


class VideoOptimizerSettings(Strict):
    lr: float = Field(1e-5, gt=0, le=1)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    schedule: Literal["warmup", "constant"] = "warmup"  # warmup: linear to lr, then constant
    warmup_steps: int = Field(0, ge=0)


class VideoTrainConfig(Strict):
    base: str = Field(..., min_length=1)  # a diffusers Wan pipeline folder or hub id, or `tiny`
    mode: Literal["scene", "keyframes"]
    # Which of Wan2.2 A14B's experts to train: high (transformer, timesteps above the
    # boundary), low (transformer_2, below), or both (each on its own range, one LoRA each).
    expert: Literal["high", "low", "both"] = "both"
    method: Literal["lora", "full"] = "lora"
    engine: Literal["ddp", "fsdp"] = "ddp"  # fsdp: parameters sharded (full fine-tune)
    # Context parallelism: each sample's tokens split over `cp` processes (of a launch of a
    # multiple of cp processes; the groups of cp are data-parallel). Ulysses only: ring
    # attention has no backward pass.
    cp: int = Field(1, ge=1, le=64)
    cp_mode: Literal["ulysses", "ring"] = "ulysses"
    lora: LoraSettings = Field(default_factory=LoraSettings)
    optimizer: VideoOptimizerSettings = Field(default_factory=VideoOptimizerSettings)
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    gradient_checkpointing: bool = True
    height: int = Field(480, ge=16)
    width: int = Field(832, ge=16)
    fps: float = Field(16.0, gt=0)  # frames are taken from the films at this rate
    shot_frames: int = Field(32, ge=1)  # frames of each shot in a training sample
    max_shots: int = Field(13, ge=2, le=64)  # samples with more shots are skipped
    sparse: bool = True  # scene mode: sparse inter-shot self-attention (HoloCine's sparse variant)
    summary_frames: int = Field(1, ge=1, le=16)  # keyframes mode: as the keyframe-scene backend's option
    shift: float = Field(5.0, gt=0)  # timesteps sampled on the flow schedule with this shift
    caption_tokens: int = Field(512, ge=8, le=512)
    steps: int = Field(10000, ge=1)
    batch_size: int = Field(1, ge=1)  # samples per optimizer step, over all processes
    checkpoint_every: int = Field(250, ge=1)
    validate_every: int = Field(0, ge=0)  # steps between validation clips (0: none)
    validation_steps: int = Field(20, ge=1)  # denoising steps of a validation clip
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _mode_defaults(cls, data):
        if isinstance(data, dict) and data.get("mode") in MODE_DEFAULTS:
            schedule, warmup, frames = MODE_DEFAULTS[data["mode"]]
            data.setdefault("shot_frames", frames)
            optimizer = data.get("optimizer")
            if optimizer is None or isinstance(optimizer, dict):
                optimizer = dict(optimizer or {})
                optimizer.setdefault("schedule", schedule)
                optimizer.setdefault("warmup_steps", warmup if optimizer["schedule"] == "warmup" else 0)
                data["optimizer"] = optimizer
        return data

    @model_validator(mode="after")
    def _check(self) -> "VideoTrainConfig":
        if self.height % 16 or self.width % 16:
            raise ValueError(f"height and width must be multiples of 16 (8x VAE, 2x2 patches), got {self.height}x{self.width}")
        if self.mode == "scene" and self.shot_frames % 4:
            raise ValueError(f"scene mode: shot_frames must be a multiple of 4 (HoloCine's cuts), got {self.shot_frames}")
        if self.mode == "keyframes" and (self.shot_frames < 5 or (self.shot_frames - 1) % 4):
            raise ValueError(f"keyframes mode: shot_frames must be 4k+1 (a Wan clip), at least 5, got {self.shot_frames}")
        if self.cp_mode == "ring":
            raise ValueError("cp_mode: ring runs inference only (its attention has no backward pass); "
                             "training splits samples with cp_mode: ulysses")
        if self.engine == "fsdp" and self.method != "full":
            raise ValueError("engine: fsdp shards full fine-tuning; a LoRA trains with engine: ddp")
        return self

    # What the shared loop reads (train/loop.py): one stage, the shots as its "context".
    @property
    def context(self) -> list[int]:
        return [self.max_shots]

    def stage(self, step: int) -> tuple[int, int]:
        if step >= self.steps:
            raise ValueError(f"step {step} is past the last step ({self.steps})")
        return 0, 0

    def lr_factor(self, step: int) -> float:
        warmup = self.optimizer.warmup_steps
        if self.optimizer.schedule == "constant" or not warmup:
            return 1.0
        return min(1.0, (step + 1) / warmup)


def resolve(base: str | None, config_file: Path | None, overrides: dict) -> VideoTrainConfig:
    from cinema_cli.train.config import resolve as resolve_any

    return resolve_any(base, config_file, overrides, VideoTrainConfig)
