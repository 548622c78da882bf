"""The shot stage's protocol: one MP4 per shot, made from its keyframe."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from cinema_cli.project.schema import Framing, Move, RuntimeSettings, Shot, Storyboard
from cinema_cli.registry import Registry

if TYPE_CHECKING:
    from cinema_cli.runtime.memory import SceneMemory

StepProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class ShotRequest:
    shot_id: str
    caption: str
    keyframe: Path
    # The next shot's keyframe when this shot flows into it ("continuous"), else None.
    next_keyframe: Path | None
    framing: Framing
    move: Move
    frames: int
    fps: int
    width: int
    height: int
    seed: int
    # How GPU models run (cinema.yaml `runtime:`); previz backends ignore it.
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)


@dataclass(frozen=True)
class SceneRequest:
    """The shots of one scene rendered together, and the scene-wide prompt parts."""

    scene_id: str
    location: str
    time_of_day: str
    description: str
    style: str
    cast: tuple[tuple[str, str], ...]  # (name, description) of everyone in the scene's shots
    shots: tuple[ShotRequest, ...]


@dataclass(frozen=True)
class RenderPlan:
    """What a render is about to ask of a backend, for its checks before anything is written."""

    width: int
    height: int
    fps: int
    # Frames of each render call: one entry per shot, or per group for a group backend.
    frames: tuple[int, ...]
    runtime: RuntimeSettings
    # How many shots should flow into the next one (the next shot is `continuous`).
    continuous: int = 0
    # The longest render call, for messages ("scene pier (s01-s04)").
    longest: str = "the longest shot"


@dataclass(frozen=True)
class EncodeSettings:
    """How every shot is encoded; identical settings let assembly stream-copy."""

    crf: int = 18
    preset: str = "veryfast"


class ShotBackend(Protocol):
    """Renders one shot. (A `GroupShotBackend` renders groups with `render_group` instead.)"""

    name: ClassVar[str]
    version: ClassVar[str]
    Options: ClassVar[type[BaseModel]]
    # True when the backend reads `next_keyframe`; then shot k also depends on keyframe k+1.
    # (May be set per instance, when it depends on the options.)
    uses_next_keyframe: ClassVar[bool]

    def __init__(self, options: BaseModel) -> None: ...

    def render(
        self, request: ShotRequest, out: Path, encode: EncodeSettings, progress: StepProgress
    ) -> None:
        """Write the shot as H.264 yuv420p MP4 to `out` (a temporary path)."""
        ...


# Optional hooks a backend may define; the pipeline uses them when present.


@runtime_checkable
class FrameSnapping(Protocol):
    def frames_for(self, requested: int) -> int:
        """The frame count it renders for `requested` (duration x fps), e.g. Wan's 4k+1.
        The pipeline's frame count of a shot is this, so status, film and probes agree."""
        ...


@runtime_checkable
class Preflight(Protocol):
    def preflight(self, plan: RenderPlan) -> list[str]:
        """Checks before a render writes anything (weights present, memory enough); raises
        a CinemaError to stop it, returns notices for the user."""
        ...


@runtime_checkable
class MemoryEstimating(Protocol):
    def scene_memory(self, plan: RenderPlan) -> SceneMemory | None:
        """What the longest render call asks of a GPU (runtime.memory), from the configs;
        None where there is no GPU estimate (the CPU, a tiny preset, weights not here yet)."""
        ...


@runtime_checkable
class GroupShotBackend(Protocol):
    """A backend that renders several shots at once (a scene, jointly)."""

    def groups(self, board: Storyboard, frames_of: Callable[[Shot], int]) -> list[list[str]]:
        """The shot ids rendered together, in storyboard order; every shot in exactly one.
        `frames_of` is each shot's frame count (for backends with a frame budget)."""
        ...

    def render_group(
        self, request: SceneRequest, outs: list[Path], encode: EncodeSettings, progress: StepProgress
    ) -> None:
        """Write each shot of the group to its path in `outs` (temporary paths)."""
        ...


shot_backends: Registry[ShotBackend] = Registry(
    "video",
    {"animatic": "cinema_cli.video.animatic", "wan": "cinema_cli.video.wan", "holocine": "cinema_cli.video.holocine",
     "keyframe-scene": "cinema_cli.video.scene", "scene": "cinema_cli.video.scene",
     "helios": "cinema_cli.video.helios"},
)
