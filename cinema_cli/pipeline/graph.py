"""The stage graph: script -> storyboard -> keyframes -> shots -> film.

Every artifact has a *recipe*: exactly the inputs that produce it (shot fields, backend
and its settings, seed, and the hashes of the files it is made from). The manifest
remembers the recipe each artifact was built with; an artifact is stale when its recipe
differs, and a stage rebuilds only stale artifacts, in order, so a rebuilt keyframe
makes exactly its dependents stale. Evaluation walks the shots in storyboard order
because a keyframe may be conditioned on earlier keyframes (its context).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cinema_cli.errors import BadInput, ProjectFileError
from cinema_cli.keyframes.base import KeyframePreflight, keyframe_backends
from cinema_cli.memory.planner import MemoryPlanner
from cinema_cli.pipeline.film import FilmStage, override_assemble
from cinema_cli.pipeline.keyframes import KeyframeStage
from cinema_cli.pipeline.shots import ShotStage
from cinema_cli.pipeline.state import (
    DONE,
    MISSING,
    STALE,
    ArtifactState,
    ProjectStatus,
    Rebuilt,
    RenderResult,
    Reporter,
    ShotStatus,
    SilentReporter,
    recipe_changes,
)
from cinema_cli.pipeline.story import StoryStage
from cinema_cli.project.manifest import FileHasher, Manifest, Record
from cinema_cli.project.project import Project
from cinema_cli.project.schema import Storyboard, StorySettings
from cinema_cli.project.yamlio import line_of, load_yaml, validation_error
from cinema_cli.runtime.backends import resolve_backend
from cinema_cli.story.base import storyboarders
from cinema_cli.video.base import EncodeSettings, GroupShotBackend, Preflight, shot_backends


class Pipeline(StoryStage, KeyframeStage, ShotStage, FilmStage):
    def __init__(self, project: Project, reporter: Reporter | None = None, story_backend: str | None = None,
                 assemble_overrides: dict[str, Any] | None = None):
        """`assemble_overrides`: `assemble:` settings of cinema.yaml replaced for this run
        only (`cinema assemble --subtitles/--music...`), by field name."""
        self.project = project
        self.reporter = reporter or SilentReporter()
        self.hasher = FileHasher()
        self.manifest = Manifest(project.state_dir / "manifest", project.tmp_dir)
        self.notices: list[str] = []
        # Validate everything the run will read before anything is written.
        self.config = project.config
        if assemble_overrides:
            self.config = self.config.model_copy(
                update={"assemble": override_assemble(self.config.assemble, assemble_overrides)}
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

    def _evaluate(self, path: Path, record: Record | None, recipe: dict, ignore: Iterable[str] = ()) -> ArtifactState:
        if not path.is_file():
            return ArtifactState(MISSING)
        if record is None:
            return ArtifactState(STALE, ["not recorded as complete (an interrupted run?)"])
        reasons = recipe_changes(record.recipe, recipe, ignore=tuple(ignore))
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
        check_keyframes = until != "story" and isinstance(self.keyframe_backend, KeyframePreflight)
        check_shots = until in ("shots", "film") and isinstance(self.shot_backend, Preflight)
        if check_keyframes or check_shots:
            status = self.status()  # once: each check asks whether its stage has work
            if check_keyframes:
                self._preflight_keyframes(status, force)
            if check_shots:
                self._preflight_shots(status, force)
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
