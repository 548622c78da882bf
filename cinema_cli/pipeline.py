"""The stage graph: script -> storyboard -> keyframes -> shots -> film.

Every artifact has a *recipe*: exactly the inputs that produce it (shot fields, backend
and its settings, seed, and the hashes of the files it is made from). The manifest
remembers the recipe each artifact was built with; an artifact is stale when its recipe
differs, and a stage rebuilds only stale artifacts, in order, so a rebuilt keyframe
makes exactly its dependents stale. Evaluation walks the shots in storyboard order
because a keyframe may be conditioned on earlier keyframes (its context).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from cinema_cli.assemble.film import FilmClip, assemble_film
from cinema_cli.keyframes.base import CharacterLook, ContextFrame, KeyframeRequest, keyframe_backends
from cinema_cli.project.files import atomic_output, atomic_write_text
from cinema_cli.project.manifest import FileHasher, Manifest, Record, canonical_hash
from cinema_cli.project.project import Project
from cinema_cli.project.schema import Shot, Storyboard
from cinema_cli.project.yamlio import line_of, load_yaml, validation_error
from cinema_cli.runtime.backends import resolve_backend
from cinema_cli.story.base import storyboarders
from cinema_cli.video.base import EncodeSettings, ShotRequest, shot_backends

ASSEMBLER_VERSION = "1"

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


# ---------------------------------------------------------------- the pipeline


class Pipeline:
    def __init__(self, project: Project, reporter: Reporter | None = None):
        self.project = project
        self.reporter = reporter or SilentReporter()
        self.hasher = FileHasher()
        self.manifest = Manifest(project.state_dir / "manifest.json", project.tmp_dir)
        self.notices: list[str] = []
        # Validate everything the run will read before anything is written.
        self.config = project.config
        self.script = project.script
        self.story_backend = _instantiate(project, "story", storyboarders, self.config.story)
        self.keyframe_backend = self._backend("keyframes", keyframe_backends)
        self.shot_backend = self._backend("video", shot_backends)
        self.encode = EncodeSettings(crf=self.config.assemble.crf, preset=self.config.assemble.preset)

    def _backend(self, stage: str, registry: Any) -> Any:
        settings = getattr(self.config, stage)
        name, notice = resolve_backend(stage, settings.backend)
        if notice:
            self.notices.append(notice)
        return _instantiate(self.project, stage, registry, settings, name)

    @property
    def backend_names(self) -> dict[str, str]:
        return {
            "story": self.story_backend.name,
            "keyframes": self.keyframe_backend.name,
            "video": self.shot_backend.name,
        }

    # ------------------------------------------------------------ story

    def _story_recipe(self) -> dict:
        return {
            "script": self.script.model_dump(mode="json"),
            "shot seconds": self.config.shot_seconds,
            "seed": self.config.seed,
            "backend": self.story_backend.name,
            "backend version": self.story_backend.version,
            "backend options": self.story_backend.options.model_dump(mode="json"),
        }

    def story_state(self) -> ArtifactState:
        path = self.project.storyboard_path
        if not path.is_file():
            return ArtifactState(MISSING)
        record = self.manifest.get("story", "storyboard")
        if record is None:
            return ArtifactState(DONE, edited=True)  # written by hand: it is the source
        edited = self.hasher(path) != record.output
        reasons = _diff(record.recipe, self._story_recipe())
        return ArtifactState(STALE if reasons else DONE, reasons, edited)

    def write_story(self, *, force: bool) -> bool:
        """Generate storyboard.yaml if missing or stale. A hand-edited storyboard is the
        user's work: it is only replaced with `force`, and locked shots always survive."""
        state = self.story_state()
        if state.state == DONE and not force:
            return False
        if state.edited and not force:
            self.notices.append(
                "storyboard.yaml was edited by hand, so it was kept although "
                f"{', '.join(state.reasons) or 'the script changed'}; "
                "run `cinema story --force` to regenerate it (locked shots are kept)"
            )
            return False
        self.reporter.stage("story", 1)
        self.reporter.item("story", "storyboard", 0, 1)
        board = self.story_backend.storyboard(self.script, self.config)
        if self.project.has_storyboard() and state.state != MISSING:
            board = _keep_locked(self.project.storyboard, board)
        self.project.write_storyboard(board)
        self.manifest.put(
            "story", "storyboard",
            Record(self._story_recipe(), self.hasher(self.project.storyboard_path) or ""),
        )
        self.reporter.item_done("story", "storyboard")
        return True

    # ------------------------------------------------------------ keyframes

    def _keyframe_recipe(self, shot: Shot) -> dict:
        scene = self.script.scene(shot.scene)
        assert scene is not None  # checked when the storyboard was loaded
        cast = {}
        for name in shot.characters:
            character = self.script.character(name)
            refs = [self.hasher(p) for p in self.project.character_reference_paths(name)]
            cast[name] = {"description": character.description if character else "", "references": refs}
        backend = self.keyframe_backend
        return {
            "caption": shot.caption,
            "characters": shot.characters,
            "camera": shot.camera,
            "seed": shot.seed,
            "scene": shot.scene,
            "location": scene.location,
            "time of day": scene.time,
            "cast": cast,
            "style": self.script.style,
            "resolution": str(self.config.resolution),
            "backend": backend.name,
            "backend version": backend.version,
            "backend options": backend.options.model_dump(mode="json"),
        }

    def _keyframe_state(self, shot: Shot, states: dict[str, ArtifactState]) -> tuple[ArtifactState, list[dict]]:
        path = self.project.keyframe_path(shot.id)
        record = self.manifest.get("keyframes", shot.id)
        context = list(record.recipe.get("context", [])) if record else []
        state = self._evaluate(path, record, self._keyframe_recipe(shot), ignore=("context",))
        if state.state == DONE:
            for entry in context:
                upstream = states.get(entry["shot"])
                if upstream is None or upstream.state != DONE:
                    state.reasons.append(f"context keyframe {entry['shot']} is stale")
                elif self.hasher(self.project.keyframe_path(entry["shot"])) != entry["output"]:
                    state.reasons.append(f"context keyframe {entry['shot']} changed")
            if state.reasons:
                state.state = STALE
        public_context = [{k: v for k, v in e.items() if k != "output"} for e in context]
        return state, public_context

    def _build_keyframe(self, shot: Shot) -> None:
        scene = self.script.scene(shot.scene)
        assert scene is not None
        context: tuple[ContextFrame, ...] = ()  # the memory library fills this (retrieval)
        request = KeyframeRequest(
            shot_id=shot.id,
            scene_id=shot.scene,
            caption=shot.caption,
            characters=tuple(
                CharacterLook(
                    name,
                    (self.script.character(name).description if self.script.character(name) else ""),
                    self.project.character_reference_paths(name),
                )
                for name in shot.characters
            ),
            framing=shot.framing,
            move=shot.move,
            location=scene.location,
            time_of_day=scene.time,
            style=self.script.style,
            width=self.config.resolution.width,
            height=self.config.resolution.height,
            seed=shot.seed,
            context=context,
        )
        image = self.keyframe_backend.render(request, self.reporter.step)
        path = self.project.keyframe_path(shot.id)
        with atomic_output(path, self.project.tmp_dir) as temp:
            image.save(temp, format="PNG")
        recipe = self._keyframe_recipe(shot)
        recipe["context"] = [
            {"shot": c.shot, "score": c.score, "size": list(c.size), "tokens": c.tokens,
             "output": self.hasher(c.path)}
            for c in context
        ]
        output = self.hasher(path) or ""
        sidecar = {
            "shot": shot.id,
            "input_hash": canonical_hash(recipe),
            "backend": self.keyframe_backend.name,
            "backend_version": self.keyframe_backend.version,
            "seed": shot.seed,
            "size": [self.config.resolution.height, self.config.resolution.width],
            "context": [{k: v for k, v in e.items() if k != "output"} for e in recipe["context"]],
        }
        atomic_write_text(
            self.project.sidecar_path(shot.id), json.dumps(sidecar, indent=2) + "\n",
            self.project.tmp_dir,
        )
        self.manifest.put("keyframes", shot.id, Record(recipe, output))

    # ------------------------------------------------------------ shots

    def frames_of(self, shot: Shot) -> int:
        return max(1, round(shot.duration * self.config.fps))

    def _next_keyframe(self, board: Storyboard, shot: Shot) -> Path | None:
        """Shot k flows into keyframe k+1 when shot k+1 joins it `continuous`."""
        if not self.shot_backend.uses_next_keyframe:
            return None
        i = board.index(shot.id)
        if i + 1 < len(board.shots) and board.shots[i + 1].transition == "continuous":
            return self.project.keyframe_path(board.shots[i + 1].id)
        return None

    def _shot_recipe(self, board: Storyboard, shot: Shot) -> dict:
        backend = self.shot_backend
        next_key = self._next_keyframe(board, shot)
        return {
            "keyframe": self.hasher(self.project.keyframe_path(shot.id)),
            "next keyframe": self.hasher(next_key) if next_key else None,
            "caption": shot.caption,
            "camera": shot.camera,
            "frames": self.frames_of(shot),
            "fps": self.config.fps,
            "resolution": str(self.config.resolution),
            "seed": shot.seed,
            "encoding": asdict(self.encode),
            "backend": backend.name,
            "backend version": backend.version,
            "backend options": backend.options.model_dump(mode="json"),
        }

    def _shot_state(self, board: Storyboard, shot: Shot, keyframes: dict[str, ArtifactState]) -> ArtifactState:
        path = self.project.shot_path(shot.id)
        upstream = [shot.id]
        next_key = self._next_keyframe(board, shot)
        if next_key is not None:
            upstream.append(next_key.stem)
        pending = [k for k in upstream if keyframes[k].state != DONE]
        if pending:
            if not path.is_file():
                return ArtifactState(MISSING)
            return ArtifactState(STALE, [f"keyframe {k} is {keyframes[k].state}" for k in pending])
        return self._evaluate(path, self.manifest.get("shots", shot.id), self._shot_recipe(board, shot))

    def _build_shot(self, board: Storyboard, shot: Shot) -> None:
        path = self.project.shot_path(shot.id)
        request = ShotRequest(
            shot_id=shot.id,
            caption=shot.caption,
            keyframe=self.project.keyframe_path(shot.id),
            next_keyframe=self._next_keyframe(board, shot),
            framing=shot.framing,
            move=shot.move,
            frames=self.frames_of(shot),
            fps=self.config.fps,
            width=self.config.resolution.width,
            height=self.config.resolution.height,
            seed=shot.seed,
        )
        recipe = self._shot_recipe(board, shot)
        with atomic_output(path, self.project.tmp_dir) as temp:
            self.shot_backend.render(request, temp, self.encode, self.reporter.step)
        self.manifest.put("shots", shot.id, Record(recipe, self.hasher(path) or ""))

    # ------------------------------------------------------------ film

    @property
    def crossfade_frames(self) -> int:
        return max(1, round(self.config.assemble.crossfade_seconds * self.config.fps))

    def _film_recipe(self, board: Storyboard) -> dict:
        return {
            "shots": [
                [s.id, self.hasher(self.project.shot_path(s.id)), self.frames_of(s), s.transition]
                for s in board.shots
            ],
            "fps": self.config.fps,
            "crossfade frames": self.crossfade_frames,
            "encoding": asdict(self.encode),
            "assembler version": ASSEMBLER_VERSION,
        }

    def _film_state(self, board: Storyboard, shots: dict[str, ArtifactState]) -> ArtifactState:
        path = self.project.film_path
        pending = [k for k, s in shots.items() if s.state != DONE]
        if pending:
            if not path.is_file():
                return ArtifactState(MISSING)
            return ArtifactState(STALE, [f"shot {k} is {shots[k].state}" for k in pending])
        return self._evaluate(path, self.manifest.get("film", "film"), self._film_recipe(board))

    def _build_film(self, board: Storyboard) -> None:
        recipe = self._film_recipe(board)
        assemble_film(
            [FilmClip(self.project.shot_path(s.id), self.frames_of(s), s.transition) for s in board.shots],
            self.project.film_path,
            tmp_dir=self.project.tmp_dir,
            cache_dir=self.project.cache_dir / "segments",
            fps=self.config.fps,
            encode=self.encode,
            crossfade_frames=self.crossfade_frames,
        )
        self.manifest.put("film", "film", Record(recipe, self.hasher(self.project.film_path) or ""))

    # ------------------------------------------------------------ evaluation

    def _evaluate(self, path: Path, record: Record | None, recipe: dict, ignore: Iterable[str] = ()) -> ArtifactState:
        if not path.is_file():
            return ArtifactState(MISSING)
        if record is None:
            return ArtifactState(STALE, ["not recorded as complete (an interrupted run?)"])
        reasons = _diff(record.recipe, recipe, ignore=tuple(ignore))
        edited = not reasons and self.hasher(path) != record.output
        return ArtifactState(STALE if reasons else DONE, reasons, edited)

    def status(self) -> ProjectStatus:
        story = self.story_state()
        if story.state == MISSING:
            return ProjectStatus(story, [], ArtifactState(MISSING), self.backend_names, self.notices)
        board = self.project.storyboard
        keyframes: dict[str, ArtifactState] = {}
        contexts: dict[str, list[dict]] = {}
        for shot in board.shots:
            keyframes[shot.id], contexts[shot.id] = self._keyframe_state(shot, keyframes)
        shots = {s.id: self._shot_state(board, s, keyframes) for s in board.shots}
        film = self._film_state(board, shots)
        rows = [
            ShotStatus(s.id, s.scene, keyframes[s.id], shots[s.id], contexts[s.id]) for s in board.shots
        ]
        return ProjectStatus(story, rows, film, self.backend_names, self.notices)

    # ------------------------------------------------------------ running stages

    def run(self, *, until: str = "film", force: Iterable[str] = (), force_story: bool = False) -> RenderResult:
        """Rebuild whatever is stale up to `until` (story | keyframes | shots | film).
        `force` names shots whose keyframe and shot are redone regardless.
        The caller holds the project lock."""
        started = time.monotonic()
        rebuilt = Rebuilt()
        force = set(force)
        self.project.clear_tmp()
        rebuilt.story = self.write_story(force=force_story)
        board = self.project.storyboard
        unknown = force - {s.id for s in board.shots}
        if unknown:
            self.project.shot(sorted(unknown)[0])  # raises UnknownShot with the list
        if until != "story":
            keyframes = self._run_keyframes(board, force, rebuilt)
            if until != "keyframes":
                shots = self._run_shots(board, keyframes, force, rebuilt)
                if until == "film":
                    film = self._film_state(board, shots)
                    if film.state != DONE:
                        self.reporter.stage("film", 1)
                        self.reporter.item("film", "film.mp4", 0, 1)
                        self._build_film(board)
                        self.reporter.item_done("film", "film.mp4")
                        rebuilt.film = True
        return RenderResult(
            rebuilt, time.monotonic() - started, self.notices,
            self.project.film_path if self.project.film_path.is_file() else None,
        )

    def _run_keyframes(self, board: Storyboard, force: set[str], rebuilt: Rebuilt) -> dict[str, ArtifactState]:
        states: dict[str, ArtifactState] = {}
        todo = []
        for shot in board.shots:
            state, _ = self._keyframe_state(shot, states)
            states[shot.id] = state
            if state.state != DONE or shot.id in force:
                todo.append(shot.id)
        if todo:
            self.reporter.stage("keyframes", len(todo))
        done = 0
        states = {}
        for shot in board.shots:
            # Re-evaluate in order: a rebuilt keyframe makes only its dependents stale.
            state, _ = self._keyframe_state(shot, states)
            if state.state != DONE or shot.id in force:
                self.reporter.item("keyframes", shot.id, done, len(todo))
                self._build_keyframe(shot)
                self.reporter.item_done("keyframes", shot.id)
                rebuilt.keyframes.append(shot.id)
                done += 1
                state = ArtifactState(DONE)
            states[shot.id] = state
        return states

    def _run_shots(self, board: Storyboard, keyframes: dict[str, ArtifactState], force: set[str],
                   rebuilt: Rebuilt) -> dict[str, ArtifactState]:
        states = {s.id: self._shot_state(board, s, keyframes) for s in board.shots}
        todo = [s for s in board.shots if states[s.id].state != DONE or s.id in force]
        if todo:
            self.reporter.stage("shots", len(todo))
        for i, shot in enumerate(todo):
            self.reporter.item("shots", shot.id, i, len(todo))
            self._build_shot(board, shot)
            self.reporter.item_done("shots", shot.id)
            rebuilt.shots.append(shot.id)
            states[shot.id] = ArtifactState(DONE)
        return states


# ---------------------------------------------------------------- helpers


def _instantiate(project: Project, stage: str, registry: Any, settings: Any, name: str | None = None) -> Any:
    cls = registry.get(name or settings.backend)
    try:
        options = cls.Options.model_validate(settings.options)
    except ValidationError as err:
        _, node = load_yaml(project.config_path)
        prefixed = validation_error(project.config_path, err, None)
        problems = [
            (line_of(node, (stage, "options", *f.split("."))), f"{stage}.options.{f}", m)
            for _, f, m in prefixed.problems
        ]
        raise type(prefixed)(project.config_path, problems) from None
    return cls(options)


def _diff(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """Human reasons why `new` differs from `old`, one per changed input."""
    reasons = []
    for key in sorted(set(old) | set(new), key=lambda k: list(new).index(k) if k in new else 99):
        if key in ignore or old.get(key) == new.get(key):
            continue
        if key == "shots" and isinstance(old.get(key), list):
            reasons.extend(_diff_shot_list(old[key], new[key]))
        elif key == "script" and isinstance(old.get(key), dict):
            changed = [k for k in set(old[key]) | set(new[key]) if old[key].get(k) != new[key].get(k)]
            reasons.append(f"script {', '.join(sorted(changed))} changed")
        else:
            reasons.append(f"{key} changed")
    return reasons


def _diff_shot_list(old: list, new: list) -> list[str]:
    old_by_id = {row[0]: row for row in old}
    new_ids = [row[0] for row in new]
    reasons = [f"shot {row[0]} changed" for row in new if old_by_id.get(row[0]) not in (None, row)]
    reasons += [f"shot {i} added" for i in new_ids if i not in old_by_id]
    reasons += [f"shot {i} removed" for i in old_by_id if i not in new_ids]
    if not reasons:
        reasons.append("shot order changed")
    return reasons


def _keep_locked(old: Storyboard, new: Storyboard) -> Storyboard:
    """Shots marked `locked: true` survive regeneration unchanged, at their old place
    when the new storyboard has no shot of that id."""
    shots = list(new.shots)
    for index, shot in enumerate(old.shots):
        if not shot.locked:
            continue
        ids = [s.id for s in shots]
        if shot.id in ids:
            shots[ids.index(shot.id)] = shot
        else:
            shots.insert(min(index, len(shots)), shot)
    return Storyboard(shots=shots)


def options_model(model: type[BaseModel]) -> type[BaseModel]:  # pragma: no cover - typing aid
    return model
