"""The keyframe stage's protocol: one image per shot, conditioned on earlier keyframes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from PIL import Image
from pydantic import BaseModel

from cinema_cli.project.schema import Framing, Move, RuntimeSettings, Storyboard
from cinema_cli.registry import Registry

# A keyframe PNG's text chunk naming the notes burned onto it (a caption strip, badges)
# that are not part of the picture: {"picture": [l, t, r, b], "fixed": [[l, t, r, b]...]}.
# Shot backends move only the picture and hold the rest still.
OVERLAY_KEY = "cinema:overlay"

# (steps done, steps total) for a progress bar inside one keyframe.
StepProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class CharacterLook:
    name: str
    description: str
    references: tuple[Path, ...] = ()


@dataclass(frozen=True)
class ContextFrame:
    """An earlier keyframe chosen as context (filled by the memory library)."""

    shot: str
    path: Path
    score: float
    size: tuple[int, int]  # (height, width) the frame is given to the model at
    tokens: int
    caption: str = ""  # the shot's caption, or the character's description for a reference


@dataclass(frozen=True)
class KeyframeRequest:
    shot_id: str
    scene_id: str
    caption: str
    characters: tuple[CharacterLook, ...]
    framing: Framing
    move: Move
    location: str
    time_of_day: str
    style: str
    width: int
    height: int
    seed: int
    context: tuple[ContextFrame, ...] = field(default_factory=tuple)
    # How GPU models run (cinema.yaml `runtime:`); previz backends ignore it.
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)


@dataclass(frozen=True)
class KeyframePlan:
    """What a plan is about to ask of a backend, for its checks before anything is written."""

    width: int
    height: int
    runtime: RuntimeSettings


class KeyframeBackend(Protocol):
    name: ClassVar[str]
    # Bump when a code change alters the images, so old keyframes become stale.
    version: ClassVar[str]
    Options: ClassVar[type[BaseModel]]

    def __init__(self, options: BaseModel) -> None: ...

    def render(self, request: KeyframeRequest, progress: StepProgress) -> Image.Image: ...

    # Optional: `reads_context(options) -> bool`, a classmethod, for a backend that may
    # draw nothing from `request.context` (see `reads_context` below).


def reads_context(cls: type, options: BaseModel) -> bool:
    """Whether keyframes of backend `cls` with `options` are drawn from the memory's
    context. When they are not, the keyframe stage plans no context: its requests carry
    none, its recipes hold no memory settings, and its keyframes wait for no other, so
    they can all be drawn at once. Known without building the backend (`status` builds
    none); a backend without the hook reads its context."""
    hook = getattr(cls, "reads_context", None)
    return True if hook is None else bool(hook(options))


@runtime_checkable
class KeyframePreflight(Protocol):
    """An optional hook: checks before a plan writes anything (weights present, memory
    enough); raises a CinemaError to stop it, returns notices for the user."""

    def preflight(self, plan: KeyframePlan) -> list[str]: ...


@runtime_checkable
class GroupKeyframeBackend(Protocol):
    """An optional hook: a backend that draws several keyframes at once (a scene, jointly).
    Its groups are one artifact group each: a change to one member redraws them all."""

    def groups(self, board: Storyboard) -> list[list[str]] | None:
        """The shot ids drawn together, in storyboard order, every shot in exactly one;
        None when it draws one keyframe at a time after its memory's context."""
        ...

    def render_group(self, requests: Sequence[KeyframeRequest], progress: StepProgress) -> list[Image.Image]:
        """One image per request, in order (the requests carry no context)."""
        ...


keyframe_backends: Registry[KeyframeBackend] = Registry(
    "keyframes", {"sketch": "cinema_cli.keyframes.sketch", "flux2": "cinema_cli.keyframes.flux2",
                  "interleaved": "cinema_cli.keyframes.interleaved"}
)
