"""The film stage: assembly, subtitles and the music bed."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cinema_cli.assemble.film import FilmClip, assemble_film
from cinema_cli.assemble.finish import finish_film
from cinema_cli.assemble.music import MusicBed
from cinema_cli.assemble.probe import probe_audio
from cinema_cli.assemble.subtitles import Cue, dialogue_cues, srt_text
from cinema_cli.assemble.timeline import Timeline, film_timeline
from cinema_cli.errors import BadInput, CinemaError, ProjectFileError
from cinema_cli.pipeline.state import DONE, MISSING, STALE, ArtifactState
from cinema_cli.project.files import atomic_output, inside, temp_path_for
from cinema_cli.project.manifest import Record
from cinema_cli.project.schema import AssembleSettings, Storyboard
from cinema_cli.project.yamlio import line_of, load_yaml

ASSEMBLER_VERSION = "1"


class FilmStage:
    """Methods of Pipeline for the film stage."""

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


def override_assemble(settings: AssembleSettings, overrides: dict[str, Any]) -> AssembleSettings:
    try:
        return AssembleSettings.model_validate({**settings.model_dump(), **overrides})
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise BadInput(f"assemble options: {problems}") from None
