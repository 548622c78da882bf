"""The stage graph: script -> storyboard -> keyframes -> shots -> film.

Every artifact has a *recipe*: exactly the inputs that produce it (shot fields, backend
and its settings, seed, and the hashes of the files it is made from). The manifest
remembers the recipe each artifact was built with; an artifact is stale when its recipe
differs, and a stage rebuilds only stale artifacts, in order, so a rebuilt keyframe
makes exactly its dependents stale. Evaluation walks the shots in storyboard order
because a keyframe may be conditioned on earlier keyframes (its context).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from cinema_cli.assemble.film import FilmClip, assemble_film
from cinema_cli.assemble.finish import finish_film
from cinema_cli.assemble.music import MusicBed
from cinema_cli.assemble.probe import probe_audio
from cinema_cli.assemble.subtitles import Cue, dialogue_cues, srt_text
from cinema_cli.assemble.timeline import Timeline, film_timeline
from cinema_cli.errors import BadInput, CinemaError, ProjectFileError
from cinema_cli.keyframes.base import (
    CharacterLook,
    ContextFrame,
    KeyframePlan,
    KeyframePreflight,
    KeyframeRequest,
    keyframe_backends,
)
from cinema_cli.memory.planner import MemoryPlanner
from cinema_cli.project.files import atomic_output, atomic_write_text, inside, temp_path_for
from cinema_cli.project.manifest import FileHasher, Manifest, Record, canonical_hash
from cinema_cli.project.project import Project
from cinema_cli.project.schema import AssembleSettings, Shot, Storyboard, StorySettings
from cinema_cli.project.yamlio import line_of, load_yaml, validation_error
from cinema_cli.runtime.backends import resolve_backend
from cinema_cli.story.base import ShotRewriter, storyboarders
from cinema_cli.video.base import (
    EncodeSettings,
    FrameSnapping,
    GroupShotBackend,
    Preflight,
    RenderPlan,
    SceneRequest,
    ShotRequest,
    shot_backends,
)

ASSEMBLER_VERSION = "1"

DONE, STALE, MISSING = "done", "stale", "missing"

# The story recipe's keys about who wrote it. A storyboard from a one-run
# `cinema story --llm NAME` is judged without them, so the configured backend being
# another one does not make it stale.
CHOSEN_FOR_ONE_RUN = "backend chosen for one run"
STORY_BACKEND_KEYS = ("backend", "backend version", "backend options", CHOSEN_FOR_ONE_RUN)


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
    def __init__(self, project: Project, reporter: Reporter | None = None, story_backend: str | None = None,
                 assemble_overrides: dict[str, Any] | None = None):
        """`assemble_overrides`: `assemble:` settings of cinema.yaml replaced for this run
        only (`cinema assemble --subtitles/--music...`), by field name."""
        self.project = project
        self.reporter = reporter or SilentReporter()
        self.hasher = FileHasher()
        self.manifest = Manifest(project.state_dir / "manifest.json", project.tmp_dir)
        self.notices: list[str] = []
        # Validate everything the run will read before anything is written.
        self.config = project.config
        if assemble_overrides:
            self.config = self.config.model_copy(
                update={"assemble": _override(self.config.assemble, assemble_overrides)}
            )
        self.music = self._music_bed(from_flag="music" in (assemble_overrides or {}))
        self.script = project.script
        story = self.config.story
        if story_backend is not None and story_backend != story.backend:
            # story.options belong to the configured backend; one chosen for this run
            # (`cinema story --llm NAME`) runs with its own defaults.
            story = StorySettings(backend=story_backend)
        self.story_chosen = story is not self.config.story
        self.story_backend = _instantiate(project, "story", storyboarders, story)
        self.keyframe_backend = self._backend("keyframes", keyframe_backends)
        self.memory = MemoryPlanner(project, self.config.memory, self.hasher)
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
        recipe = {
            "script": self.script.model_dump(mode="json"),
            "shot seconds": self.config.shot_seconds,
            "seed": self.config.seed,
            "backend": self.story_backend.name,
            "backend version": self.story_backend.version,
            "backend options": self.story_backend.options.model_dump(mode="json"),
        }
        if self.story_chosen:
            recipe[CHOSEN_FOR_ONE_RUN] = True
        return recipe

    def _chosen_before(self, record: Record | None) -> str | None:
        """The backend of an earlier `cinema story --llm NAME` that this run does not repeat."""
        if record is None or not record.recipe.get(CHOSEN_FOR_ONE_RUN) or self.story_chosen:
            return None
        return record.recipe["backend"]

    def check_storyboard(self, *, force_story: bool = False) -> Storyboard | None:
        """Validate storyboard.yaml before anything is written: against script.yaml when it
        will be used as it is, by its own schema alone when the story stage is about to
        regenerate it (then it may still name a scene the new script dropped)."""
        if not self.project.has_storyboard():
            return None
        if self._story_regenerates(force_story):
            return self.project.storyboard_unchecked
        return self.project.storyboard

    def _story_regenerates(self, force: bool) -> bool:
        state = self.story_state()
        if state.state == MISSING:
            return True
        if force:
            return True
        chosen = self._chosen_before(self.manifest.get("story", "storyboard"))
        return state.state == STALE and not state.edited and not chosen

    def story_state(self) -> ArtifactState:
        path = self.project.storyboard_path
        if not path.is_file():
            return ArtifactState(MISSING)
        record = self.manifest.get("story", "storyboard")
        if record is None:
            return ArtifactState(DONE, edited=True)  # written by hand: it is the source
        edited = self.hasher(path) != record.output
        ignore = STORY_BACKEND_KEYS if self._chosen_before(record) else ()
        reasons = _diff(record.recipe, self._story_recipe(), ignore=ignore)
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
        chosen = self._chosen_before(self.manifest.get("story", "storyboard"))
        if chosen and not force:
            self.notices.append(
                f"storyboard.yaml was written by `cinema story --llm {chosen}`, so it was kept although "
                f"{', '.join(state.reasons)}; run `cinema story --llm {chosen}` to regenerate it "
                f"(or `cinema story --force` for the configured {self.story_backend.name})"
            )
            return False
        # The old storyboard is read (and validated) before an LLM is asked for a new one;
        # against its own schema only, since the script it was made from has changed.
        old = self.project.storyboard_unchecked if state.state != MISSING else None
        self.reporter.stage("story", 1)
        self.reporter.item("story", "storyboard", 0, 1)
        board = self.story_backend.storyboard(self.script, self.config)
        if old is not None:
            board = _keep_locked(old, board)
        self.project.write_storyboard(board)
        self.manifest.put(
            "story", "storyboard",
            Record(self._story_recipe(), self.hasher(self.project.storyboard_path) or ""),
        )
        self.reporter.item_done("story", "storyboard")
        if self.story_backend.notice:
            self.notices.append(self.story_backend.notice)
        return True

    def rewrite_shot(self, shot_id: str, instruction: str) -> Shot:
        """Have the LLM storyboarder rewrite one shot from a note. Only that shot changes in
        storyboard.yaml (like a hand edit), so the usual staleness then redoes just what
        depends on it. The caller holds the project lock."""
        if not self.project.has_storyboard():
            raise BadInput("there is no storyboard.yaml to rewrite a shot of; run `cinema story` first")
        board = self.project.storyboard
        self.project.shot(shot_id)  # an unknown id is refused before the LLM is asked
        backend = self.story_backend
        if not isinstance(backend, ShotRewriter):
            raise BadInput(
                f"the {backend.name} storyboarder cannot rewrite a shot from a note; use an LLM "
                "(`--llm gemini` or `--llm local`), or edit it with `cinema shot ID --caption ...`"
            )
        shot = backend.rewrite_shot(self.script, self.config, board, shot_id, instruction)
        shots = list(board.shots)
        shots[board.index(shot_id)] = shot
        self.project.write_storyboard(Storyboard(shots=shots))
        return shot

    # ------------------------------------------------------------ keyframes

    def _keyframe_recipe(self, shot: Shot) -> dict:
        # No scene only in a storyboard the story stage will regenerate (check_storyboard).
        scene = self.script.scene(shot.scene)
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
            "location": scene.location if scene else None,
            "time of day": scene.time if scene else None,
            "cast": cast,
            "style": self.script.style,
            "resolution": str(self.config.resolution),
            "backend": backend.name,
            "backend version": backend.version,
            "backend options": backend.options.model_dump(mode="json"),
            "memory": self.memory.recipe,
        }

    def _keyframe_state(self, shot: Shot, states: dict[str, ArtifactState]) -> tuple[ArtifactState, list[dict]]:
        path = self.project.keyframe_path(shot.id)
        record = self.manifest.get("keyframes", shot.id)
        context = list(record.recipe.get("context", [])) if record else []
        state = self._evaluate(path, record, self._keyframe_recipe(shot), ignore=("context",))
        if state.state == DONE:
            for entry in context:
                if "path" in entry:  # a character's reference image, not a keyframe
                    if self.hasher(self.project.root / entry["path"]) != entry["output"]:
                        state.reasons.append(f"context reference {entry['path']} changed")
                    continue
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
        # Retrieved from the keyframes before it (all drawn by now, in storyboard order)
        # and the cast's reference images, each at its GoldenMem size.
        width, height = self.config.resolution.width, self.config.resolution.height
        context = tuple(
            ContextFrame(c.candidate.shot, c.candidate.path, round(c.score, 4), c.slot.pixels, c.slot.tokens)
            for c in self.memory.context(self.project.storyboard, shot, width, height)
        )
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
            runtime=self.config.runtime,
        )
        image = self.keyframe_backend.render(request, self.reporter.step)
        path = self.project.keyframe_path(shot.id)
        with atomic_output(path, self.project.tmp_dir) as temp:
            image.save(temp, format="PNG")
        recipe = self._keyframe_recipe(shot)
        recipe["context"] = [self._context_entry(c) for c in context]
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

    def _context_entry(self, frame: ContextFrame) -> dict:
        """A context frame as the recipe records it: what it is, its size, and the hash of
        the file it was, so a change to that file makes this keyframe stale."""
        entry = {"shot": frame.shot, "score": frame.score, "size": list(frame.size), "tokens": frame.tokens,
                 "output": self.hasher(frame.path)}
        if frame.shot.startswith("@"):  # a reference image: which one of the character's
            entry["path"] = frame.path.relative_to(self.project.root).as_posix()
        return entry

    # ------------------------------------------------------------ shots

    def requested_frames(self, shot: Shot) -> int:
        return max(1, round(shot.duration * self.config.fps))

    def frames_of(self, shot: Shot) -> int:
        """duration x fps, snapped to a count the backend makes (Wan: 4k+1). Status, the
        film and the shot's own recipe all use this one count."""
        return self._snap(self.requested_frames(shot))

    def _snap(self, requested: int) -> int:
        backend = self.shot_backend
        return backend.frames_for(requested) if isinstance(backend, FrameSnapping) else requested

    def _groups(self, board: Storyboard) -> list[list[Shot]]:
        """The shots the backend renders together: one each, or whole scenes for a group backend."""
        if not isinstance(self.shot_backend, GroupShotBackend):
            return [[shot] for shot in board.shots]
        return [[board.shots[board.index(i)] for i in ids] for ids in self.shot_backend.groups(board)]

    def _group_of(self, board: Storyboard, shot: Shot) -> list[Shot] | None:
        if not isinstance(self.shot_backend, GroupShotBackend):
            return None
        return next(g for g in self._groups(board) if any(s.id == shot.id for s in g))

    def _scene_fields(self, scene_id: str, group: list[Shot]) -> dict:
        """The scene-wide inputs of a group render (its global prompt)."""
        scene = self.script.scene(scene_id)
        assert scene is not None  # checked when the storyboard was loaded
        cast = {}
        for shot in group:
            for name in shot.characters:
                character = self.script.character(name)
                cast[name] = character.description if character else ""
        return {"location": scene.location, "time of day": scene.time, "description": scene.description,
                "style": self.script.style, "cast": cast}

    def _next_keyframe(self, board: Storyboard, shot: Shot) -> Path | None:
        """Shot k flows into keyframe k+1 when shot k+1 joins it `continuous`."""
        if not self.shot_backend.uses_next_keyframe:
            return None
        i = board.index(shot.id)
        if i + 1 < len(board.shots) and board.shots[i + 1].transition == "continuous":
            return self.project.keyframe_path(board.shots[i + 1].id)
        return None

    def _shot_recipe(self, board: Storyboard, shot: Shot) -> dict:
        recipe = self._own_shot_recipe(board, shot)
        group = self._group_of(board, shot)
        if group is not None:
            # Denoised with its scene: it depends on the scene's prompt and on every shot in it.
            recipe["scene prompt"] = self._scene_fields(shot.scene, group)
            recipe["scene shots"] = {
                "scene": shot.scene,
                "shots": {s.id: canonical_hash(self._own_shot_recipe(board, s)) for s in group if s.id != shot.id},
            }
        return recipe

    def _own_shot_recipe(self, board: Storyboard, shot: Shot) -> dict:
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
        siblings = [s.id for s in self._group_of(board, shot) or [] if s.id != shot.id]
        reasons = [f"keyframe {k} is {keyframes[k].state}" for k in upstream if keyframes[k].state != DONE]
        reasons += [f"scene {shot.scene}: shot {k} changed (its keyframe is {keyframes[k].state})"
                    for k in siblings if keyframes[k].state != DONE]
        if reasons:
            if not path.is_file():
                return ArtifactState(MISSING)
            return ArtifactState(STALE, reasons)
        return self._evaluate(path, self.manifest.get("shots", shot.id), self._shot_recipe(board, shot))

    def _shot_request(self, board: Storyboard, shot: Shot) -> ShotRequest:
        return ShotRequest(
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
            runtime=self.config.runtime,
        )

    def _build_shot(self, board: Storyboard, shot: Shot) -> None:
        path = self.project.shot_path(shot.id)
        request = self._shot_request(board, shot)
        recipe = self._shot_recipe(board, shot)
        with atomic_output(path, self.project.tmp_dir) as temp:
            self.shot_backend.render(request, temp, self.encode, self.reporter.step)
        self.manifest.put("shots", shot.id, Record(recipe, self.hasher(path) or ""))

    def _build_group(self, board: Storyboard, group: list[Shot]) -> None:
        """Render a group in one backend call; its shots appear together, once all are made."""
        scene = self._scene_fields(group[0].scene, group)
        request = SceneRequest(
            scene_id=group[0].scene,
            location=scene["location"],
            time_of_day=scene["time of day"],
            description=scene["description"],
            style=scene["style"],
            cast=tuple(scene["cast"].items()),
            shots=tuple(self._shot_request(board, s) for s in group),
        )
        recipes = [self._shot_recipe(board, s) for s in group]
        paths = [self.project.shot_path(s.id) for s in group]
        with contextlib.ExitStack() as outputs:
            temps = [outputs.enter_context(atomic_output(p, self.project.tmp_dir)) for p in paths]
            self.shot_backend.render_group(request, temps, self.encode, self.reporter.step)
        for shot, path, recipe in zip(group, paths, recipes):
            self.manifest.put("shots", shot.id, Record(recipe, self.hasher(path) or ""))

    def _preflight_keyframes(self, force: set[str]) -> None:
        """The keyframe backend's own checks (weights present, memory enough) before anything
        is written, when the keyframe stage may have work."""
        status = self.status()
        if status.story.state == DONE and not force and all(r.keyframe.state == DONE for r in status.shots):
            return
        plan = KeyframePlan(self.config.resolution.width, self.config.resolution.height, self.config.runtime)
        self.notices.extend(self.keyframe_backend.preflight(plan))

    def _preflight_shots(self, force: set[str]) -> None:
        """The shot backend's own checks (weights present, memory enough) before anything is
        written, when the shot stage may have work."""
        status = self.status()
        current = status.story.state == DONE and all(
            r.keyframe.state == DONE and r.shot.state == DONE for r in status.shots
        )
        if current and not force:
            return
        board = self.project.storyboard if self.project.has_storyboard() else None
        if board is None:  # the story stage writes it first; shots will be about shot_seconds long
            frames: tuple[int, ...] = (self._snap(max(1, round(self.config.shot_seconds * self.config.fps))),)
            continuous = 0
        else:
            frames = tuple(sum(self.frames_of(s) for s in group) for group in self._groups(board))
            continuous = sum(s.transition == "continuous" for s in board.shots[1:])
        plan = RenderPlan(
            width=self.config.resolution.width, height=self.config.resolution.height, fps=self.config.fps,
            frames=frames, runtime=self.config.runtime, continuous=continuous,
        )
        self.notices.extend(self.shot_backend.preflight(plan))

    def _snapped_notice(self, shots: list[Shot]) -> None:
        snapped = [f"{s.id} {r}->{f}" for s in shots if (f := self.frames_of(s)) != (r := self.requested_frames(s))]
        if snapped:
            self.notices.append(
                f"video: {self.shot_backend.name} makes only some frame counts, so shot lengths were snapped "
                f"(frames at {self.config.fps} fps): {', '.join(snapped)}"
            )

    # ------------------------------------------------------------ film

    @property
    def crossfade_frames(self) -> int:
        return max(1, round(self.config.assemble.crossfade_seconds * self.config.fps))

    @property
    def subtitles_path(self) -> Path:
        return self.project.film_path.with_suffix(".srt")

    def film_timeline(self, board: Storyboard) -> Timeline:
        """Where each shot lands in film.mp4 (crossfades overlap, as assembly does)."""
        return film_timeline(
            [(s.id, self.frames_of(s), s.transition) for s in board.shots],
            self.config.fps, self.crossfade_frames,
        )

    def _music_bed(self, *, from_flag: bool) -> MusicBed | None:
        """The configured music, checked to be a file inside the project."""
        settings = self.config.assemble
        if settings.music is None:
            return None
        label = "--music" if from_flag else f"{self.project.config_path.name}: assemble.music"
        try:
            path = inside(self.project.root, settings.music, label)
            if not path.is_file():
                raise BadInput(f"{label}: music file {settings.music!r} not found")
        except BadInput as err:
            if from_flag:
                raise
            _, node = load_yaml(self.project.config_path)
            message = str(err).removeprefix(f"{label}: ")
            raise ProjectFileError(
                self.project.config_path, [(line_of(node, ("assemble", "music")), "assemble.music", message)]
            ) from None
        return MusicBed(path, settings.music_loudness, settings.music_fade_seconds, label)

    def _check_music(self) -> None:
        """Refuse music that ffmpeg cannot read as audio, before a run writes anything."""
        if self.music is None:
            return
        try:
            probe_audio(self.music.path)
        except CinemaError:
            raise BadInput(f"{self.music.label}: {self.music.path.name} is not a readable audio file") from None

    def _film_recipe(self, board: Storyboard) -> dict:
        recipe = {
            "shots": [
                [s.id, self.hasher(self.project.shot_path(s.id)), self.frames_of(s), s.transition]
                for s in board.shots
            ],
            "fps": self.config.fps,
            "crossfade frames": self.crossfade_frames,
            "encoding": asdict(self.encode),
            "assembler version": ASSEMBLER_VERSION,
        }
        # Present only when used, so a film made without them stays current.
        if self.config.assemble.subtitles:
            recipe["subtitles"] = [[s.id, s.dialogue] for s in board.shots if s.dialogue]
        if self.music is not None:
            recipe["music"] = {
                "file": self.music.path.relative_to(self.project.root.resolve()).as_posix(),
                "sha256": self.hasher(self.music.path),
                "loudness": self.music.loudness,
                "fade seconds": self.music.fade_seconds,
            }
        return recipe

    def _film_state(self, board: Storyboard, shots: dict[str, ArtifactState]) -> ArtifactState:
        path = self.project.film_path
        pending = [k for k, s in shots.items() if s.state != DONE]
        if pending:
            if not path.is_file():
                return ArtifactState(MISSING)
            return ArtifactState(STALE, [f"shot {k} is {shots[k].state}" for k in pending])
        recipe = self._film_recipe(board)
        state = self._evaluate(path, self.manifest.get("film", "film"), recipe)
        if state.state == DONE and recipe.get("subtitles") and not self.subtitles_path.is_file():
            return ArtifactState(STALE, [f"{self.subtitles_path.name} is missing"])
        return state

    def _build_film(self, board: Storyboard) -> None:
        recipe = self._film_recipe(board)
        timeline = self.film_timeline(board)
        cues = dialogue_cues(timeline, {s.id: s.dialogue for s in board.shots if s.dialogue}) \
            if self.config.assemble.subtitles else []
        if self.config.assemble.subtitles and not cues:
            self.notices.append("subtitles are on but no shot has dialogue, so the film has no subtitle track")
        finishing = bool(cues) or self.music is not None
        # When finishing, the joined video is an intermediate that the mux stream-copies.
        video = temp_path_for(self.project.film_path, self.project.tmp_dir) if finishing else self.project.film_path
        try:
            assemble_film(
                [FilmClip(self.project.shot_path(s.id), self.frames_of(s), s.transition) for s in board.shots],
                video,
                tmp_dir=self.project.tmp_dir,
                cache_dir=self.project.cache_dir / "segments",
                fps=self.config.fps,
                encode=self.encode,
                crossfade_frames=self.crossfade_frames,
            )
            if finishing:
                self._finish(video, cues, timeline)
        finally:
            if finishing:
                video.unlink(missing_ok=True)
        if not cues:
            # film.srt is this stage's output: a film without subtitles leaves none behind.
            self.subtitles_path.unlink(missing_ok=True)
        self.manifest.put("film", "film", Record(recipe, self.hasher(self.project.film_path) or ""))

    def _finish(self, video: Path, cues: list[Cue], timeline: Timeline) -> None:
        """Mux subtitles and music into film.mp4, then publish film.srt beside it."""
        if not cues:
            finish_film(video, self.project.film_path, fps=self.config.fps, frames=timeline.frames,
                        subtitles=None, music=self.music, tmp_dir=self.project.tmp_dir)
            return
        with atomic_output(self.subtitles_path, self.project.tmp_dir) as srt:
            srt.write_text(srt_text(cues), encoding="utf-8")
            finish_film(video, self.project.film_path, fps=self.config.fps, frames=timeline.frames,
                        subtitles=srt, music=self.music, tmp_dir=self.project.tmp_dir)

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
        board = self.check_storyboard()
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
        self.check_storyboard(force_story=force_story)  # bad input is refused before any write
        if until == "film":
            self._check_music()
        if until != "story" and isinstance(self.keyframe_backend, KeyframePreflight):
            self._preflight_keyframes(force)
        if until in ("shots", "film") and isinstance(self.shot_backend, Preflight):
            self._preflight_shots(force)
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
        todo = [g for g in self._groups(board) if any(states[s.id].state != DONE or s.id in force for s in g)]
        count = sum(len(g) for g in todo)
        if todo:
            self.reporter.stage("shots", count)
            self._snapped_notice([s for g in todo for s in g])
        done = 0
        for group in todo:
            if isinstance(self.shot_backend, GroupShotBackend):
                key = f"scene {group[0].scene} ({', '.join(s.id for s in group)})"
                self.reporter.item("shots", key, done, count)
                self._build_group(board, group)
            else:
                self.reporter.item("shots", group[0].id, done, count)
                self._build_shot(board, group[0])
            for shot in group:
                self.reporter.item_done("shots", shot.id)
                rebuilt.shots.append(shot.id)
                states[shot.id] = ArtifactState(DONE)
            done += len(group)
        return states


# ---------------------------------------------------------------- helpers


def _instantiate(project: Project, stage: str, registry: Any, settings: Any, name: str | None = None) -> Any:
    try:
        cls = registry.get(name or settings.backend)
    except BadInput as err:
        if settings is not getattr(project.config, stage, None):
            raise  # a backend named for this run (`--llm NAME`), not by cinema.yaml
        _, node = load_yaml(project.config_path)
        raise ProjectFileError(
            project.config_path, [(line_of(node, (stage, "backend")), f"{stage}.backend", str(err))]
        ) from None
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


def _override(settings: AssembleSettings, overrides: dict[str, Any]) -> AssembleSettings:
    try:
        return AssembleSettings.model_validate({**settings.model_dump(), **overrides})
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise BadInput(f"assemble options: {problems}") from None


def _diff(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """Human reasons why `new` differs from `old`, one per changed input."""
    reasons = []
    for key in sorted(set(old) | set(new), key=lambda k: list(new).index(k) if k in new else 99):
        if key in ignore or old.get(key) == new.get(key):
            continue
        if key == "shots" and isinstance(old.get(key), list):
            reasons.extend(_diff_shot_list(old[key], new[key]))
        elif key == "scene shots" and isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
            reasons.extend(_diff_scene_shots(old[key], new[key]))
        elif key == "script" and isinstance(old.get(key), dict):
            changed = [k for k in set(old[key]) | set(new[key]) if old[key].get(k) != new[key].get(k)]
            reasons.append(f"script {', '.join(sorted(changed))} changed")
        else:
            reasons.append(f"{key} changed")
    return reasons


def _diff_scene_shots(old: dict, new: dict) -> list[str]:
    """Why a shot rendered with its scene is stale: which other shot of the scene changed."""
    scene, before, after = new["scene"], old["shots"], new["shots"]
    reasons = [f"scene {scene}: shot {i} changed" for i in after if i in before and before[i] != after[i]]
    reasons += [f"scene {scene}: shot {i} added" for i in after if i not in before]
    reasons += [f"scene {scene}: shot {i} removed" for i in before if i not in after]
    return reasons or [f"scene {scene} changed"]


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
