"""What the stage graph reports: artifact states, the status of a project, what a run
rebuilt, progress reporting, and why a recipe changed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

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


def recipe_changes(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """Human reasons why `new` differs from `old`, one per changed input."""
    reasons = []
    for key in sorted(set(old) | set(new), key=lambda k: list(new).index(k) if k in new else 99):
        if key in ignore or old.get(key) == new.get(key):
            continue
        if key == "shots" and isinstance(old.get(key), list):
            reasons.extend(_shot_list_changes(old[key], new[key]))
        elif key == "scene shots" and isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
            reasons.extend(_scene_shot_changes(old[key], new[key]))
        elif key == "script" and isinstance(old.get(key), dict):
            changed = [k for k in set(old[key]) | set(new[key]) if old[key].get(k) != new[key].get(k)]
            reasons.append(f"script {', '.join(sorted(changed))} changed")
        else:
            reasons.append(f"{key} changed")
    return reasons


def _scene_shot_changes(old: dict, new: dict) -> list[str]:
    """Why a shot rendered with its scene is stale: which other shot of the scene changed."""
    scene, before, after = new["scene"], old["shots"], new["shots"]
    reasons = [f"scene {scene}: shot {i} changed" for i in after if i in before and before[i] != after[i]]
    reasons += [f"scene {scene}: shot {i} added" for i in after if i not in before]
    reasons += [f"scene {scene}: shot {i} removed" for i in before if i not in after]
    return reasons or [f"scene {scene} changed"]


def _shot_list_changes(old: list, new: list) -> list[str]:
    old_by_id = {row[0]: row for row in old}
    new_ids = [row[0] for row in new]
    reasons = [f"shot {row[0]} changed" for row in new if old_by_id.get(row[0]) not in (None, row)]
    reasons += [f"shot {i} added" for i in new_ids if i not in old_by_id]
    reasons += [f"shot {i} removed" for i in old_by_id if i not in new_ids]
    if not reasons:
        reasons.append("shot order changed")
    return reasons
