"""The shot stage's protocol: one MP4 per shot, made from its keyframe."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from pydantic import BaseModel

from cinema_cli.project.schema import Framing, Move
from cinema_cli.registry import Registry

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


@dataclass(frozen=True)
class EncodeSettings:
    """How every shot is encoded; identical settings let assembly stream-copy."""

    crf: int = 18
    preset: str = "veryfast"


class ShotBackend(Protocol):
    name: ClassVar[str]
    version: ClassVar[str]
    Options: ClassVar[type[BaseModel]]
    # True when the backend reads `next_keyframe`; then shot k also depends on keyframe k+1.
    uses_next_keyframe: ClassVar[bool]

    def __init__(self, options: BaseModel) -> None: ...

    def render(
        self, request: ShotRequest, out: Path, encode: EncodeSettings, progress: StepProgress
    ) -> None:
        """Write the shot as H.264 yuv420p MP4 to `out` (a temporary path)."""
        ...


shot_backends: Registry[ShotBackend] = Registry("video", {"animatic": "cinema_cli.video.animatic"})
