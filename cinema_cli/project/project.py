"""A film project on disk: where it is, its files, and its validated contents."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cinema_cli.errors import NotAProject, ProjectFileError, UnknownShot, UnsafePath
from cinema_cli.project.files import atomic_write_text, check_folder_inside, inside
from cinema_cli.project.images import image_problem
from cinema_cli.project.lock import ProjectLock
from cinema_cli.project.schema import (
    CinemaConfig,
    Script,
    Shot,
    Storyboard,
    caption_tags,
    check_storyboard_against_config,
    check_storyboard_against_script,
)
from cinema_cli.project.yamlio import dump_yaml, file_error, load_model

CONFIG_FILE = "cinema.yaml"
SCRIPT_FILE = "script.yaml"
STORYBOARD_FILE = "storyboard.yaml"
STORYBOARD_HEADER = (
    "# The shot list. Edit freely: cinema redoes only the shots whose fields changed.\n"
    "# transition: how a shot joins the one before it (cut | crossfade | continuous).\n"
    "# Captions tag the cast as <Name>; camera is \"FRAMING, MOVE\".\n"
)


def find_root(start: Path) -> Path:
    """The project containing `start`: the nearest folder upward with a cinema.yaml."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / CONFIG_FILE).is_file():
            return folder
    raise NotAProject(
        f"{start} is not inside a cinema project (no {CONFIG_FILE} here or above); "
        "create one with `cinema new NAME` or point at one with -p DIR"
    )


@dataclass
class Project:
    root: Path

    @classmethod
    def open(cls, directory: Path | None = None, *, search_up: bool = True) -> "Project":
        directory = Path.cwd() if directory is None else Path(directory)
        if search_up:
            return cls(find_root(directory))
        if not (directory / CONFIG_FILE).is_file():
            raise NotAProject(f"{directory} is not a cinema project (no {CONFIG_FILE})")
        return cls(directory.resolve())

    # ------------------------------------------------------------ paths
    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def script_path(self) -> Path:
        return self.root / SCRIPT_FILE

    @property
    def storyboard_path(self) -> Path:
        return self.root / STORYBOARD_FILE

    @property
    def state_dir(self) -> Path:
        return self.root / ".cinema"

    @property
    def tmp_dir(self) -> Path:
        return self.state_dir / "tmp"

    @property
    def cache_dir(self) -> Path:
        return self.state_dir / "cache"

    @property
    def film_path(self) -> Path:
        return self.root / "film.mp4"

    @property
    def stream_dir(self) -> Path:
        """The film as a stream a player follows while `cinema direct` makes it (HLS)."""
        return self.root / "stream"

    def keyframe_path(self, shot_id: str) -> Path:
        return self.root / "keyframes" / f"{shot_id}.png"

    def sidecar_path(self, shot_id: str) -> Path:
        return self.root / "keyframes" / f"{shot_id}.json"

    def shot_path(self, shot_id: str) -> Path:
        return self.root / "shots" / f"{shot_id}.mp4"

    def lock(self) -> ProjectLock:
        """The project lock, after checking that no folder cinema writes into leads
        outside the project (every writer takes the lock first, so this guards them all)."""
        self.check_write_folders()
        return ProjectLock(self.state_dir / "lock", on_acquire=self.forget)

    def forget(self) -> None:
        """Drop what was read of storyboard.yaml, so it is read again from disk: a writer
        edits the storyboard as it is once it holds the lock, never an earlier copy."""
        self.__dict__.pop("storyboard", None)
        self.__dict__.pop("storyboard_unchecked", None)

    def draft_storyboard(self, board: Storyboard) -> None:
        """Read `board` as the storyboard until the next write or `forget`, without writing
        it: a directing session draws a shot before that shot becomes part of the file."""
        self.__dict__["storyboard"] = board
        self.__dict__["storyboard_unchecked"] = board

    def check_write_folders(self) -> None:
        folders = [(self.state_dir, "machine state folder"), (self.cache_dir, "cache folder"),
                   (self.root / "keyframes", "keyframes folder"), (self.root / "shots", "shots folder"),
                   (self.stream_dir, "stream folder")]
        if self.cache_dir.is_dir():
            folders += [(p, "cache folder") for p in self.cache_dir.iterdir()]
        for folder, what in folders:
            check_folder_inside(self.root, folder, what)

    def clear_tmp(self) -> None:
        """Remove what a killed run left half-written. Call only while holding the lock.
        A symlink in place of the scratch folder is replaced, never followed."""
        if self.tmp_dir.is_symlink():
            self.tmp_dir.unlink()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ contents
    @cached_property
    def config(self) -> CinemaConfig:
        return load_model(self.config_path, CinemaConfig)

    @cached_property
    def script(self) -> Script:
        script = load_model(self.script_path, Script)
        for ci, character in enumerate(script.characters):
            for ri, ref in enumerate(character.references):
                field = f"characters.{ci}.references.{ri}"
                try:
                    path = inside(self.root, ref, "reference image")
                except UnsafePath as err:
                    raise self._script_error(field, str(err)) from None
                if not path.is_file():
                    raise self._script_error(field, f"reference image {ref!r} not found")
                problem = image_problem(path, verify=True)
                if problem:
                    raise self._script_error(field, f"reference image {ref!r} {problem}")
        self._check_beat_tags(script)
        return script

    def _check_beat_tags(self, script: Script) -> None:
        """A <Name> in a beat must be in the cast: reported at the beat's line in
        script.yaml, where it was written, not later in the storyboard made from it."""
        cast = [c.name for c in script.characters]
        problems = []
        for si, scene in enumerate(script.scenes):
            for bi, beat in enumerate(scene.beats):
                unknown = [name for name in caption_tags(beat.text) if name not in cast]
                if unknown:
                    field = f"scenes.{si}.beats.{bi}"
                    problems.append((field, f"{', '.join(f'<{n}>' for n in unknown)} is not in `characters` "
                                            f"(cast: {', '.join(cast) or 'none'}); add them there or untag the name"))
        if problems:
            raise file_error(self.script_path, [(_loc(f), f, m) for f, m in problems])

    def has_storyboard(self) -> bool:
        return self.storyboard_path.is_file()

    @cached_property
    def storyboard_unchecked(self) -> Storyboard:
        """The storyboard validated by its own schema only, not against script.yaml: for
        one the story stage is about to regenerate from a changed script."""
        return load_model(self.storyboard_path, Storyboard)

    @cached_property
    def storyboard(self) -> Storyboard:
        board = self.storyboard_unchecked
        problems = check_storyboard_against_script(board, self.script)
        problems += check_storyboard_against_config(board, self.config)
        if problems:
            raise file_error(self.storyboard_path, [(_loc(f), f, msg) for f, msg in problems])
        return board

    def shot(self, shot_id: str) -> Shot:
        shot = self.storyboard.shot(shot_id)
        if shot is None:
            ids = [s.id for s in self.storyboard.shots]
            raise UnknownShot(
                f"no shot {shot_id!r} in {STORYBOARD_FILE} (shots: {', '.join(ids)})"
            )
        return shot

    def character_reference_paths(self, name: str) -> tuple[Path, ...]:
        character = self.script.character(name)
        if character is None:
            return ()
        return tuple(inside(self.root, r, "reference") for r in character.references)

    def validate_storyboard(self, board: Storyboard) -> None:
        """Refuse a storyboard that names scenes or characters script.yaml does not have,
        or has a shot too short for the film to be joined."""
        problems = check_storyboard_against_script(board, self.script)
        problems += check_storyboard_against_config(board, self.config)
        if problems:
            raise ProjectFileError(self.storyboard_path, [(None, f, m) for f, m in problems])

    def write_storyboard(self, board: Storyboard) -> None:
        """Validate against the script, then replace storyboard.yaml atomically."""
        self.validate_storyboard(board)
        shots = [_shot_dict(s) for s in board.shots]
        atomic_write_text(
            self.storyboard_path, STORYBOARD_HEADER + dump_yaml({"shots": shots}), self.tmp_dir
        )
        self.forget()

    def _script_error(self, field: str, message: str) -> ProjectFileError:
        return file_error(self.script_path, [(_loc(field), field, message)])


def _shot_dict(shot: Shot) -> dict:
    """A shot as YAML, leaving out optional fields at their defaults to keep it readable."""
    data = shot.model_dump(mode="json")
    for key, default in (("dialogue", None), ("locked", False), ("directed", False)):
        if data.get(key) == default:
            data.pop(key)
    return data


def _loc(dotted_field: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in dotted_field.split("."))
