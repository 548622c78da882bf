"""The film stage: assembly, subtitles and the music bed, and where each shot lands in
the film (`film_timeline`, a plain function of the storyboard and the settings)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from cinema_cli.assemble.film import FilmClip, assemble_film
from cinema_cli.assemble.finish import finish_film
from cinema_cli.assemble.subtitles import Cue, dialogue_cues, srt_text
from cinema_cli.assemble.timeline import Timeline
from cinema_cli.assemble.timeline import film_timeline as place_shots
from cinema_cli.pipeline.context import Context
from cinema_cli.pipeline.jobs import Job
from cinema_cli.pipeline.recipes import FilmRecipe
from cinema_cli.pipeline.state import DONE, MISSING, STALE, ArtifactState, evaluate
from cinema_cli.project.files import atomic_output, temp_path_for
from cinema_cli.project.manifest import Record
from cinema_cli.project.schema import CinemaConfig, Shot, Storyboard

ASSEMBLER_VERSION = "1"

FramesOf = Callable[[Shot], int]


def crossfade_frames(config: CinemaConfig) -> int:
    return max(1, round(config.assemble.crossfade_seconds * config.fps))


def film_timeline(board: Storyboard, config: CinemaConfig, frames_of: FramesOf) -> Timeline:
    """Where each shot lands in film.mp4 (crossfades overlap, as assembly does)."""
    return place_shots([(s.id, frames_of(s), s.transition) for s in board.shots], config.fps,
                       crossfade_frames(config))


class FilmStage:
    name = "film"

    def __init__(self, ctx: Context, frames_of: FramesOf) -> None:
        self.ctx = ctx
        self.project = ctx.project
        self.frames_of = frames_of

    @property
    def subtitles_path(self) -> Path:
        return self.project.film_path.with_suffix(".srt")

    def recipe(self, board: Storyboard) -> FilmRecipe:
        ctx, config = self.ctx, self.ctx.config
        music = None
        if ctx.music is not None:
            music = {
                "file": ctx.music.path.relative_to(self.project.root.resolve()).as_posix(),
                "sha256": ctx.hasher(ctx.music.path),
                "loudness": ctx.music.loudness,
                "fade seconds": ctx.music.fade_seconds,
            }
        return FilmRecipe(
            shots=[[s.id, ctx.hasher(self.project.shot_path(s.id)), self.frames_of(s), s.transition]
                   for s in board.shots],
            fps=config.fps,
            crossfade_frames=crossfade_frames(config),
            encoding=asdict(ctx.encode),
            assembler_version=ASSEMBLER_VERSION,
            subtitles=[[s.id, s.dialogue] for s in board.shots if s.dialogue] if config.assemble.subtitles else None,
            music=music,
        )

    def state(self, board: Storyboard, shots: dict[str, ArtifactState]) -> ArtifactState:
        path = self.project.film_path
        pending = [k for k, s in shots.items() if s.state != DONE]
        if pending:
            if not path.is_file():
                return ArtifactState(MISSING)
            return ArtifactState(STALE, [f"shot {k} is {shots[k].state}" for k in pending])
        recipe = self.recipe(board)
        state = evaluate(self.ctx.hasher, path, self.ctx.manifest.get("film", "film"), recipe)
        if state.state == DONE and recipe.subtitles and not self.subtitles_path.is_file():
            return ArtifactState(STALE, [f"{self.subtitles_path.name} is missing"])
        return state

    def plan(self, board: Storyboard, shots: dict[str, ArtifactState]) -> list[Job]:
        if self.state(board, shots).state == DONE:
            return []
        return [Job(self.name, "film", recipe=self.recipe(board), outputs=(self.project.film_path,),
                    request=board, label="film.mp4")]

    def build(self, job: Job) -> None:
        ctx, config, board = self.ctx, self.ctx.config, job.request
        timeline = film_timeline(board, config, self.frames_of)
        cues = dialogue_cues(timeline, {s.id: s.dialogue for s in board.shots if s.dialogue}) \
            if config.assemble.subtitles else []
        if config.assemble.subtitles and not cues:
            ctx.notices.append("subtitles are on but no shot has dialogue, so the film has no subtitle track")
        finishing = bool(cues) or ctx.music is not None
        # When finishing, the joined video is an intermediate that the mux stream-copies.
        video = temp_path_for(self.project.film_path, self.project.tmp_dir) if finishing else self.project.film_path
        try:
            assemble_film(
                [FilmClip(self.project.shot_path(s.id), self.frames_of(s), s.transition) for s in board.shots],
                video,
                tmp_dir=self.project.tmp_dir,
                cache_dir=self.project.cache_dir / "segments",
                fps=config.fps,
                encode=ctx.encode,
                crossfade_frames=crossfade_frames(config),
            )
            if finishing:
                self._finish(video, cues, timeline)
        finally:
            if finishing:
                video.unlink(missing_ok=True)
        if not cues:
            # film.srt is this stage's output: a film without subtitles leaves none behind.
            self.subtitles_path.unlink(missing_ok=True)
        ctx.record("film", "film", Record(job.recipe.to_dict(), ctx.hasher(self.project.film_path) or ""))

    def _finish(self, video: Path, cues: list[Cue], timeline: Timeline) -> None:
        """Mux subtitles and music into film.mp4, then publish film.srt beside it."""
        ctx, project = self.ctx, self.project
        if not cues:
            finish_film(video, project.film_path, fps=ctx.config.fps, frames=timeline.frames,
                        subtitles=None, music=ctx.music, tmp_dir=project.tmp_dir)
            return
        with atomic_output(self.subtitles_path, project.tmp_dir) as srt:
            srt.write_text(srt_text(cues), encoding="utf-8")
            finish_film(video, project.film_path, fps=ctx.config.fps, frames=timeline.frames,
                        subtitles=srt, music=ctx.music, tmp_dir=project.tmp_dir)
