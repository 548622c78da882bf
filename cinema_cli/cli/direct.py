"""`cinema direct`: direct the film shot by shot, interactively or from a file. Thin:
parse, run cinema_cli.direct's session, print its events."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import typer

from cinema_cli.cli import output
from cinema_cli.cli.common import ProjectOpt, fail, open_project, reporting
from cinema_cli.direct.routing import describe
from cinema_cli.direct.signals import Interrupt, interrupts_raise
from cinema_cli.errors import BadInput, CinemaError

INTERRUPTED = 130
HELP_LINE = ("type a shot (`cut: ...` or a bare line), `continue: ...` to carry the current shot on, "
             "`undo` to drop the last shot, `quit` to end")


def direct(
    from_file: Optional[Path] = typer.Option(
        None, "--from", help="Read the lines from this file (one prompt a line; - for stdin) instead of asking."),
    scene: Optional[str] = typer.Option(
        None, "--scene", help="Scene of script.yaml the new shots belong to (default: the last shot's, else the first)."),
    seconds: Optional[float] = typer.Option(
        None, "--seconds", min=0.05, max=120, help="Length of each new shot (default: cinema.yaml's shot_seconds)."),
    project: Optional[Path] = ProjectOpt,
    json_mode: bool = typer.Option(False, "--json", help="Print one JSON event a line for scripts."),
) -> None:
    """Direct the film shot by shot: each line becomes the next shot, made from the film
    so far; earlier shots are never redone. Watch stream/film.m3u8 while it grows;
    film.mp4 is whole after every shot.

    Lines: a bare line or `cut: ...` is a new shot, `continue: ...` carries the current
    shot on with a new prompt, `undo` drops the shot just made, `quit` ends. Tag the cast
    as <Name>; a leading or trailing "close-up" / "wide, push-in" sets the camera.

    Exit codes: 0 ok, 2 a line or the project was bad input, 1 a shot failed, 130 Ctrl-C.

    Examples: cinema direct | cinema direct --from prompts.txt --json
    """
    from cinema_cli.direct.session import DirectingSession

    try:
        proj = open_project(project)
        lines = _lines(from_file)
        session = DirectingSession(proj, scene=scene, seconds=seconds)
    except CinemaError as err:
        raise fail(err, json_mode) from None
    interactive = from_file is None and sys.stdin.isatty()
    emit = output.print_json if json_mode else _show
    code = 0
    with interrupts_raise():
        try:
            with proj.lock():
                for event in session.start():
                    emit(event)
                if interactive and not json_mode:
                    output.out.print(HELP_LINE, markup=False)
                try:
                    counts = session.drive(lines if not interactive else _prompted("" if json_mode else "> "), emit,
                                           lambda: reporting(json_mode), interactive=interactive)
                    code = 2 if counts["bad"] else 1 if counts["failed"] else 0
                except Interrupt:
                    # Ctrl-C: the shot in flight was dropped (reported); at an interactive
                    # prompt it simply ends the session.
                    code = 0 if interactive else INTERRUPTED
                emit(session.close())
        except CinemaError as err:
            raise fail(err, json_mode) from None
        except Interrupt:  # while starting or closing: what is on disk is whole either way
            output.error("interrupted; the film is as it was before the shot in progress")
            code = INTERRUPTED
    raise typer.Exit(code)


def _lines(source: Optional[Path]) -> list[str] | Iterator[str]:
    if source is None or str(source) == "-":
        return sys.stdin
    try:
        return source.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise BadInput(f"--from {source}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise BadInput(f"--from {source}: cannot read it as text ({err})") from None


def _prompted(prompt: str) -> Iterator[str]:
    """Lines typed at the prompt, with line editing, until end of input."""
    try:
        import readline  # noqa: F401 - arrow keys and history at the prompt
    except ImportError:  # pragma: no cover - platforms without it still get a prompt
        pass
    while True:
        try:
            yield input(prompt)
        except EOFError:
            output.out.print()
            return


def _show(event: dict) -> None:
    kind = event["event"]
    if kind == "session":
        so_far = f"{event['shots']} shot(s) so far, the last {event['last']}" if event["shots"] else "no shots yet"
        output.out.print(output.shown(f"directing {event['project']}: {so_far}"))
        output.out.print(output.labelled("  watch", f"{event['stream']}  (e.g. mpv or VLC; it grows as you direct)"))
        output.out.print(output.labelled("   film", event["film"]))
    elif kind == "shot":
        output.out.print(output.labelled(
            event["id"], f"{event['kind']}, {event['camera']}, {event['duration']:g} s, made in {event['seconds']:.1f}s"))
        output.out.print(output.labelled("  memory", describe(event["memory"])))
    elif kind == "undo":
        output.out.print(output.shown(f"undid {event['id']}; the film is back to {event['shots']} shot(s)"))
    elif kind == "error":
        output.error(f"line {event['line']}: {event['error']}")
    elif kind == "discarded":
        output.notice(f"{event['shot'] or 'the shot in progress'} discarded: {event['reason']}")
    elif kind == "repaired":
        output.notice(f"dropped {event['dropped']}, left unfinished by an earlier session that was stopped")
    elif kind == "notice":
        output.notice(event["message"])
    elif kind == "end":
        ended = f"{event['shots']} shot(s), {len(event['made'])} made now; the stream is ended"
        output.out.print(output.shown(ended + (f"; film: {event['film']}" if event["film"] else "")))


def register(app: typer.Typer) -> None:
    app.command()(direct)
