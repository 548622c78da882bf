"""The story stage's protocol: script.yaml -> storyboard.yaml."""

from __future__ import annotations

import hashlib
from typing import ClassVar, Protocol

from pydantic import BaseModel

from cinema_cli.project.schema import CinemaConfig, Script, Storyboard
from cinema_cli.registry import Registry


class Storyboarder(Protocol):
    name: ClassVar[str]
    version: ClassVar[str]
    Options: ClassVar[type[BaseModel]]

    def __init__(self, options: BaseModel) -> None: ...

    def storyboard(self, script: Script, config: CinemaConfig) -> Storyboard: ...


def shot_seed(project_seed: int, shot_id: str) -> int:
    """A shot's seed, stable under inserting or reordering other shots."""
    digest = hashlib.sha256(f"{project_seed}:{shot_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


storyboarders: Registry[Storyboarder] = Registry("story", {"offline": "cinema_cli.story.offline"})
