"""Finishing and review commands: `cinema board`, `cinema export`, `cinema eval cuts`.
Thin, like the rest of the CLI: parse, call the library, print."""

from __future__ import annotations

import webbrowser
from pathlib import Path
from typing import Optional

import typer

from cinema_cli.cli import output
from cinema_cli.cli.common import JsonOpt, ProjectOpt, fail, open_project, reporting
from cinema_cli.errors import CinemaError
from cinema_cli.pipeline import DONE, Pipeline


def board(
    project: Optional[Path] = ProjectOpt,
    open_page: bool = typer.Option(False, "--open", help="Open board.html in the web browser."),
    json_mode: bool = JsonOpt,
) -> None:
    """Write board.html and board.png: every shot's keyframe, fields, state and context.

    Stale shots are framed and tagged. Example: cinema board --open
    """
    from cinema_cli.review.board import write_board

    try:
        proj = open_project(project)
        status = Pipeline(proj).status()  # validates every project file before the lock
        html, png = write_board(proj, status)
    except CinemaError as err:
        raise fail(err, json_mode) from None
    not_current = [row.id for row in status.shots if (row.keyframe.state, row.shot.state) != (DONE, DONE)]
    if open_page:
        webbrowser.open(html.as_uri())
    if json_mode:
        output.print_json({"ok": True, "board": str(html), "sheet": str(png), "shots": len(status.shots),
                           "not_current": not_current})
        return
    output.out.print(f"board: {html}\nsheet: {png}", markup=False)
    if not_current:
        output.out.print(f"not current: {', '.join(not_current)}", markup=False)


def export(
    format_name: str = typer.Option(..., "--format", "-f", help="otio (OpenTimelineIO) or edl (CMX 3600)."),
    out: Optional[Path] = typer.Option(None, "-o", "--output", help="File to write (default: film.otio / film.edl in the project)."),
    project: Optional[Path] = ProjectOpt,
    json_mode: bool = JsonOpt,
) -> None:
    """Write the film's timeline for an editor: one clip per shot (shots/*.mp4), crossfades
    as dissolves, captions as markers.

    Examples: cinema export --format otio | cinema export --format edl -o cut.edl
    """
    from cinema_cli.handoff import export_timeline

    try:
        result = export_timeline(Pipeline(open_project(project)), format_name, out)
    except CinemaError as err:
        raise fail(err, json_mode) from None
    for message in result.notices:
        output.notice(message)
    if json_mode:
        output.print_json({"ok": True, "file": str(result.path), "format": result.format, "clips": result.clips,
                           "transitions": result.transitions, "frames": result.frames,
                           "notices": result.notices})
        return
    output.out.print(f"wrote {result.path} ({result.clips} clips, {result.transitions} dissolves, "
                     f"{result.frames} frames)", markup=False)


def eval_cuts(
    video: Optional[Path] = typer.Option(None, "--video", help="Video to measure (default: the project's film.mp4)."),
    cuts: Optional[str] = typer.Option(None, "--cuts", help="Expected cut frames, e.g. 24,48,72 (default: the storyboard's)."),
    detector: str = typer.Option("transnetv2", "--detector", help="transnetv2 (default) or scenedetect."),
    tolerance: float = typer.Option(0.5, "--tolerance", min=0, help="Seconds a detected cut may be off and still match."),
    device: str = typer.Option("auto", "--device", help="Where TransNetV2 runs: auto, cpu or cuda."),
    project: Optional[Path] = ProjectOpt,
    json_mode: bool = JsonOpt,
) -> None:
    """Shot Cut Accuracy (HoloCine): detect the cuts and score them against the ones asked for.

    SCA = exp(-NSD); NSD = (frame errors of matched cuts + penalty x (missed + extra)) / frames.
    Examples: cinema eval cuts | cinema eval cuts --video take.mp4 --cuts 24,48,72 --json
    """
    from cinema_cli.eval.cuts import evaluate, parse_cuts

    try:
        requested = parse_cuts(cuts) if cuts is not None else None
        pipeline = Pipeline(open_project(project)) if video is None or requested is None else None
        with reporting(json_mode) as reporter:  # TransNetV2 on a CPU takes a while: show it
            reporter.stage("detecting cuts", 1)
            reporter.item("detecting cuts", (video or Path("film.mp4")).name, 0, 1)
            report = evaluate(pipeline, video, requested, detector=detector, tolerance_seconds=tolerance,
                              device=device, progress=reporter.step)
            reporter.item_done("detecting cuts", "frames")
    except CinemaError as err:
        raise fail(err, json_mode) from None
    for message in report.notices:
        output.notice(message)
    if json_mode:
        output.print_json({"ok": True, **report.to_json()})
        return
    score = report.score

    def frames(values: list[int]) -> str:
        return " ".join(map(str, values)) or "none"

    output.out.print(
        f"video:     {report.video} ({score.frames} frames at {report.fps:g} fps)\n"
        f"detector:  {report.detector}; matches within {score.tolerance} frame(s); "
        f"a miss or an extra costs {score.penalty:.1f} frames\n"
        f"requested: {frames(score.requested)}\n"
        f"detected:  {frames(score.detected)}\n"
        f"matched:   {' '.join(f'{r}->{d}' for r, d in score.matches) or 'none'}\n"
        f"missed:    {frames(score.missed)}\n"
        f"extra:     {frames(score.extra)}\n"
        f"NSD {score.nsd:.4f}   SCA {score.sca:.4f}",
        markup=False,
    )


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    app.command()(board)
    app.command()(export)
    eval_app.command("cuts")(eval_cuts)
