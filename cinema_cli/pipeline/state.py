"""What the stage graph reports: artifact states, the status of a project, what a run
rebuilt, and progress reporting."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cinema_cli.pipeline.damage import damage

if TYPE_CHECKING:
    from cinema_cli.pipeline.recipes import Recipe
    from cinema_cli.project.manifest import Record

DONE, STALE, MISSING = "done", "stale", "missing"


# ---------------------------------------------------------------- reporting


class Reporter(Protocol):
    """Where the pipeline tells what it is doing; the CLI draws bars or plain lines."""

    def stage(self, name: str, total: int) -> None: ...
    def item(self, stage: str, key: str, index: int, total: int) -> None: ...
    def step(self, done: int, total: int) -> None: ...
    def item_done(self, stage: str, key: str) -> None: ...
    def notice(self, message: str) -> None: ...


class SilentReporter:
    def stage(self, name: str, total: int) -> None:
        pass

    def item(self, stage: str, key: str, index: int, total: int) -> None:
        pass

    def step(self, done: int, total: int) -> None:
        pass

    def item_done(self, stage: str, key: str) -> None:
        pass

    def notice(self, message: str) -> None:
        pass


# ---------------------------------------------------------------- results


@dataclass
class ArtifactState:
    state: str
    reasons: list[str] = field(default_factory=list)
    edited: bool = False  # the file differs from what cinema wrote: a hand edit, kept


@dataclass
class ShotStatus:
    id: str
    scene: str
    keyframe: ArtifactState
    shot: ArtifactState
    context: list[dict]


@dataclass
class ProjectStatus:
    story: ArtifactState
    shots: list[ShotStatus]
    film: ArtifactState
    backends: dict[str, str]
    notices: list[str]

    def to_json(self) -> dict:
        return {
            "story": self.story.state,
            "story_stale_because": self.story.reasons,
            "story_edited": self.story.edited,
            "backends": self.backends,
            "shots": [
                {
                    "id": s.id,
                    "scene": s.scene,
                    "keyframe": s.keyframe.state,
                    "shot": s.shot.state,
                    "stale_because": s.keyframe.reasons + s.shot.reasons,
                    "edited": [n for n, a in (("keyframe", s.keyframe), ("shot", s.shot)) if a.edited],
                    "context": s.context,
                }
                for s in self.shots
            ],
            "film": self.film.state,
            "film_stale_because": self.film.reasons,
            "notices": self.notices,
        }


@dataclass
class Rebuilt:
    story: bool = False
    keyframes: list[str] = field(default_factory=list)
    shots: list[str] = field(default_factory=list)
    film: bool = False


@dataclass
class RenderResult:
    rebuilt: Rebuilt
    seconds: float
    notices: list[str]
    film: Path | None


def evaluate(hasher: Callable[[Path], str | None], path: Path, record: Record | None, recipe: Recipe,
             ignore: Iterable[str] = ()) -> ArtifactState:
    """An artifact's state: missing, stale (and why: its recipe changed), or done; done
    but `edited` when the file is not the one cinema wrote."""
    if not path.is_file():
        return ArtifactState(MISSING)
    if record is None:
        return ArtifactState(STALE, ["not recorded as complete (an interrupted run?)"])
    reasons = recipe.changes(record.recipe, ignore)
    edited = not reasons and hasher(path) != record.output
    if edited and (problem := damage(path)):
        # A hand edit is kept; a file that no longer decodes is damaged: redone.
        return ArtifactState(STALE, [f"{path.name} {problem}: damaged, it is redone"])
    return ArtifactState(STALE if reasons else DONE, reasons, edited)
