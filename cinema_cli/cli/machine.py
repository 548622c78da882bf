"""Commands about the machine and its models: `cinema doctor`, `cinema bench keyframes`,
`cinema bench video`.
Thin, like the rest of the CLI: parse, call the library, print."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from cinema_cli.cli import output
from cinema_cli.cli.common import JsonOpt, ProjectOpt, fail
from cinema_cli.errors import BadInput, CinemaError, NotAProject
from cinema_cli.project.project import Project
from cinema_cli.project.schema import CinemaConfig


def doctor(
    project: Optional[Path] = ProjectOpt,
    smoke: bool = typer.Option(False, "--smoke", help="Also run the real pipelines on their tiny presets end to end."),
    json_mode: bool = JsonOpt,
) -> None:
    """What this machine can run: GPUs and free memory, ffmpeg, optional packages, the
    configured weights present locally, API keys set (never their values).

    Inside a project (or with -p) it checks that project's models, else the defaults.
    Exits 1 when ffmpeg is missing or a smoke run fails. Example: cinema doctor --smoke
    """
    from cinema_cli.runtime.doctor import report
    from cinema_cli.runtime.doctor_smoke import smoke as run_smoke

    try:
        proj = _project(project)
        config = proj.config if proj else CinemaConfig()
    except CinemaError as err:
        raise fail(err, json_mode) from None
    data = report(config, str(proj.root) if proj else None)
    if smoke:
        data["smoke"] = run_smoke(config.runtime)
    data["ok"] = data["ffmpeg"]["version"] is not None and all(s["ok"] for s in data.get("smoke", []))
    if json_mode:
        output.print_json(data)
    else:
        _print_report(data)
    raise typer.Exit(0 if data["ok"] else 1)


def _project(path: Optional[Path]) -> Optional[Project]:
    """The project named, or the one found from here; None outside one when none is named."""
    try:
        return Project.open(path)
    except NotAProject:
        if path is not None:
            raise
        return None


def _print_report(data: dict) -> None:
    say = output.out.print
    say(f"[bold]project[/]  {escape(data['project'] or 'none (checking the defaults)')}")
    torch_info = data["torch"]
    say(f"[bold]torch[/]    {torch_info['version']} (CUDA {torch_info['cuda'] or 'none'})")
    for gpu in data["gpus"]:
        free = f"{gpu['free_gib']} of {gpu['total_gib']} GiB free"
        say(f"[bold]gpu[/]      {gpu['index']}: {escape(gpu['name'])}, {free}")
    if not data["gpus"]:
        say("[bold]gpu[/]      none (keyframes and shots fall back to the CPU previz: sketch, animatic)")
    ffmpeg = data["ffmpeg"]
    say(f"[bold]ffmpeg[/]   {ffmpeg['version'] or '[red]not working[/]'}  {escape(ffmpeg['path'])}")
    for name, info in data["packages"].items():
        version = info["version"] or "[dim]not installed[/]"
        say(f"[bold]package[/]  {name} {version}  [dim]{escape(info['for'])}[/]")
    for row in data["weights"]:
        state = "[green]present[/]" if row["present"] else "[yellow]not downloaded[/]"
        say(f"[bold]weights[/]  {row['stage']} ({row['backend']}): {escape(row['model'])} {state}")
    for line in data.get("experimental", []):
        say(f"[bold]note[/]     [yellow]{escape(line)}[/]")
    for name, present in data["api_keys"].items():
        say(f"[bold]api key[/]  {name}: {'set' if present else 'not set'}")
    for run in data.get("smoke", []):
        state = "[green]ok[/]" if run["ok"] else "[red]failed[/]"
        say(f"[bold]smoke[/]    {run['name']}: {state} in {run['seconds']}s  {escape(run['detail'])}")


def bench_keyframes(
    histories: str = typer.Option("0,4,16,48", help="History lengths (earlier keyframes), comma-separated."),
    steps: int = typer.Option(4, min=1, help="Denoising steps per keyframe (klein's distilled default: 4)."),
    repeats: int = typer.Option(5, min=1, help="Rounds over all rows; each row's fastest counts."),
    json_mode: bool = JsonOpt,
) -> None:
    """Seconds per keyframe against history length, reference K/V cache on and off, on a
    FLUX.2-klein-shaped transformer with random weights (bf16 and fp32 and peak memory on a GPU)."""
    from cinema_cli.bench.keyframes import run_keyframes_bench

    try:
        lengths = tuple(int(h) for h in histories.split(","))
        if not lengths or min(lengths) < 0:
            raise ValueError
    except ValueError:
        raise fail(BadInput(f"--histories: expected non-negative whole numbers like 0,4,16,48, got {histories!r}"),
                   json_mode) from None
    report = run_keyframes_bench(lengths, steps, repeats)
    if json_mode:
        output.print_json(report)
        return
    for run in report["runs"]:
        output.out.print(f"{run['dtype']:>9} history {run['history']:>3} ({run['context_frames']} frames, "
                         f"{run['context_tokens']} tokens) cache {'on ' if run['cache'] else 'off'}  "
                         f"{run['seconds_per_keyframe']:.3f} s/keyframe", markup=False)
    output.out.print(f"ratio vs history 0: {report['ratio_vs_history_0']}  (target: {report['target']})", markup=False)


def bench_video(
    repeats: int = typer.Option(3, min=1, help="Timed forwards per row after a warm-up; the fastest counts."),
    steps: int = typer.Option(40, min=1, help="Denoising steps a clip takes (for seconds per clip)."),
    json_mode: bool = JsonOpt,
) -> None:
    """Seconds and peak memory of one transformer forward for a wan shot (81 frames) and a
    holocine scene (5 and 13 shots, full vs sparse), at Wan2.2 A14B's shape on a GPU (with
    TFLOP/s and MFU), on a narrowed model on a CPU."""
    from cinema_cli.bench.video import run_video_bench

    report = run_video_bench(repeats, steps)
    if json_mode:
        output.print_json(report)
        return
    for run in report["runs"]:
        label = run["model"] + (f" {run['variant']} {run['shots']} shots" if run["model"] == "holocine" else "")
        mfu = f"  MFU {run['mfu']}" if run.get("mfu") is not None else ""
        output.out.print(f"{label:>26}  {run['video_tokens']:>7} tokens  {run['seconds_per_forward']:.4f} s/forward  "
                         f"{run['peak_gib']} GiB{mfu}", markup=False)
    output.out.print(f"sparse vs full: {report['sparse_speedup_vs_full']}", markup=False)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command()(doctor)
    bench_app.command("keyframes")(bench_keyframes)
    bench_app.command("video")(bench_video)
