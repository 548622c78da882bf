"""Looking at the work: `cinema shots` (the shot list) and `cinema play` (the film, a
shot or a keyframe in the system player; also `cinema open` and `cinema preview`).
Thin: parse, call the library, print."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from cinema_cli.cli import output
from cinema_cli.cli.common import JsonOpt, ProjectOpt, fail, open_project
from cinema_cli.errors import BadInput, CinemaError
from cinema_cli.project.schema import CHARACTER_TAG


def shots(project: Optional[Path] = ProjectOpt, json_mode: bool = JsonOpt) -> None:
    """The shot list: each shot's scene, camera, length, transition and caption.

    Example: cinema shots
    """
    try:
        proj = open_project(project)
        if not proj.has_storyboard():
            raise BadInput("there is no storyboard.yaml yet; run `cinema story` first")
        board = proj.storyboard.shots
        crossfade = proj.config.assemble.crossfade_seconds
    except CinemaError as err:
        raise fail(err, json_mode) from None
    if json_mode:
        output.print_json({"shots": [shot.model_dump(mode="json") for shot in board]})
        return
    table = Table()
    for column in ("shot", "scene", "camera", "length", "join", "caption"):
        table.add_column(column, justify="right" if column == "length" else "left")
    for shot in board:
        caption = CHARACTER_TAG.sub(r"\1", shot.caption)
        if shot.dialogue:
            caption += f" “{shot.dialogue}”"
        table.add_row(shot.id + (" (locked)" if shot.locked else ""), escape(shot.scene), shot.camera,
                      f"{shot.duration:g} s", shot.transition, escape(caption))
    output.out.print(table)
    output.out.print(output.length_summary(board, crossfade), markup=False)


def play(
    shot_id: Optional[str] = typer.Argument(None, help="A shot id to open its video; none: the film."),
    keyframe: bool = typer.Option(False, "--keyframe", help="Open the shot's keyframe image instead."),
    print_only: bool = typer.Option(False, "--print", help="Print the file's path; open nothing."),
    project: Optional[Path] = ProjectOpt,
    json_mode: bool = JsonOpt,
) -> None:
    """Open film.mp4, a shot's video or its keyframe in your player.

    The player is $CINEMA_PLAYER (e.g. "mpv --loop") when set, else the system's.
    Examples: cinema play | cinema play s03 | cinema play s03 --keyframe --print
    """
    from cinema_cli.review.player import player_command, media_path

    try:
        path = media_path(open_project(project), shot_id, keyframe)
    except CinemaError as err:
        raise fail(err, json_mode) from None
    command = None if print_only else player_command(path)
    if json_mode:
        output.print_json({"ok": True, "file": str(path), "player": command})
    elif print_only or command is None:
        output.out.print(str(path), markup=False)
        if command is None and not print_only:
            output.notice("no player found: set CINEMA_PLAYER (e.g. export CINEMA_PLAYER=mpv) to open it")
        return
    if command is None:
        return
    try:
        code = subprocess.run(command, check=False).returncode
    except OSError as err:
        output.error(f"cannot start the player {command[0]!r}: {err.strerror or err}")
        raise typer.Exit(1) from None
    if code:
        output.error(f"the player {command[0]!r} exited with status {code}")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(shots)
    app.command()(play)
    # The words people reach for; the same command.
    app.command("open", hidden=True)(play)
    app.command("preview", hidden=True)(play)
