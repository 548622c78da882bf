"""dataset.yaml: the settings of one dataset, validated like cinema.yaml.

`prepare` writes it on the first run; a person may edit it; flags override it for one
run (and the overridden settings are written back, so the file always says what the
dataset was built with). Each section feeds exactly one step's recipe, so changing a
threshold redoes that step and what follows it, nothing before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from cinema_cli.project.files import atomic_write_text
from cinema_cli.project.schema import Strict
from cinema_cli.project.yamlio import dump_yaml, load_model

CONFIG_FILE = "dataset.yaml"


class BoundarySettings(Strict):
    # auto: TransNetV2 where it runs on CUDA, PySceneDetect on a CPU (TransNetV2 runs there
    # at ~6x real time on 2 cores, below the 20x a dataset build needs; see boundaries.py).
    detector: Literal["auto", "transnetv2", "scenedetect"] = "auto"
    threshold: float = Field(0.5, gt=0, lt=1)  # TransNetV2's transition probability
    device: str = "auto"  # where TransNetV2 runs; not part of any recipe


class KeyframeSettings(Strict):
    aspect: float = Field(2.0, gt=0.2, le=5)  # width / height of the centre crop (Captain Cinema: 2:1)
    short_side: int = Field(400, ge=16, le=4096)  # the crop's short side after resizing
    border_luma: int = Field(24, ge=0, le=128)  # a row/column darker than this on every sampled frame is a bar
    border_frames: int = Field(5, ge=1, le=32)  # frames per shot the bars are judged on
    jpeg_quality: int = Field(92, ge=50, le=100)


class AestheticSettings(Strict):
    """The LAION aesthetic predictor on each keyframe's CLIP features (eval aesthetic's)."""

    weights: str = Field(min_length=1)  # a .pth/.safetensors file (relative: to the dataset folder) or ORG/REPO/FILE
    min_score: float  # keyframes scored below: aesthetic
    clip_model: str = Field("ViT-L-14", min_length=1)  # the CLIP the predictor was trained on
    clip_weights: str = Field("openai", min_length=1)  # an open_clip pretrained tag or a file


class FilterSettings(Strict):
    min_seconds: float = Field(1.0, ge=0)  # shorter shots: too_short
    dark_luma: float = Field(20.0, ge=0, le=255)  # mean luma below: too_dark
    flat_detail: float = Field(0.25, ge=0)  # mean luma gradient (256 px wide) below: flat (no texture)
    flat_contrast: float = Field(6.0, ge=0)  # luma standard deviation below: flat (one tone)
    duplicate_threshold: float = Field(0.92, gt=0, le=1)  # signature cosine at or above: near_duplicate
    subtitles: bool = True  # run the text detector: subtitles
    aesthetic: AestheticSettings | None = None  # given: score each keyframe, drop below min_score


class CaptionSettings(Strict):
    backend: Literal["gemini", "local", "sidecar", "none"] = "none"
    model: str = Field("gemini-2.5-flash", min_length=1)  # the Gemini model
    # local: a transformers image-text-to-text model folder (relative: to the dataset folder)
    local_model: str | None = None
    max_new_tokens: int = Field(512, ge=16, le=8192)  # of a local model's reply
    sidecar_dir: str | None = None  # default: beside each film, FILM.captions.yaml
    # How to reach the model does not change what it writes: out of the recipes.
    device: str = "auto"  # where a local model runs: CUDA in bf16 when present, else the CPU
    timeout: float = Field(120.0, gt=0, le=3600)
    retries: int = Field(4, ge=0, le=10)
    backoff: float = Field(2.0, gt=0, le=60)


class SampleSettings(Strict):
    targets: list[float] = Field(default_factory=lambda: [5.0, 15.0, 60.0], min_length=1)
    tolerance: float = Field(0.2, ge=0, lt=1)  # a sample may be this fraction off its target
    max_shots: int = Field(13, ge=1, le=64)

    @model_validator(mode="after")
    def _positive(self) -> "SampleSettings":
        if any(t <= 0 for t in self.targets):
            raise ValueError("every target duration must be above 0 seconds")
        return self


class ShardSettings(Strict):
    max_samples: int = Field(1000, ge=1, le=1_000_000)


class DatasetConfig(Strict):
    boundaries: BoundarySettings = Field(default_factory=BoundarySettings)
    keyframes: KeyframeSettings = Field(default_factory=KeyframeSettings)
    filters: FilterSettings = Field(default_factory=FilterSettings)
    captions: CaptionSettings = Field(default_factory=CaptionSettings)
    samples: SampleSettings = Field(default_factory=SampleSettings)
    shards: ShardSettings = Field(default_factory=ShardSettings)


def load_config(root: Path) -> DatasetConfig:
    path = root / CONFIG_FILE
    return load_model(path, DatasetConfig) if path.is_file() else DatasetConfig()


# Settings that say how to run, not what to make: they are in no recipe.
NOT_IN_RECIPES = {"boundaries": {"device"}, "captions": {"device", "timeout", "retries", "backoff"}}


def recipe(config: DatasetConfig, section: str) -> dict:
    """The part of one section that decides what its step writes."""
    return getattr(config, section).model_dump(mode="json", exclude=NOT_IN_RECIPES.get(section, set()))


def with_overrides(config: DatasetConfig, overrides: dict[str, dict]) -> DatasetConfig:
    """`config` with {section: {field: value}} applied (None: not given), validated."""
    data = config.model_dump(mode="json")
    for section, fields in overrides.items():
        data[section].update({k: v for k, v in fields.items() if v is not None})
    return DatasetConfig.model_validate(data)


def save_config(root: Path, config: DatasetConfig, tmp_dir: Path) -> None:
    atomic_write_text(root / CONFIG_FILE, dump_yaml(config.model_dump(mode="json")), tmp_dir)
