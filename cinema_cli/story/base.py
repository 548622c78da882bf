"""The story stage's protocol: script.yaml -> storyboard.yaml."""

from __future__ import annotations

import hashlib
from typing import ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from cinema_cli.project.schema import CinemaConfig, Script, Shot, Storyboard
from cinema_cli.registry import Registry


class Storyboarder(Protocol):
    name: ClassVar[str]
    version: ClassVar[str]
    Options: ClassVar[type[BaseModel]]
    # Told to the user when this backend wrote the storyboard (None: nothing to say).
    notice: ClassVar[str | None]

    def __init__(self, options: BaseModel) -> None: ...

    def storyboard(self, script: Script, config: CinemaConfig) -> Storyboard: ...


@runtime_checkable
class ShotRewriter(Protocol):
    """A storyboarder that can also rewrite one shot from an instruction (the LLM ones)."""

    def rewrite_shot(self, script: Script, config: CinemaConfig, board: Storyboard,
                     shot_id: str, instruction: str) -> Shot: ...


def shot_seed(project_seed: int, shot_id: str) -> int:
    """A shot's seed, stable under inserting or reordering other shots."""
    digest = hashlib.sha256(f"{project_seed}:{shot_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


storyboarders: Registry[Storyboarder] = Registry("story", {
    "offline": "cinema_cli.story.offline",
    "gemini": "cinema_cli.story.gemini",
    "local": "cinema_cli.story.local",
})
