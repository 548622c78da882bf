"""Opening the film, a shot's video or a keyframe in the person's own player.

`CINEMA_PLAYER` (a command line, e.g. `mpv --loop` or `vlc`) is used when set, with the
file appended; otherwise the system's opener (`open` on macOS, `xdg-open` elsewhere, the
file association on Windows). With neither, the caller prints the path instead.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

from cinema_cli.errors import BadInput
from cinema_cli.project.project import Project

PLAYER_ENV = "CINEMA_PLAYER"


def media_path(project: Project, shot_id: str | None, keyframe: bool) -> Path:
    """The file to show: film.mp4, shots/ID.mp4, or keyframes/ID.png; it must exist."""
    if shot_id is None:
        if keyframe:
            raise BadInput("--keyframe needs a shot id, e.g. cinema play s03 --keyframe")
        path, hint = project.film_path, "run `cinema render` to make it"
    else:
        project.shot(shot_id)  # an unknown id is bad input, named with the known ones
        if keyframe:
            path, hint = project.keyframe_path(shot_id), "run `cinema plan` to draw it"
        else:
            path, hint = project.shot_path(shot_id), f"run `cinema render` (or `cinema shot {shot_id} --regen`)"
    if not path.is_file():
        raise BadInput(f"there is no {path.relative_to(project.root)} yet; {hint}")
    return path


def player_command(path: Path, environ: dict[str, str] | None = None, platform: str | None = None) -> list[str] | None:
    """The command that shows `path`, or None when this machine has no way to."""
    environ = os.environ if environ is None else environ
    platform = platform or sys.platform
    chosen = environ.get(PLAYER_ENV, "").strip()
    if chosen:
        return [*shlex.split(chosen), str(path)]
    if platform == "darwin":
        return ["open", str(path)]
    if platform.startswith("win"):
        return ["cmd", "/c", "start", "", str(path)]
    opener = shutil.which("xdg-open")
    return [opener, str(path)] if opener else None
