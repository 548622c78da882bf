"""train.yaml: a training run's settings, validated like cinema.yaml.

The defaults are Captain Cinema's recipe (§3.2, Appendix A): LoRA on the transformer,
AdamW at a peak LR of 2e-4 with warmup and cosine decay, bf16 on CUDA, gradient clipping
1.0, 400x800 frames, context grown in stages of 1 → 8 → 16 → 32 pairs with a warmup at
the start of each stage. A file given with --config overrides the defaults, flags
override the file, and the resolved settings are written to RUN/config.yaml: a resumed
run reads them back from there, so it trains exactly what the first run started.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from cinema_cli.errors import BadInput, ProjectFileError
from cinema_cli.project.schema import Strict
from cinema_cli.project.yamlio import dump_yaml, load_model, load_yaml, validation_error

CONFIG_FILE = "config.yaml"


class LoraSettings(Strict):
    rank: int = Field(64, ge=1, le=1024)
    alpha: float = Field(64.0, gt=0)


class OptimizerSettings(Strict):
    lr: float = Field(2e-4, gt=0, le=1)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    warmup_steps: int = Field(100, ge=0)  # linear warmup at the start of every context stage
    min_lr_ratio: float = Field(0.0, ge=0, le=1)  # the cosine decays to lr * this


class ValidationSettings(Strict):
    """Every `every` steps, `sequences` held-out sequences of `pairs` keyframes (default:
    the largest context) are drawn jointly with the current weights (RUN/validation/)."""

    every: int = Field(..., ge=1)
    sequences: int = Field(1, ge=1, le=16)
    pairs: int | None = Field(None, ge=1, le=64)
    steps: int = Field(8, ge=1, le=100)  # denoising steps of each drawing


class TrainConfig(Strict):
    base: str = Field(..., min_length=1)  # a diffusers FLUX.2 klein folder or hub id, or `tiny`
    method: Literal["lora", "full"] = "lora"
    lora: LoraSettings = Field(default_factory=LoraSettings)
    optimizer: OptimizerSettings = Field(default_factory=OptimizerSettings)
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    gradient_checkpointing: bool = False
    height: int = Field(400, ge=16)
    width: int = Field(800, ge=16)
    # Pairs per training sequence (the target and its context), one entry per stage, and
    # the steps each stage trains for.
    context: list[int] = Field(default_factory=lambda: [1, 8, 16, 32], min_length=1)
    stage_steps: list[int] = Field(default_factory=lambda: [1000, 1000, 1000, 1000], min_length=1)
    batch_size: int = Field(8, ge=1)  # sequences per optimizer step, over all processes
    caption_tokens: int = Field(128, ge=8, le=512)
    goldenmem: bool = True  # context pairs at their GoldenMem sizes, as at inference
    max_stride: int = Field(4, ge=1, le=64)  # dynamic-stride sampling: strides 1..max_stride
    max_overlap: float = Field(0.25, ge=0, lt=1)  # shared keyframes between any two sequences
    checkpoint_every: int = Field(250, ge=1)
    seed: int = 0
    # Held-out keyframes drawn jointly every N steps; off unless set (it holds data out).
    validation: ValidationSettings | None = None

    @model_validator(mode="after")
    def _stages(self) -> "TrainConfig":
        if len(self.context) != len(self.stage_steps):
            raise ValueError(f"context has {len(self.context)} stages but stage_steps has {len(self.stage_steps)}")
        if any(c < 1 for c in self.context) or any(s < 1 for s in self.stage_steps):
            raise ValueError("every stage needs at least 1 pair and 1 step")
        if self.height % 16 or self.width % 16:
            raise ValueError(f"height and width must be multiples of 16 (8x VAE, 2x2 patches), got {self.height}x{self.width}")
        return self

    @property
    def steps(self) -> int:
        return sum(self.stage_steps)

    def stage(self, step: int) -> tuple[int, int]:
        """(stage index, first step of that stage) for a 0-based step."""
        start = 0
        for index, length in enumerate(self.stage_steps):
            if step < start + length:
                return index, start
            start += length
        raise ValueError(f"step {step} is past the last stage ({self.steps} steps)")


def resolve(base: str | None, config_file: Path | None, overrides: dict, model: type[Strict] = None) -> TrainConfig:
    """Defaults, then the file, then the flags that were given (None: not given). A bad
    field in the file is reported as file:line: field: message. `model`: the family's
    settings class (default: the keyframe family's TrainConfig)."""
    model = model or TrainConfig
    data, node = {}, None
    if config_file is not None:
        if not config_file.is_file():
            raise BadInput(f"{config_file}: no such training config")
        data, node = load_yaml(config_file)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ProjectFileError(config_file, [(1, "", f"expected a mapping of fields, found {type(data).__name__}")])
    if base is not None:
        data["base"] = base
    for key, value in overrides.items():
        if value is not None:
            section, _, field = key.partition(".")
            if field:
                data.setdefault(section, {})[field] = value
            else:
                data[key] = value
    if "base" not in data:
        raise BadInput("no base model: pass --base MODEL (a diffusers folder or hub id, or `tiny`)")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        if config_file is not None:
            raise validation_error(config_file, err, node) from None
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in err.errors())
        raise BadInput(f"training settings: {problems}") from None


def save(config: TrainConfig, run: Path) -> None:
    from cinema_cli.project.files import atomic_write_text

    atomic_write_text(run / CONFIG_FILE, dump_yaml(config.model_dump(mode="json")))


def load(run: Path, model: type[Strict] = None) -> TrainConfig:
    return load_model(run / CONFIG_FILE, model or TrainConfig)
