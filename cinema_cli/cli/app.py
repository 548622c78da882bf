"""The `cinema` command line. Thin: parse arguments, call the library, print.

Exit codes: 0 ok, 1 failure (ffmpeg, backend, lock held), 2 bad input or usage.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Optional

import typer

from cinema_cli.cli import output
from cinema_cli.errors import BadInput, CinemaError
from cinema_cli.pipeline import Pipeline, RenderResult
from cinema_cli.project.create import create_project, examples
from cinema_cli.project.project import Project
from cinema_cli.project.schema import Shot, caption_tags

app = typer.Typer(
    name="cinema",
    help="Turn a story into a film: storyboard, keyframes, shots, assembly. "
    "Commands run in the project found from the current folder upward, or in -p DIR.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks that print JSON.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

ProjectOpt = typer.Option(None, "-p", "--project", help="Project folder (default: found from the current folder).")
JsonOpt = typer.Option(False, "--json", help="Print JSON for scripts instead of tables.")


def main() -> None:
    try:
        app()
    except OSError as err:
        # Disk full, permission denied...: a message, not a traceback. The artifact in
        # flight was never published, so the project stays consistent.
        output.error(f"{err.strerror or err}: {err.filename or ''}".rstrip(": "))
        sys.exit(1)


@contextlib.contextmanager
def reporting(json_mode: bool):
    """The progress reporter for this terminal: bars on a TTY, plain lines otherwise."""
    if output.err.is_terminal and not json_mode:
        with output.RichReporter() as reporter:
            yield reporter
    else:
        yield output.PlainReporter()


def fail(err: CinemaError) -> typer.Exit:
    output.error(str(err))
    return typer.Exit(err.exit_code)


def open_project(path: Optional[Path]) -> Project:
    return Project.open(path)


def run_stages(project_dir: Optional[Path], until: str, json_mode: bool, *, force=(), force_story=False) -> RenderResult:
    """Validate, lock, and run the stages up to `until`; the shared body of story, plan,
    render, assemble and shot --regen."""
    project = open_project(project_dir)
    with reporting(json_mode) as reporter:
        pipeline = Pipeline(project, reporter)  # validates every project file first
        shown = len(pipeline.notices)
        for message in pipeline.notices:
            reporter.notice(message)
        with project.lock():
            result = pipeline.run(until=until, force=force, force_story=force_story)
        for message in result.notices[shown:]:
            reporter.notice(message)
    return result


def result_json(project: str, result: RenderResult | None, error: CinemaError | None = None) -> dict:
    data = {"project": project, "ok": error is None}
    if result is not None:
        r = result.rebuilt
        data.update(
            seconds=round(result.seconds, 3),
            rebuilt={"story": r.story, "keyframes": r.keyframes, "shots": r.shots, "film": r.film},
            film=str(result.film) if result.film else None,
            notices=result.notices,
        )
    if error is not None:
        data.update(error=str(error), exit_code=error.exit_code)
    return data


def print_result(result: RenderResult) -> None:
    r = result.rebuilt
    parts = []
    if r.story:
        parts.append("storyboard")
    if r.keyframes:
        parts.append(f"{len(r.keyframes)} keyframe(s) ({', '.join(r.keyframes)})")
    if r.shots:
        parts.append(f"{len(r.shots)} shot(s) ({', '.join(r.shots)})")
    if r.film:
        parts.append("film")
    built = ", ".join(parts) if parts else "nothing (everything is up to date)"
    output.out.print(f"rebuilt {built} in {result.seconds:.1f}s", markup=False)
    if result.film and r.film:
        output.out.print(f"film: {result.film}")


# ---------------------------------------------------------------- commands


@app.command()
def new(
    name: Path = typer.Argument(..., help="Folder to create."),
    example: Optional[str] = typer.Option(None, "--example", "-e", help="Start from a shipped example story."),
    json_mode: bool = JsonOpt,
) -> None:
    """Create a project folder.

    Example: cinema new heist --example heist
    """
    try:
        root = create_project(name, example)
    except CinemaError as err:
        raise fail(err) from None
    if json_mode:
        output.print_json({"project": str(root), "example": example})
    else:
        output.out.print(f"created {root}")
        output.out.print(f"next: cd {name} && cinema render")


@app.command("examples")
def list_examples() -> None:
    """List the example stories `cinema new --example` can start from."""
    for name in examples():
        output.out.print(name)


@app.command()
def story(
    project: Optional[Path] = ProjectOpt,
    force: bool = typer.Option(False, "--force", help="Regenerate even a hand-edited storyboard.yaml (locked shots are kept)."),
    json_mode: bool = JsonOpt,
) -> None:
    """Write storyboard.yaml from script.yaml (when missing or stale)."""
    _stage_command(project, "story", json_mode, force_story=force)


@app.command()
def plan(project: Optional[Path] = ProjectOpt, json_mode: bool = JsonOpt) -> None:
    """Draw the stale keyframes (one image per shot)."""
    _stage_command(project, "keyframes", json_mode)


@app.command()
def assemble(project: Optional[Path] = ProjectOpt, json_mode: bool = JsonOpt) -> None:
    """Everything stale up to and including film.mp4 (same as render)."""
    _stage_command(project, "film", json_mode)


def _stage_command(project: Optional[Path], until: str, json_mode: bool, **kwargs) -> None:
    try:
        result = run_stages(project, until, json_mode, **kwargs)
    except CinemaError as err:
        if json_mode:
            output.print_json(result_json(str(project or Path.cwd()), None, err))
        raise fail(err) from None
    if json_mode:
        output.print_json(result_json(str(Project.open(project).root), result))
    else:
        print_result(result)


@app.command()
def render(
    project: Optional[list[Path]] = typer.Option(
        None, "-p", "--project", help="Project folder; repeat to render several in turn."
    ),
    json_mode: bool = JsonOpt,
) -> None:
    """Build whatever is stale: story -> keyframes -> shots -> film.mp4.

    With several -p, renders each in turn, keeps going past a failed one, prints one
    JSON object per project with --json, and exits non-zero if any failed.

    Examples: cinema render | cinema render -p films/a -p films/b --json
    """
    targets: list[Optional[Path]] = list(project) if project else [None]
    exit_code = 0
    for target in targets:
        label = str(target) if target is not None else str(Path.cwd())
        try:
            result = run_stages(target, "film", json_mode)
        except CinemaError as err:
            exit_code = exit_code or err.exit_code
            if json_mode:
                output.print_json(result_json(label, None, err))
            else:
                output.error(f"{label}: {err}" if len(targets) > 1 else str(err))
            continue
        if json_mode:
            output.print_json(result_json(label, result))
        else:
            if len(targets) > 1:
                output.out.print(f"[bold]{label}[/]")
            print_result(result)
    raise typer.Exit(exit_code)


@app.command()
def status(project: Optional[Path] = ProjectOpt, json_mode: bool = JsonOpt) -> None:
    """Each shot and stage: done / stale (why) / missing."""
    try:
        data = Pipeline(open_project(project)).status().to_json()
    except CinemaError as err:
        raise fail(err) from None
    if json_mode:
        output.print_json(data)
        return
    output.out.print(f"backends: story={data['backends']['story']} keyframes={data['backends']['keyframes']} "
                     f"video={data['backends']['video']}")
    for message in data["notices"]:
        output.notice(message)
    output.out.print(f"storyboard: {output.styled_state(data['story'])}"
                     + (f"  ({'; '.join(data['story_stale_because'])})" if data["story_stale_because"] else ""))
    if data["shots"]:
        output.out.print(output.status_table(data))
    output.out.print(f"film: {output.styled_state(data['film'])}"
                     + (f"  ({'; '.join(data['film_stale_because'])})" if data["film_stale_because"] else ""))


@app.command()
def shot(
    shot_id: str = typer.Argument(..., help="Shot id, e.g. s03."),
    caption: Optional[str] = typer.Option(None, help="New caption; tag the cast as <Name>."),
    camera: Optional[str] = typer.Option(None, help='New camera, "FRAMING, MOVE", e.g. "close-up, push-in".'),
    duration: Optional[float] = typer.Option(None, help="New duration in seconds."),
    seed: Optional[int] = typer.Option(None, help="New seed."),
    transition: Optional[str] = typer.Option(None, help="How it joins the shot before: cut | crossfade | continuous."),
    regen: bool = typer.Option(False, "--regen", help="Redo this shot's keyframe and video now, then the film."),
    project: Optional[Path] = ProjectOpt,
    json_mode: bool = JsonOpt,
) -> None:
    """Show one shot, or edit its fields, or force it to be redone.

    Example: cinema shot s03 --caption "<Mara> cracks the vault, sweat on her brow"
    """
    edits = {k: v for k, v in dict(caption=caption, camera=camera, duration=duration,
                                      seed=seed, transition=transition).items() if v is not None}
    try:
        proj = open_project(project)
        Pipeline(proj)  # validates project files before anything is written
        proj.shot(shot_id)
        if edits:
            _edit_shot(proj, shot_id, edits)
        result = run_stages(proj.root, "film", json_mode, force=[shot_id]) if regen else None
        status = Pipeline(Project.open(proj.root)).status().to_json()
    except CinemaError as err:
        raise fail(err) from None
    row = next(r for r in status["shots"] if r["id"] == shot_id)
    fields = Project.open(proj.root).shot(shot_id).model_dump(mode="json")
    if json_mode:
        output.print_json({"shot": fields, "status": row, "edited": sorted(edits),
                           "rebuilt": result_json(str(proj.root), result)["rebuilt"] if result else None})
        return
    for key, value in fields.items():
        if value not in (None, False) or key == "locked":
            output.out.print(f"[bold]{key:>10}[/]  {value}")
    output.out.print(f"[bold]{'keyframe':>10}[/]  {output.styled_state(row['keyframe'])}   "
                     f"[bold]video[/] {output.styled_state(row['shot'])}")
    if row["stale_because"]:
        output.out.print(f"[bold]{'why':>10}[/]  {'; '.join(row['stale_because'])}")
    context = ", ".join(f"{c['shot']} ({c['score']:.2f}, {c['size'][0]}x{c['size'][1]})" for c in row["context"])
    output.out.print(f"[bold]{'context':>10}[/]  {context or 'none'}")
    if result:
        print_result(result)
    elif edits:
        output.out.print("edited; run `cinema render` to redo what depends on it")


def _edit_shot(project: Project, shot_id: str, edits: dict) -> None:
    from pydantic import ValidationError

    board = project.storyboard
    index = board.index(shot_id)
    data = board.shots[index].model_dump()
    data.update(edits)
    if "caption" in edits:
        data["characters"] = caption_tags(edits["caption"])  # the caption's tags are the cast
    try:
        edited = Shot.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"--{'.'.join(map(str, e['loc'])) or 'shot'}: {e['msg'].removeprefix('Value error, ')}"
                             for e in err.errors())
        raise BadInput(f"shot {shot_id}: {problems}") from None
    shots = list(board.shots)
    shots[index] = edited
    with project.lock():
        project.write_storyboard(type(board)(shots=shots))


# ---------------------------------------------------------------- bench


@bench_app.command("render")
def bench_render(
    shots: int = typer.Option(12, help="Shots in the generated project."),
    json_mode: bool = JsonOpt,
) -> None:
    """Full render vs re-render after one caption edit, and peak RSS at N and 2N shots."""
    from cinema_cli.bench.render import run_render_bench

    try:
        report = run_render_bench(shots)
    except CinemaError as err:
        raise fail(err) from None
    if json_mode:
        output.print_json(report)
    else:
        for key, value in report.items():
            output.out.print(f"{key:>32}  {value}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
