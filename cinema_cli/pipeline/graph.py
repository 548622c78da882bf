"""The stage graph: script -> storyboard -> keyframes -> shots -> film.

Every artifact has a *recipe* (`recipes`): exactly the inputs that produce it (shot
fields, backend, its settings and the files it reads, seed, and the hashes of the files
it is made from). The manifest remembers the recipe each artifact was built with; an
artifact is stale when its recipe differs. Each stage plans the jobs that make its
stale artifacts (`jobs.Job`) and an executor builds them in dependency order, each
judged once what it is made from is recorded, so a rebuilt keyframe makes exactly its
dependents stale. The keyframe and shot stages are handed to the executor together
(`jobs.Step`): in one process they run in turn, across ranks as one graph, a shot
starting as soon as its own keyframes are recorded.

`Pipeline` is what a command uses: one context (`context.Context`), the four stages
over it, `status()` and `run()`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from cinema_cli.assemble.timeline import Timeline
from cinema_cli.pipeline.context import Context, build_context
from cinema_cli.pipeline.film import FilmStage, film_timeline
from cinema_cli.pipeline.jobs import Executor, InProcessExecutor
from cinema_cli.pipeline.keyframes import KeyframeStage
from cinema_cli.pipeline.shots import ShotStage
from cinema_cli.pipeline.state import (
    DONE,
    MISSING,
    ArtifactState,
    ProjectStatus,
    Rebuilt,
    RenderResult,
    Reporter,
    ShotStatus,
)
from cinema_cli.pipeline.story import StoryStage
from cinema_cli.project.project import Project
from cinema_cli.project.schema import Shot, Storyboard


class Pipeline:
    def __init__(self, project: Project, reporter: Reporter | None = None, story_backend: str | None = None,
                 assemble_overrides: dict[str, Any] | None = None):
        """Validates everything a run will read; builds no model. `story_backend` and
        `assemble_overrides`: see `context.build_context`."""
        self.ctx: Context = build_context(project, reporter, story_backend, assemble_overrides)
        self.project = project
        self.story = StoryStage(self.ctx)
        self.keyframes = KeyframeStage(self.ctx)
        self.shots = ShotStage(self.ctx)
        self.film = FilmStage(self.ctx, self.shots.frames_of)

    @property
    def config(self):
        return self.ctx.config

    @property
    def notices(self) -> list[str]:
        return self.ctx.notices

    @property
    def reporter(self) -> Reporter:
        return self.ctx.reporter

    @reporter.setter
    def reporter(self, reporter: Reporter) -> None:
        self.ctx.reporter = reporter

    @property
    def shot_backend(self):
        return self.ctx.video.instance

    def frames_of(self, shot: Shot) -> int:
        return self.shots.frames_of(shot)

    def film_timeline(self, board: Storyboard) -> Timeline:
        return film_timeline(board, self.ctx.config, self.shots.frames_of)

    def check_storyboard(self, *, force_story: bool = False) -> Storyboard | None:
        return self.story.check_storyboard(force_story=force_story)

    def rewrite_shot(self, shot_id: str, instruction: str) -> Shot:
        return self.story.rewrite_shot(shot_id, instruction)

    def check_rewrite(self, shot_id: str):
        return self.story.check_rewrite(shot_id)

    def check_inputs(self, until: str) -> None:
        """What a run up to `until` reads besides the project files — the memory's weights,
        the music — refused before the caller takes the lock."""
        if until != "story":
            self.ctx.memory  # noqa: B018 - its embedder refuses weights that would not load
        if until == "film":
            self.ctx.check_music()

    def status(self) -> ProjectStatus:
        story = self.story.state()
        if story.state == MISSING:
            return ProjectStatus(story, [], ArtifactState(MISSING), self.ctx.backend_names, self.notices)
        board = self.check_storyboard()
        keyframes, contexts = self.keyframes.states(board)
        shots = self.shots.states(board, keyframes)
        film = self.film.state(board, shots)
        rows = [ShotStatus(s.id, s.scene, keyframes[s.id], shots[s.id], contexts[s.id]) for s in board.shots]
        return ProjectStatus(story, rows, film, self.ctx.backend_names, self.notices)

    # ------------------------------------------------------------ running stages

    def run(self, *, until: str = "film", force: Iterable[str] = (), force_story: bool = False,
            executor: Executor | None = None) -> RenderResult:
        """Rebuild whatever is stale up to `until` (story | keyframes | shots | film).
        `force` names shots whose keyframe and shot are redone regardless.
        The caller holds the project lock."""
        started = time.monotonic()
        executor = executor or InProcessExecutor(self.ctx.reporter)
        rebuilt = Rebuilt()
        force = set(force)
        self.check_storyboard(force_story=force_story)  # bad input is refused before any write
        if until == "film":
            self.ctx.check_music()
        self._preflight(until, force)
        self.project.clear_tmp()
        rebuilt.story = bool(executor.run(self.story, self.story.plan(force=force_story)))
        board = self.project.storyboard
        unknown = force - {s.id for s in board.shots}
        if unknown:
            self.project.shot(sorted(unknown)[0])  # raises UnknownShot with the list
        if until != "story":
            keyframe_step, keyframes = self.keyframes.step(board, force)
            steps = [keyframe_step]
            if until != "keyframes":
                shot_step, shots = self.shots.step(board, keyframes, force)
                steps.append(shot_step)
            built = executor.run_steps(steps)
            rebuilt.keyframes = [i for job in built[0] for i in job.shots]
            if until != "keyframes":
                rebuilt.shots = [i for job in built[1] for i in job.shots]
                rendered = set(rebuilt.shots)
                self.shots.snapped_notice([s for s in board.shots if s.id in rendered])
                if until == "film":
                    rebuilt.film = bool(executor.run(self.film, self.film.plan(board, shots)))
        return RenderResult(
            rebuilt, time.monotonic() - started, self.notices,
            self.project.film_path if self.project.film_path.is_file() else None,
        )

    def _preflight(self, until: str, force: set[str]) -> None:
        """The backends' own checks (weights present, memory enough) before anything is
        written, for each stage that may have work."""
        check_keyframes = until != "story" and self.keyframes.has_preflight
        check_shots = until in ("shots", "film") and self.shots.has_preflight
        if not (check_keyframes or check_shots):
            return
        status = self.status()  # once: each check asks whether its stage has work
        story_done = status.story.state == DONE and not force
        if check_keyframes and not (story_done and all(r.keyframe.state == DONE for r in status.shots)):
            self.keyframes.preflight()
        if check_shots and not (story_done and all(
                r.keyframe.state == DONE and r.shot.state == DONE for r in status.shots)):
            self.shots.preflight()
