"""The three project files as pydantic models: cinema.yaml, script.yaml, storyboard.yaml.

These shapes are a public contract: people edit them by hand and later stages (LLM
storyboarding) produce exactly the storyboard shape. Unknown fields are refused so a
typo never silently does nothing.
"""

from __future__ import annotations

import math
import re
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Ids name files (keyframes/<id>.png), so they are restricted to a safe alphabet.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
CHARACTER_TAG = re.compile(r"<([^<>]+)>")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---------------------------------------------------------------- cinema.yaml


class Resolution(Strict):
    """Frame size in pixels. The default is the paper's 1:2 frame (512 high, 1024 wide)."""

    width: int = Field(1024, ge=64, le=8192, multiple_of=16)
    height: int = Field(512, ge=64, le=8192, multiple_of=16)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        # "1024x512" is accepted too, WIDTHxHEIGHT as ffmpeg writes it.
        if isinstance(value, str):
            match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", value)
            if not match:
                raise ValueError("expected WIDTHxHEIGHT, e.g. 1024x512, or {width, height}")
            return {"width": int(match[1]), "height": int(match[2])}
        return value

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


class StageSettings(Strict):
    """One stage's backend and that backend's own options (validated by the backend)."""

    backend: str = "auto"
    options: dict[str, Any] = Field(default_factory=dict)


class StorySettings(Strict):
    backend: str = "offline"
    options: dict[str, Any] = Field(default_factory=dict)


class AssembleSettings(Strict):
    crossfade_seconds: float = Field(0.5, gt=0, le=5)
    crf: int = Field(18, ge=0, le=51)
    preset: Literal[
        "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower"
    ] = "veryfast"
    # Finishing; `cinema assemble --subtitles/--music/...` override these for one run.
    subtitles: bool = False  # write film.srt from the shots' dialogue and mux it as a track
    music: str | None = None  # a music bed, a path inside the project
    music_loudness: float = Field(-16.0, ge=-70, le=-5)  # target integrated loudness, LUFS
    music_fade_seconds: float = Field(2.0, ge=0, le=30)


class ContextParallelSettings(Strict):
    """One scene's transformer passes split over `degree` processes (GPUs), launched by
    torchrun: Ulysses exchanges attention heads (the heads must divide by the degree),
    ring passes K/V slices around (any head count, less memory, inference only)."""

    degree: int = Field(1, ge=1, le=64)
    mode: Literal["ulysses", "ring"] = "ulysses"


class RuntimeSettings(Strict):
    """How GPU models run (a runtime profile); cinema_cli/runtime resolves and applies it."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: bfloat16 on CUDA, float32 on the CPU.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # Where weights wait while not computing: none (all on the GPU), model (one component on
    # the GPU at a time), group (blocks streamed in), sequential (leaf by leaf; least memory).
    offload: Literal["none", "model", "group", "sequential"] = "none"
    vae_tiling: bool = False
    # Weight quantization with bitsandbytes (CUDA): int8 or 4-bit nf4.
    quantize: Literal["none", "int8", "nf4"] = "none"
    # torch.compile of the repeated transformer blocks (regional compilation).
    compile: bool = False
    # Context parallelism for long scenes (`cinema render --cp N` sets it for one run).
    cp: ContextParallelSettings = Field(default_factory=ContextParallelSettings)


class MemorySettings(Strict):
    """Which earlier keyframes condition a new one (retrieval), and at what size (GoldenMem)."""

    # auto: lexical (no weights) unless weights (or an hf-hub: model) are configured.
    embedder: Literal["auto", "lexical", "clip", "text"] = "auto"
    model: str = Field("ViT-B-32", min_length=1)  # an open_clip model name, or hf-hub:ORG/REPO
    # An open_clip pretrained tag, a local file, a local transformers folder (text), or
    # `random` (random weights: tests the plumbing, retrieves nothing meaningful).
    weights: str | None = None
    max_context: int = Field(8, ge=0, le=64)
    token_budget: int | None = Field(None, ge=1)  # target + context tokens
    group_size: int = Field(1, ge=1, le=16)  # frames sharing one GoldenMem scale
    scale_order: Literal["relevance", "recency"] = "relevance"  # who gets the larger sizes
    vae_factor: int = Field(8, ge=1, le=64)  # pixels per latent unit
    patch: int = Field(2, ge=1, le=16)  # latent units per token side
    min_side: int = Field(4, ge=1, le=1024)  # latent units; a smaller context frame is dropped
    duplicate_threshold: float = Field(0.95, gt=0, le=1)  # picture correlation above = duplicate
    references: bool = True  # the cast's reference images are candidates too


class CinemaConfig(Strict):
    resolution: Resolution = Field(default_factory=Resolution)
    fps: int = Field(24, ge=1, le=120)
    shot_seconds: float = Field(3.0, gt=0, le=120)
    seed: int = Field(0, ge=0, lt=2**32)
    story: StorySettings = Field(default_factory=StorySettings)
    keyframes: StageSettings = Field(default_factory=StageSettings)
    video: StageSettings = Field(default_factory=StageSettings)
    assemble: AssembleSettings = Field(default_factory=AssembleSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)


# ---------------------------------------------------------------- camera


class Framing(str, Enum):
    extreme_wide = "extreme-wide"
    wide = "wide"
    medium = "medium"
    close_up = "close-up"
    extreme_close_up = "extreme-close-up"


class Move(str, Enum):
    static = "static"
    push_in = "push-in"
    pull_out = "pull-out"
    pan_left = "pan-left"
    pan_right = "pan-right"
    tilt_up = "tilt-up"
    tilt_down = "tilt-down"


_FRAMING_ALIASES = {
    "ews": "extreme-wide", "establishing": "extreme-wide", "extreme-wide": "extreme-wide",
    "ws": "wide", "wide": "wide", "long": "wide",
    "ms": "medium", "medium": "medium", "mid": "medium",
    "cu": "close-up", "close": "close-up", "close-up": "close-up", "closeup": "close-up",
    "ecu": "extreme-close-up", "extreme-close-up": "extreme-close-up",
}
_MOVE_ALIASES = {
    "static": "static", "locked": "static", "still": "static",
    "push-in": "push-in", "push": "push-in", "dolly-in": "push-in", "zoom-in": "push-in",
    "pull-out": "pull-out", "pull": "pull-out", "dolly-out": "pull-out", "zoom-out": "pull-out",
    "pan-left": "pan-left", "pan": "pan-right", "pan-right": "pan-right",
    "tilt-up": "tilt-up", "tilt": "tilt-up", "tilt-down": "tilt-down",
}


def parse_camera(text: str) -> tuple[Framing, Move]:
    """Parse a camera directive like "close-up, push-in" into (framing, move).

    Words may be separated by commas or spaces; "extreme wide" and "close up" are
    accepted. A missing framing means medium, a missing move means static.
    """
    words = [w for w in re.split(r"[,\s]+", text.strip().lower()) if w]
    framing: str | None = None
    move: str | None = None
    i = 0
    while i < len(words):
        # Greedily join two words ("close up", "push in", "extreme close up").
        for span in (3, 2, 1):
            phrase = "-".join(words[i : i + span])
            if phrase in _FRAMING_ALIASES and framing is None and len(words[i:i + span]) == span:
                framing, i = _FRAMING_ALIASES[phrase], i + span
                break
            if phrase in _MOVE_ALIASES and move is None and len(words[i:i + span]) == span:
                move, i = _MOVE_ALIASES[phrase], i + span
                break
        else:
            raise ValueError(
                f"unknown camera word {words[i]!r}; framing is one of "
                f"{', '.join(f.value for f in Framing)} and move one of "
                f"{', '.join(m.value for m in Move)}"
            )
    return Framing(framing or "medium"), Move(move or "static")


def format_camera(framing: Framing, move: Move) -> str:
    return f"{framing.value}, {move.value}"


# ---------------------------------------------------------------- script.yaml


class Character(Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[^<>\n]+$")
    description: str = ""
    references: list[str] = Field(default_factory=list)


class Beat(Strict):
    """One story beat; the offline storyboarder makes one shot of it."""

    text: str = Field(min_length=1)
    camera: str | None = None
    duration: float | None = Field(None, gt=0, le=120)
    transition: Literal["cut", "crossfade", "continuous"] | None = None
    dialogue: str | None = None

    @field_validator("camera")
    @classmethod
    def _camera(cls, value: str | None) -> str | None:
        return None if value is None else format_camera(*parse_camera(value))

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"text": value} if isinstance(value, str) else value


class Scene(Strict):
    id: str = Field(pattern=ID_PATTERN)
    location: str = Field(min_length=1)
    time: str = "day"
    description: str = ""
    transition: Literal["cut", "crossfade", "continuous"] = "cut"
    beats: list[Beat] = Field(min_length=1)


class Script(Strict):
    title: str = Field(min_length=1)
    logline: str = ""
    style: str = ""
    characters: list[Character] = Field(default_factory=list)
    scenes: list[Scene] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> "Script":
        _no_duplicates([c.name for c in self.characters], "characters", "name")
        _no_duplicates([s.id for s in self.scenes], "scenes", "id")
        return self

    def character(self, name: str) -> Character | None:
        return next((c for c in self.characters if c.name == name), None)

    def scene(self, scene_id: str) -> Scene | None:
        return next((s for s in self.scenes if s.id == scene_id), None)


# ---------------------------------------------------------------- storyboard.yaml

Transition = Literal["cut", "crossfade", "continuous"]


class Shot(Strict):
    """One shot. `transition` is how this shot is joined to the one before it."""

    id: str = Field(pattern=ID_PATTERN)
    scene: str = Field(pattern=ID_PATTERN)
    caption: str = Field(min_length=1)
    characters: list[str] = Field(default_factory=list)
    camera: str = "medium, static"
    duration: float = Field(3.0, gt=0, le=120)
    transition: Transition = "cut"
    seed: int = Field(0, ge=0, lt=2**32)
    dialogue: str | None = None
    locked: bool = False
    # Made by `cinema direct`: part of a film generated forward in time, so `cinema story`
    # never replaces it, and a later shot never reaches back into it.
    directed: bool = False

    @field_validator("camera")
    @classmethod
    def _camera(cls, value: str) -> str:
        return format_camera(*parse_camera(value))

    @field_validator("caption")
    @classmethod
    def _caption(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("caption is empty")
        return value.strip()

    @model_validator(mode="after")
    def _tags_are_listed(self) -> "Shot":
        missing = [t for t in caption_tags(self.caption) if t not in self.characters]
        if missing:
            raise ValueError(
                f"caption tags {', '.join(f'<{m}>' for m in missing)} are not in "
                f"characters {self.characters}"
            )
        return self

    @property
    def framing(self) -> Framing:
        return parse_camera(self.camera)[0]

    @property
    def move(self) -> Move:
        return parse_camera(self.camera)[1]


class Storyboard(Strict):
    shots: list[Shot] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> "Storyboard":
        _no_duplicates([s.id for s in self.shots], "shots", "id")
        return self

    def shot(self, shot_id: str) -> Shot | None:
        return next((s for s in self.shots if s.id == shot_id), None)

    def index(self, shot_id: str) -> int:
        return next(i for i, s in enumerate(self.shots) if s.id == shot_id)


def caption_tags(caption: str) -> list[str]:
    """Character names tagged as <Name> in a caption, in order, without repeats."""
    seen: list[str] = []
    for name in CHARACTER_TAG.findall(caption):
        if name not in seen:
            seen.append(name)
    return seen


def plain_text(caption: str) -> str:
    """A caption as a model or a reader should see it: <Mara> becomes Mara."""
    return CHARACTER_TAG.sub(r"\1", caption)


def _no_duplicates(values: list[str], where: str, field: str) -> None:
    dupes = sorted({v for v in values if values.count(v) > 1})
    if dupes:
        raise ValueError(f"duplicate {where} {field}: {', '.join(dupes)}")


def check_storyboard_against_script(board: Storyboard, script: Script) -> list[tuple[str, str]]:
    """Cross-file checks: (field path, message) for each shot that names an unknown
    scene or character."""
    problems = []
    names = {c.name for c in script.characters}
    scenes = {s.id for s in script.scenes}
    for i, shot in enumerate(board.shots):
        if shot.scene not in scenes:
            problems.append(
                (f"shots.{i}.scene", f"shot {shot.id}: scene {shot.scene!r} is not in script.yaml "
                 f"(scenes: {', '.join(sorted(scenes))})")
            )
        for j, name in enumerate(shot.characters):
            if name not in names:
                problems.append(
                    (f"shots.{i}.characters.{j}", f"shot {shot.id}: character {name!r} is not in script.yaml "
                     f"(cast: {', '.join(sorted(names)) or 'none'})")
                )
    return problems


# A shot before the last must have at least this many frames: H.264 shots of 1 or 2
# frames carry no B-frames, so their timestamps start earlier than the others' and
# the film's stream-copy join fails ("Non-monotonic DTS").
MIN_JOINED_FRAMES = 3


def check_storyboard_against_config(board: Storyboard, config: CinemaConfig) -> list[tuple[str, str]]:
    """(field path, message) for each shot but the last that is too short at the fps."""
    problems = []
    shortest = MIN_JOINED_FRAMES / config.fps
    for i, shot in enumerate(board.shots[:-1]):
        frames = max(1, round(shot.duration * config.fps))
        if frames < MIN_JOINED_FRAMES:
            problems.append((f"shots.{i}.duration", f"shot {shot.id}: {shot.duration:g} s is {frames} frame(s) at "
                             f"{config.fps} fps; every shot but the last needs at least {MIN_JOINED_FRAMES} frames "
                             f"(duration >= {math.ceil(shortest * 1000) / 1000:g} s)"))
    return problems
