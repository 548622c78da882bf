"""Typed recipes: exactly the inputs that produce each kind of artifact, and one
comparison that says in words what changed between the recipe an artifact was made
with (as the manifest recorded it) and the one it would be made with now.

A recipe is recorded as a plain dict whose keys are its field names in words
("time_of_day" -> "time of day"); fields that are None are left out, so an input that
is not used (no music, no LoRA) does not make older artifacts stale. A field may bring
its own explanation of a change (`explain`), e.g. which shots of a film changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

Explain = Callable[[Any, Any], list[str]]


def _input(explain: Explain | None = None, *, compared: bool = True) -> Any:
    """A recipe field that may be absent (None). `compared=False`: recorded, but judged
    by its stage itself (a keyframe's context)."""
    return field(default=None, metadata={"explain": explain, "compared": compared})


def key_of(name: str) -> str:
    return name.replace("_", " ")


@dataclass
class Recipe:
    def to_dict(self) -> dict[str, Any]:
        return {key_of(f.name): getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def changes(self, old: dict[str, Any], ignore: Iterable[str] = ()) -> list[str]:
        """Human reasons why this recipe differs from `old`, one per changed input."""
        new, skip = self.to_dict(), set(ignore)
        reasons: list[str] = []
        by_key = {key_of(f.name): f for f in fields(self)}
        for key in [*new, *sorted(k for k in old if k not in new)]:
            spec = by_key.get(key)
            if key in skip or (spec is not None and not spec.metadata.get("compared", True)):
                continue
            before, after = old.get(key), new.get(key)
            if before == after:
                continue
            explain = spec.metadata.get("explain") if spec is not None else None
            explained = explain(before, after) if explain and before is not None and after is not None else []
            reasons.extend(explained or [f"{key} changed"])
        return reasons


# ---------------------------------------------------------------- explanations


def _script_changes(old: dict, new: dict) -> list[str]:
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return [f"script {', '.join(changed)} changed"]


def _shot_list_changes(old: list, new: list) -> list[str]:
    old_by_id = {row[0]: row for row in old}
    new_ids = [row[0] for row in new]
    reasons = [f"shot {row[0]} changed" for row in new if old_by_id.get(row[0]) not in (None, row)]
    reasons += [f"shot {i} added" for i in new_ids if i not in old_by_id]
    reasons += [f"shot {i} removed" for i in old_by_id if i not in new_ids]
    return reasons or ["shot order changed"]


def _scene_shot_changes(old: dict, new: dict) -> list[str]:
    """Why a shot rendered with its scene is stale: which other shot of the scene changed."""
    scene, before, after = new["scene"], old.get("shots", {}), new["shots"]
    reasons = [f"scene {scene}: shot {i} changed" for i in after if i in before and before[i] != after[i]]
    reasons += [f"scene {scene}: shot {i} added" for i in after if i not in before]
    reasons += [f"scene {scene}: shot {i} removed" for i in before if i not in after]
    return reasons or [f"scene {scene} changed"]


def _group_changes(old: list, new: list) -> list[str]:
    """Why a keyframe drawn with its group is stale: which member changed, came or went."""
    before, after = dict(map(tuple, old)), dict(map(tuple, new))
    reasons = [f"drawn with {i}, which changed" for i in after if i in before and before[i] != after[i]]
    reasons += [f"drawn with {i}, which joined the group" for i in after if i not in before]
    reasons += [f"drawn with {i}, which left the group" for i in before if i not in after]
    return reasons or ["the order of the keyframes drawn together changed"]


def _input_changes(old: dict, new: dict) -> list[str]:
    """Which declared input file (weights, LoRA, reference) changed."""
    reasons = [f"backend input {name} changed" for name in new if name in old and old[name] != new[name]]
    reasons += [f"backend input {name} added" for name in new if name not in old]
    reasons += [f"backend input {name} removed" for name in old if name not in new]
    return reasons


# ---------------------------------------------------------------- the recipes


@dataclass
class StoryRecipe(Recipe):
    script: dict = _input(_script_changes)
    shot_seconds: float | None = None
    seed: int | None = None
    backend: str | None = None
    backend_version: str | None = None
    backend_options: dict | None = None
    # Present when `cinema story --llm NAME` chose the backend for one run.
    backend_chosen_for_one_run: bool | None = None


# The story recipe's keys about who wrote it. A storyboard from a one-run
# `cinema story --llm NAME` is judged without them, so the configured backend being
# another one does not make it stale.
CHOSEN_FOR_ONE_RUN = key_of("backend_chosen_for_one_run")
STORY_BACKEND_KEYS = ("backend", "backend version", "backend options", CHOSEN_FOR_ONE_RUN)


@dataclass
class KeyframeRecipe(Recipe):
    caption: str | None = None
    characters: list | None = None
    camera: str | None = None
    seed: int | None = None
    scene: str | None = None
    location: str | None = None
    time_of_day: str | None = None
    cast: dict | None = None
    style: str | None = None
    resolution: str | None = None
    backend: str | None = None
    backend_version: str | None = None
    backend_options: dict | None = None
    # Content hashes of the files the backend reads (weights, LoRAs); None: it reads none.
    backend_inputs: dict | None = _input(_input_changes)
    memory: dict | None = None
    # What the memory chose, with the hashes of those frames; set when the keyframe is
    # drawn and judged frame by frame by the keyframe stage.
    context: list | None = _input(compared=False)
    # Drawn together with other keyframes (joint mode): [shot id, hash of its own recipe]
    # for every member in order, so a change to any of them makes all of them stale.
    group: list | None = _input(_group_changes)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        # No scene only in a storyboard the story stage will regenerate: recorded as null.
        data.setdefault("location", None)
        data.setdefault("time of day", None)
        return data


@dataclass
class ShotRecipe(Recipe):
    keyframe: str | None = None
    next_keyframe: str | None = None
    caption: str | None = None
    camera: str | None = None
    frames: int | None = None
    fps: int | None = None
    resolution: str | None = None
    seed: int | None = None
    encoding: dict | None = None
    backend: str | None = None
    backend_version: str | None = None
    backend_options: dict | None = None
    backend_inputs: dict | None = _input(_input_changes)
    # Denoised with its scene: the scene's prompt and the other shots' own recipes.
    scene_prompt: dict | None = None
    scene_shots: dict | None = _input(_scene_shot_changes)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data.setdefault("next keyframe", None)  # recorded as null: "this shot reads none"
        return data


@dataclass
class FilmRecipe(Recipe):
    shots: list = _input(_shot_list_changes)
    fps: int | None = None
    crossfade_frames: int | None = None
    encoding: dict | None = None
    assembler_version: str | None = None
    # Present only when used, so a film made without them stays current.
    subtitles: list | None = None
    music: dict | None = None
