"""The `cinema` command line. Thin: parse arguments, call the library, print.

Exit codes: 0 ok, 1 failure (ffmpeg, backend, lock held), 2 bad input or usage.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Optional

import typer
from rich.text import Text

from cinema_cli.cli import direct_bench
from cinema_cli.cli import data as data_commands
from cinema_cli.cli import direct as direct_commands
from cinema_cli.cli import evaluate, finishing, machine, output, ranks, viewing
from cinema_cli.cli import memory as memory_commands
from cinema_cli.cli import train as train_commands
from cinema_cli.cli.helptext import cinema_command
from cinema_cli.cli.common import (
    JsonOpt,
    ProjectOpt,
    fail,
    open_project,
    print_result,
    result_json,
    run_pipeline,
    run_stages,
)
from cinema_cli.direct.routing import describe as describe_memory
from cinema_cli.direct.routing import directed_memory
from cinema_cli.errors import BadInput, CinemaError, disk_error
from cinema_cli.pipeline import Pipeline
from cinema_cli.project.create import create_project, example_summaries
from cinema_cli.project.project import Project
from cinema_cli.project.schema import Shot, Storyboard, caption_tags
from cinema_cli.runtime import distributed, parallel

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
# `cinema eval cuts`, `cinema eval retrieval`...: each metric registers its command here.
eval_app = typer.Typer(help="Measure quality: cut accuracy, retrieval recall, the papers' metrics, reports.",
                       no_args_is_help=True)
app.add_typer(eval_app, name="eval")

class Interrupted(BaseException):
    """Ctrl-C. Not a KeyboardInterrupt, which click would turn into "Aborted!" and exit 1."""


def _interrupted(signum: int, frame: object) -> None:
    raise Interrupted


def _redeliver_lost_interrupt(unraisable) -> None:
    """Ctrl-C that landed in code whose exceptions Python ignores (an at-fork hook, run
    when a subprocess starts) would be lost: deliver it again a moment later."""
    if isinstance(unraisable.exc_value, Interrupted):
        threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGINT)).start()
        return
    sys.__unraisablehook__(unraisable)


def main() -> None:
    signal.signal(signal.SIGINT, _interrupted)
    sys.unraisablehook = _redeliver_lost_interrupt
    try:
        cinema_command(app)(prog_name="cinema")
    except Interrupted:
        # The artifact in flight was never published (atomic writes); everything finished
        # before it is kept and recorded, so the next run resumes from there.
        output.error("interrupted: what was finished before is kept and recorded, the artifact in "
                     "progress was dropped; run the command again (e.g. `cinema render`) to resume "
                     "where it stopped")
        sys.exit(130)
    except OSError as err:
        output.error(disk_error(err))
        sys.exit(1)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the work is over: no traceback while exiting


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
        raise fail(err, json_mode) from None
    if json_mode:
        output.print_json({"project": str(root), "example": example})
    else:
        output.out.print(f"created {root}", markup=False)
        output.out.print(f"next: cd {name} && cinema render", markup=False)


@app.command("examples")
def list_examples(json_mode: bool = JsonOpt) -> None:
    """List the example stories `cinema new --example` can start from.

    Example: cinema examples
    """
    summaries = example_summaries()
    if json_mode:
        output.print_json({"examples": summaries})
        return
    for item in summaries:
        output.out.print(output.labelled(item["name"], item["title"]))
        if item["logline"]:
            output.out.print(output.shown(f"    {item['logline']}"))
    output.out.print("start one with: cinema new NAME --example EXAMPLE", markup=False)


@app.command()
def story(
    instruction: Optional[str] = typer.Argument(
        None, help='With --shot: the note for that shot, e.g. "make it night, rain on the windows".'),
    shot_id: Optional[str] = typer.Option(
        None, "--shot", help="Rewrite only this shot with the LLM, following INSTRUCTION."),
    llm: Optional[str] = typer.Option(
        None, "--llm", help="Storyboarder for this run instead of cinema.yaml's story.backend: gemini, local, offline."),
    project: Optional[Path] = ProjectOpt,
    force: bool = typer.Option(False, "--force", help="Regenerate even a hand-edited storyboard.yaml (locked shots are kept)."),
    json_mode: bool = JsonOpt,
) -> None:
    """Write storyboard.yaml from script.yaml (when missing or stale), or rewrite one shot.

    The gemini storyboarder reads its key from GEMINI_API_KEY (or GOOGLE_API_KEY).

    Examples: cinema story --llm gemini | cinema story --shot s02 "make it night"
    """
    if shot_id is None:
        if instruction is not None:
            raise fail(BadInput(f"the note {instruction!r} needs --shot ID: which shot is it for?"), json_mode)
        _stage_command(project, "story", json_mode, force_story=force, story_backend=llm)
        return
    try:
        if force:
            raise BadInput("--force regenerates the whole storyboard; it does not go with --shot")
        if not (instruction or "").strip():
            raise BadInput(f'--shot {shot_id} needs a note, e.g. cinema story --shot {shot_id} "make it night"')
        proj = open_project(project)
        pipeline = Pipeline(proj, story_backend=llm)  # validates every project file first
        pipeline.check_rewrite(shot_id)
        with proj.lock():
            rewritten = pipeline.rewrite_shot(shot_id, instruction or "")
    except CinemaError as err:
        if json_mode:
            output.print_json(result_json(str(project or Path.cwd()), None, err))
        raise fail(err) from None  # the JSON line above already carries the error
    fields = rewritten.model_dump(mode="json")
    if json_mode:
        output.print_json({"project": str(proj.root), "ok": True, "shot": fields})
        return
    for key, value in fields.items():
        if value not in (None, False):
            output.out.print(output.labelled(f"{key:>10}", value))
    output.out.print(f"rewrote {shot_id}; run `cinema render` to redo what depends on it")


@app.command()
def plan(
    project: Optional[Path] = ProjectOpt,
    explain: bool = typer.Option(False, "--explain", help="Then show each keyframe's context: the earlier "
                                 "keyframes it was drawn with, their relevance and GoldenMem sizes."),
    json_mode: bool = JsonOpt,
) -> None:
    """Draw the stale keyframes (one image per shot), each conditioned on the earlier
    keyframes most relevant to it (memory: retrieval + GoldenMem).

    Example: cinema plan --explain
    """
    if not explain:
        _stage_command(project, "keyframes", json_mode)
        return
    try:
        pipeline = Pipeline(open_project(project))
        result = run_pipeline(pipeline, "keyframes", json_mode)
        rows = pipeline.status().to_json()["shots"]
    except CinemaError as err:
        if json_mode:
            output.print_json(result_json(str(project or Path.cwd()), None, err))
        raise fail(err) from None  # the JSON line above already carries the error
    if json_mode:
        output.print_json({**result_json(str(pipeline.project.root), result),
                           "context": {row["id"]: row["context"] for row in rows}})
    else:
        print_result(result)
        output.out.print(output.context_table(rows))


@app.command()
def assemble(
    project: Optional[Path] = ProjectOpt,
    subtitles: Optional[bool] = typer.Option(
        None, "--subtitles/--no-subtitles", help="Write film.srt from the dialogue and mux it as a soft track."),
    music: Optional[Path] = typer.Option(None, "--music", help="A music bed (a file inside the project)."),
    no_music: bool = typer.Option(False, "--no-music", help="No music bed, whatever cinema.yaml says."),
    loudness: Optional[float] = typer.Option(
        None, "--loudness", min=-70, max=-5, help="Music loudness target, LUFS (EBU R128); default: cinema.yaml's music_loudness."),
    music_fade: Optional[float] = typer.Option(
        None, "--music-fade", min=0, max=30, help="Music fade in and out, seconds; default: cinema.yaml's music_fade_seconds."),
    json_mode: bool = JsonOpt,
) -> None:
    """Everything stale up to and including film.mp4 (same as render), with subtitles
    and a music bed. The flags override cinema.yaml's `assemble:` settings for this run.

    Example: cinema assemble --subtitles --music music/theme.wav --loudness -18
    """
    if music is not None and no_music:
        raise fail(BadInput("--music and --no-music contradict each other; give one"), json_mode)
    overrides = {key: value for key, value in dict(
        subtitles=subtitles, music=str(music.resolve()) if music else None,
        music_loudness=loudness, music_fade_seconds=music_fade).items() if value is not None}
    if no_music:
        overrides["music"] = None
    _stage_command(project, "film", json_mode, assemble_overrides=overrides)


def _stage_command(project: Optional[Path], until: str, json_mode: bool, **kwargs) -> None:
    try:
        result = run_stages(project, until, json_mode, **kwargs)
    except CinemaError as err:
        if json_mode:
            output.print_json(result_json(str(project or Path.cwd()), None, err))
        raise fail(err) from None  # the JSON line above already carries the error
    if json_mode:
        output.print_json(result_json(str(Project.open(project).root), result))
    else:
        print_result(result)


@app.command()
def render(
    project: Optional[list[Path]] = typer.Option(
        None, "-p", "--project", help="Project folder; repeat to render several in turn."
    ),
    gpus: Optional[str] = typer.Option(
        None, "--gpus", help="Render on N GPUs, or 'all', one process each, started by torchrun. Without "
        "a GPU, N CPU processes (previz, testing). Several nodes: run `torchrun ... -m cinema_cli render`."),
    json_mode: bool = JsonOpt,
    cp: Optional[int] = typer.Option(
        None, "--cp", min=1, max=64,
        help="Split each scene's (or shot's) transformer passes over N processes, one GPU each "
             "(context parallelism; runtime.cp.degree in cinema.yaml). Starts itself under torchrun. "
             "With --gpus G: G/N groups of N, each rendering its own scenes. Left out, a scene too big "
             "for one GPU is split over as few of the GPUs as fit.",
    ),
    cp_mode: Optional[str] = typer.Option(
        None, "--cp-mode", help="ulysses (exchanges heads; default) or ring (passes K/V; less memory)."
    ),
) -> None:
    """Build whatever is stale: story -> keyframes -> shots -> film.mp4.

    With several -p, renders each in turn, keeps going past a failed one, prints one
    JSON object per project with --json, and exits non-zero if any failed. With --gpus,
    rank 0 holds the lock and records; --json then says which rank built what.

    Examples: cinema render | cinema render --gpus all | cinema render --cp 2 | cinema render --gpus 8 --cp 2 |
    cinema render -p films/a -p films/b --json
    """
    targets: list[Optional[Path]] = list(project) if project else [None]
    world = distributed.world_from_env()
    cp_asked = cp is not None or cp_mode is not None or configured_cp(targets) > 1
    if gpus is not None:
        try:
            if world is not None:
                raise ranks.gpus_under_torchrun()
            plan = ranks.check(targets, gpus, cp, cp_mode)
        except CinemaError as err:
            raise fail(err, json_mode) from None
        if plan.processes > 1:
            for notice in plan.notices if not json_mode else ():
                output.notice(notice)
            raise typer.Exit(ranks.launch(plan, gpus, json_mode))
    elif world is None:
        if not cp_asked and len(targets) == 1:  # a scene too big for one of several GPUs: split it
            try:
                cp, notice = ranks.plain_split(targets[0])
            except CinemaError as err:  # too big for all of them
                raise fail(err, json_mode) from None
            if notice and not json_mode:
                output.notice(notice)
            cp_asked = cp > 1
        if cp_asked:
            raise typer.Exit(render_context_parallel(targets, json_mode, cp, cp_mode))
    elif not distributed.scheduled(world, cp or configured_cp(targets)):  # torchrun: one group, rank 0 leads
        raise typer.Exit(render_context_parallel(targets, json_mode, cp, cp_mode))
    raise typer.Exit(render_ranks(targets, json_mode, world, cp, cp_mode))


def render_ranks(targets: list[Optional[Path]], json_mode: bool, world, cp: Optional[int],
                 cp_mode: Optional[str]) -> int:
    """One process, or a rank of the scheduler (torchrun): rank 0 renders, handing jobs to the
    builders; the others make them, or, in a context-parallel group, follow their leader."""
    from cinema_cli.pipeline.parallel_render import with_cp

    def opened(target: Optional[Path]) -> Project:
        proj = open_project(target)
        with_cp(proj, cp, cp_mode)
        return proj

    settings, first = None, None
    if world is not None and (cp is not None or cp_mode is not None or configured_cp(targets) > 1):
        try:
            if len(targets) > 1:
                raise BadInput("render --cp renders one project at a time; give one -p")
            first = opened(targets[0])
            settings = first.config.runtime.cp
            parallel.groups_of(world.size, settings.degree)
        except CinemaError as err:  # every rank finds it: rank 0 says it
            if world.is_coordinator:
                fail(err, json_mode)
            return distributed.report_exit(err.exit_code)
    group = None
    if world is not None:
        group = distributed.join(world, settings, first.config.runtime.device if first is not None else "auto")
    if group is not None and not world.is_coordinator:
        for target in targets:  # rank 0 reports; a worker makes what it is handed
            group.serve(lambda target=target: Pipeline(opened(target)))
        return 0
    exit_code = 0
    for target in targets:  # (`first`: the one project of a context-parallel render)
        exit_code = render_one(target, json_mode, len(targets) > 1, project=first, group=group) or exit_code
    return distributed.report_exit(exit_code)


def render_one(target: Optional[Path], json_mode: bool, several: bool, project: Optional[Project] = None,
               group=None) -> int:
    """Render one project and print its result; its exit code. `group`: rank 0's side of
    the ranks torchrun started, which then build the jobs."""
    label = str(target) if target is not None else str(Path.cwd())
    ranked = None  # rank 0's session with the other ranks
    try:
        try:
            with group.session() if group is not None else contextlib.nullcontext() as ranked:
                result = run_stages(target, "film", json_mode, project=project,
                                    executor_for=ranked.executor_for if ranked is not None else None)
        except OSError as os_err:  # a read-only folder, a full disk: this project fails, the batch goes on
            raise CinemaError(disk_error(os_err)) from None
    except CinemaError as err:
        if json_mode:
            output.print_json({**result_json(label, None, err), **ranks_json(group, ranked)})
        else:
            output.error(f"{label}: {err}" if several else str(err))
        return err.exit_code
    if json_mode:
        output.print_json({**result_json(label, result), **ranks_json(group, ranked)})
    else:
        if several:
            output.out.print(output.shown(label), style="bold")
        print_result(result)
    return 0


def ranks_json(group, session) -> dict:
    """Under torchrun: how many ranks, and which built what in how many seconds (with
    context parallelism, a build's rank is its group's leader: `cp_groups` lists them)."""
    if group is None:
        return {}
    groups = {"cp_groups": [list(g) for g in group.groups]} if group.groups is not None else {}
    return {"ranks": group.world.size, **groups, "builds": session.log if session is not None else []}


def configured_cp(targets: list[Optional[Path]]) -> int:
    """cinema.yaml's runtime.cp.degree of a single project (1 when unreadable: render says why)."""
    if len(targets) != 1:
        return 1
    try:
        return open_project(targets[0]).config.runtime.cp.degree
    except CinemaError:
        return 1


def render_context_parallel(targets: list[Optional[Path]], json_mode: bool, cp: Optional[int],
                            cp_mode: Optional[str]) -> int:
    """`render --cp N`: start N processes, or, as one of them, lead (rank 0) or follow."""
    from cinema_cli.pipeline import parallel_render
    from cinema_cli.runtime.parallel import world

    try:
        if len(targets) > 1:
            raise BadInput("render --cp renders one project at a time; give one -p")
        proj = open_project(targets[0])
        settings = parallel_render.with_cp(proj, cp, cp_mode)
        if parallel_render.needs_launch(settings):  # the degree on its command line, if it was decided here
            args = sys.argv[1:] + ([] if "--cp" in sys.argv else ["--cp", str(settings.degree)])
            return parallel_render.launch(settings, args)
        if settings.degree > 1:
            parallel_render.start_group(settings, proj.config.runtime.device)
    except CinemaError as err:
        fail(err, json_mode)
        return distributed.report_exit(err.exit_code)
    if settings.degree > 1 and world()[0] > 0:
        parallel_render.follow(proj)
        return 0
    with parallel_render.leading():
        code = render_one(targets[0], json_mode, False, project=proj)
    return distributed.report_exit(code)


@app.command()
def status(project: Optional[Path] = ProjectOpt, json_mode: bool = JsonOpt) -> None:
    """Each shot and stage: done / stale (why) / missing."""
    try:
        proj = open_project(project)
        data = Pipeline(proj).status().to_json()
        # Its own schema only: a storyboard the script no longer matches is stale, not bad.
        shots = {shot.id: shot for shot in proj.storyboard_unchecked.shots} if data["shots"] and not json_mode else {}
    except CinemaError as err:
        raise fail(err, json_mode) from None
    if json_mode:
        output.print_json(data)
        return
    output.out.print(f"backends: story={data['backends']['story']} keyframes={data['backends']['keyframes']} "
                     f"video={data['backends']['video']}")
    for message in data["notices"]:
        output.notice(message)
    why = f"  ({'; '.join(data['story_stale_because'])})" if data["story_stale_because"] else ""
    output.out.print(Text.from_markup(f"storyboard: {output.styled_state(data['story'], data['story_edited'])}")
                     + output.shown(why))
    if data["story"] == "stale" and data["story_edited"]:
        output.out.print("  expected: your edits to storyboard.yaml are kept, and `cinema render` renders them; "
                         "`cinema story --force` regenerates it from script.yaml (shots with locked: true stay)",
                         markup=False)
    if data["shots"]:
        output.out.print(output.status_table(data, shots))
        output.out.print(output.length_summary(list(shots.values()), proj.config.assemble.crossfade_seconds),
                         markup=False)
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
    dialogue: Optional[str] = typer.Option(None, help='New dialogue line (subtitles); "" removes it.'),
    characters: Optional[str] = typer.Option(
        None, help="Who is in the shot, comma-separated (every <Name> of the caption must be among them)."),
    lock: Optional[bool] = typer.Option(
        None, "--lock/--unlock", help="Keep this shot unchanged when `cinema story --force` regenerates the rest."),
    regen: bool = typer.Option(False, "--regen", help="Redo this shot's keyframe and video now (and the film, if they came out different)."),
    project: Optional[Path] = ProjectOpt,
    json_mode: bool = JsonOpt,
) -> None:
    """Show one shot, or edit its fields, or force it to be redone.

    Example: cinema shot s03 --caption "<Mara> cracks the vault, sweat on her brow"
    """
    edits = {k: v for k, v in dict(caption=caption, camera=camera, duration=duration, seed=seed,
                                      transition=transition, locked=lock).items() if v is not None}
    if dialogue is not None:
        edits["dialogue"] = dialogue.strip() or None
    if characters is not None:
        edits["characters"] = [name.strip() for name in characters.split(",") if name.strip()]
    try:
        proj = open_project(project)
        pipeline = Pipeline(proj)  # validates project files before anything is written
        proj.shot(shot_id)
        if edits:
            _edit_shot(proj, shot_id, edits)
        result = run_pipeline(pipeline, "film", json_mode, force=[shot_id]) if regen else None
        status = pipeline.status().to_json()
    except CinemaError as err:
        raise fail(err, json_mode) from None
    row = next(r for r in status["shots"] if r["id"] == shot_id)
    fields = proj.shot(shot_id).model_dump(mode="json")
    memory = directed_memory(proj, shot_id)
    if json_mode:
        output.print_json({"shot": fields, "status": row, "edited": sorted(edits), "memory": memory,
                           "rebuilt": result_json(str(proj.root), result)["rebuilt"] if result else None})
        return
    for label, value in output.shot_fields(fields):
        output.out.print(output.labelled(f"{label:>10}", value))
    output.out.print(f"[bold]{'keyframe':>10}[/]  {output.styled_state(row['keyframe'])}   "
                     f"[bold]video[/] {output.styled_state(row['shot'])}")
    if row["stale_because"]:
        output.out.print(output.labelled(f"{'why':>10}", "; ".join(row["stale_because"])))
    context = ", ".join(f"{c['shot']} (relevance {c['score']:.2f}, {c['size'][0]}x{c['size'][1]} px)"
                        for c in row["context"])
    output.out.print(output.labelled(f"{'context':>10}", context or "no earlier keyframes"))
    if memory is not None:
        output.out.print(output.labelled(f"{'memory':>10}", describe_memory(memory)))
    if result:
        print_result(result)
    elif edits:
        output.out.print("edited; run `cinema render` to redo what depends on it")


def _edit_shot(project: Project, shot_id: str, edits: dict) -> None:
    _edited_storyboard(project, shot_id, edits)  # bad input is refused before the lock is touched
    with project.lock():  # then the edit is made again on storyboard.yaml as it is now
        project.write_storyboard(_edited_storyboard(project, shot_id, edits))


def _edited_storyboard(project: Project, shot_id: str, edits: dict) -> Storyboard:
    from pydantic import ValidationError

    board = project.storyboard
    project.shot(shot_id)  # still there?
    index = board.index(shot_id)
    data = board.shots[index].model_dump()
    data.update(edits)
    if "caption" in edits and "characters" not in edits:
        data["characters"] = caption_tags(edits["caption"])  # the caption's tags are the cast
    try:
        edited = Shot.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"--{'.'.join(map(str, e['loc'])) or 'shot'}: {e['msg'].removeprefix('Value error, ')}"
                             for e in err.errors())
        raise BadInput(f"shot {shot_id}: {problems}") from None
    shots = list(board.shots)
    shots[index] = edited
    edited_board = Storyboard(shots=shots)
    project.validate_storyboard(edited_board)
    return edited_board


# ---------------------------------------------------------------- bench


@bench_app.command("render")
def bench_render(
    shots: Optional[int] = typer.Option(None, min=1, help="Shots in the generated project (default 12; 24 with --gpus)."),
    gpus: Optional[int] = typer.Option(
        None, "--gpus", min=2, help="Instead: the speedup of `render --gpus N` over one process."),
    no_preview_memory: bool = typer.Option(
        False, "--no-preview-memory",
        help="With --gpus: sketch keyframes plan no memory context (preview_memory: false), so none waits."),
    json_mode: bool = JsonOpt,
) -> None:
    """Full render vs re-render after one caption edit, and peak RSS at N and 2N shots;
    with --gpus N, one process vs N ranks on the same film."""
    from cinema_cli.bench.render import run_ranks_bench, run_render_bench

    try:
        if gpus is not None:
            distributed.processes_for(str(gpus), distributed.cuda_devices(), distributed.cpu_cores())
        elif no_preview_memory:
            raise BadInput("--no-preview-memory goes with --gpus N")
        report = (run_ranks_bench(shots or 24, gpus, preview_memory=not no_preview_memory) if gpus is not None
                  else run_render_bench(shots or 12))
    except CinemaError as err:
        raise fail(err, json_mode) from None
    if json_mode:
        output.print_json(report)
    else:
        for key, value in report.items():
            output.out.print(f"{key:>32}  {value}")


@bench_app.command("attention")
def bench_attention(
    shots: str = typer.Option("1,2,4,8,13,16", help="Scene sizes to measure, comma-separated."),
    tokens: Optional[int] = typer.Option(None, help="Tokens per latent frame (default: 1560 on a GPU, 96 on a CPU)."),
    repeats: int = typer.Option(5, min=1, help="Timed runs per point; the best counts."),
    threads: int = typer.Option(1, min=0, help="CPU threads for the timings (0: torch's default)."),
    json_mode: bool = JsonOpt,
) -> None:
    """Sparse inter-shot attention vs full attention: time, peak memory, measured and
    theoretical speedup, for scenes of 5-latent-frame shots."""
    from cinema_cli.bench.attention import run_attention_bench

    try:
        counts = tuple(int(n) for n in shots.split(","))
        if not counts or min(counts) < 1:
            raise ValueError
    except ValueError:
        raise fail(BadInput(f"--shots {shots!r}: expected positive integers like 1,2,4,8"), json_mode) from None
    try:
        report = run_attention_bench(counts, tokens, repeats, threads or None)
    except CinemaError as err:
        raise fail(err, json_mode) from None
    if json_mode:
        output.print_json(report)
        return
    rows = report.pop("rows")
    for key, value in report.items():
        output.out.print(f"{key:>28}  {value}")
    columns = list(rows[0])
    output.out.print("  ".join(f"{c:>{max(len(c), 8)}}" for c in columns))
    for row in rows:
        output.out.print("  ".join(f"{row[c]!s:>{max(len(c), 8)}}" for c in columns))


@bench_app.command("cp")
def bench_cp(
    degree: int = typer.Option(2, "--cp", min=2, max=64, help="Processes the scene is split over."),
    shots: int = typer.Option(8, min=1, help="Shots of 5 latent frames in the scene."),
    tokens: int = typer.Option(96, min=1, help="Tokens per latent frame (1560 is 480x832)."),
    repeats: int = typer.Option(3, min=1, help="Timed runs per process; the best counts."),
    json_mode: bool = JsonOpt,
) -> None:
    """Context parallelism: one scene's sparse self-attention split over N processes
    (Ulysses, ring) against one process: time, tokens/s and peak memory per process;
    and with the backward pass, as training runs it (Ulysses)."""
    from cinema_cli.bench.cp import run_cp_bench

    try:
        report = run_cp_bench(degree, shots, tokens, repeats)
    except CinemaError as err:
        raise fail(err, json_mode) from None
    if json_mode:
        output.print_json(report)
        return
    single = report["single"]
    output.out.print(f"single: {single['seconds']} s, {single['tokens_per_second']} tokens/s, {single['peak_mb']} MB")
    for mode, result in report["modes"].items():
        for rank in result["ranks"]:
            output.out.print(f"{mode} rank {rank['rank']}: {rank['seconds']} s, {rank['tokens_per_second']} tokens/s, "
                             f"{rank['peak_mb']} MB")
        output.out.print(f"{mode}: speedup {result['speedup']}, peak per rank / single "
                         f"{result['peak_mb_per_rank_over_single']}")
    training = report["training"]
    output.out.print(f"training (forward + backward): single {training['single']['seconds']} s; ulysses speedup "
                     f"{training['ulysses']['speedup']}, peak per rank / single "
                     f"{training['ulysses']['peak_mb_per_rank_over_single']}")


finishing.register(app, eval_app)  # board, export, eval cuts
machine.register(app, bench_app)  # doctor, bench keyframes
memory_commands.register(eval_app, bench_app)  # eval retrieval, bench memory
evaluate.register(eval_app)  # eval text, consistency, aesthetic, judge, stress, report
data_commands.register(app, bench_app)  # data prepare/status/show, bench data
viewing.register(app)  # shots, play (open, preview)
train_commands.register(app, bench_app)  # train keyframes, bench train
direct_bench.register(bench_app)  # bench direct
direct_commands.register(app)  # direct

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
