"""What the command modules share: the common options, error reporting, progress, and
running the stages of one project. Thin, like the rest of cli/."""

from __future__ import annotations

import contextlib
from pathlib import Path
from collections.abc import Callable
from typing import Optional

import typer

from cinema_cli.cli import output
from cinema_cli.errors import CinemaError
from cinema_cli.pipeline import Pipeline, RenderResult
from cinema_cli.pipeline.jobs import Executor
from cinema_cli.project.project import Project

ProjectOpt = typer.Option(None, "-p", "--project", help="Project folder (default: found from the current folder).")
JsonOpt = typer.Option(False, "--json", help="Print JSON for scripts instead of tables.")



@contextlib.contextmanager
def reporting(json_mode: bool):
    """The progress reporter for this terminal: bars on a TTY, plain lines otherwise."""
    if output.err.is_terminal and not json_mode:
        with output.RichReporter() as reporter:
            yield reporter
    else:
        yield output.PlainReporter()


def fail(err: CinemaError, json_mode: bool = False) -> typer.Exit:
    """Report `err` (also as a JSON object on stdout for scripts) and exit with its code."""
    output.error(str(err))
    if json_mode:
        output.print_json({"ok": False, "error": str(err), "exit_code": err.exit_code})
    return typer.Exit(err.exit_code)


def open_project(path: Optional[Path]) -> Project:
    return Project.open(path)


def run_stages(project_dir: Optional[Path], until: str, json_mode: bool, *, force=(), force_story=False,
               story_backend: Optional[str] = None, assemble_overrides: Optional[dict] = None,
               project: Optional[Project] = None,
               executor_for: Optional[Callable[[Pipeline], Executor]] = None) -> RenderResult:
    """Validate, lock, and run the stages up to `until`; the shared body of story, plan,
    render, assemble and shot --regen. `project`: one already opened (with settings for this run)."""
    # Every project file is validated before the lock (or anything else) is written.
    pipeline = Pipeline(project or open_project(project_dir), story_backend=story_backend,
                        assemble_overrides=assemble_overrides)
    return run_pipeline(pipeline, until, json_mode, force=force, force_story=force_story, executor_for=executor_for)


def run_pipeline(pipeline: Pipeline, until: str, json_mode: bool, *, force=(), force_story=False,
                 executor_for: Optional[Callable[[Pipeline], Executor]] = None) -> RenderResult:
    """Lock the project and run `pipeline` up to `until`, showing its progress and notices.
    `executor_for`: the executor to build with (default: this process, job after job)."""
    with reporting(json_mode) as reporter:
        pipeline.reporter = reporter
        executor = executor_for(pipeline) if executor_for is not None else None
        pipeline.check_storyboard(force_story=force_story)
        pipeline.check_inputs(until)
        shown = len(pipeline.notices)
        for message in pipeline.notices:
            reporter.notice(message)
        with pipeline.project.lock():
            result = pipeline.run(until=until, force=force, force_story=force_story, executor=executor)
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
        output.out.print(f"film: {result.film}", markup=False)
