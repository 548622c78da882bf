"""Telling a hand edit from a damaged file.

An artifact that differs from what cinema wrote is a person's edit and is kept, unless
it no longer decodes (a truncated copy, a disk error, garbage): then it is damaged and
is redone like a missing one. Checked only for files that changed, so it costs nothing
on a current project.
"""

from __future__ import annotations

from pathlib import Path

from cinema_cli.assemble.ffmpeg import run_ffmpeg
from cinema_cli.errors import CinemaError
from cinema_cli.project.images import image_problem


def damage(path: Path) -> str | None:
    """Why the artifact at `path` is unusable, or None."""
    if path.suffix == ".png":
        return image_problem(path, verify=True)
    if path.suffix == ".mp4":
        try:  # decoded to the end; -xerror: a corrupt packet (a truncated file) fails it
            run_ffmpeg(["-v", "error", "-xerror", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"],
                       f"checking {path.name}")
        except CinemaError:
            return "does not decode"
    return None
