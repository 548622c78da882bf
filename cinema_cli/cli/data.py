"""`cinema data prepare / status / show` and `cinema bench data`. Thin: parse, call
cinema_cli.data, print."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import typer

from cinema_cli.cli import output
from cinema_cli.cli.common import JsonOpt, fail
from cinema_cli.errors import CinemaError

data_app = typer.Typer(help="Build training datasets from films: shots, keyframes, captions, shards.",
                       no_args_is_help=True)


@data_app.command("prepare")
def prepare(
    films: list[Path] = typer.Argument(..., help="Film files (any format ffmpeg reads)."),
    out: Path = typer.Option(..., "-o", "--output", help="Dataset folder (created, or resumed)."),
    cast: Optional[Path] = typer.Option(None, "--cast", help="Cast YAML: `characters:`, a list with a name and description each, that captions may tag."),
    captions: Optional[str] = typer.Option(None, "--captions", help="gemini | local | sidecar | none (default: dataset.yaml's, else none)."),
    local_model: Optional[Path] = typer.Option(None, "--local-model", help="With --captions local: a transformers vision-language model folder (Qwen2-VL, SmolVLM, LLaVA...)."),
    detector: Optional[str] = typer.Option(None, "--detector", help="Shot boundaries: auto (default: transnetv2 on CUDA, scenedetect on a CPU), transnetv2 or scenedetect."),
    device: Optional[str] = typer.Option(None, "--device", help="Where TransNetV2 runs: auto, cpu, cuda."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Films prepared in parallel processes."),
    json_mode: bool = JsonOpt,
) -> None:
    """Films to a dataset: shots, keyframes, filters, captions, multi-shot samples, shards.

    Re-running does only what changed; a killed run resumes.

    Examples: cinema data prepare films/*.mkv -o ds --captions gemini --cast cast.yaml -j 4

    cinema data prepare film.mkv -o ds --captions local --local-model ~/models/Qwen2-VL-2B-Instruct
    """
    from cinema_cli.data.prepare import prepare as run

    overrides = {"captions": {"backend": captions, "local_model": str(local_model.resolve()) if local_model else None},
                 "boundaries": {"detector": detector, "device": device}}

    bars = FilmBars(len(set(films))) if output.err.is_terminal and not json_mode else None

    def film_done(film: str, entry: dict) -> None:
        if bars:
            bars.film_done(film)
        if not json_mode:
            done = ", ".join(entry.get("worked", [])) or "nothing (up to date)"
            why = f" ({entry['why']})" if entry.get("why") else ""
            output.err.print(f"{film}: {entry['state']}{why}; did {done}", markup=False)

    try:
        with bars or contextlib.nullcontext():
            result = run(out, films, overrides=overrides, cast_file=cast, workers=workers, on_film=film_done,
                         on_progress=bars.step if bars else None)
    except CinemaError as err:
        raise fail(err, json_mode) from None
    failed = {f: e for f, e in result.films.items() if e["state"] != "done"}
    code = max((e.get("exit_code", 1) for e in failed.values()), default=0)
    if json_mode:
        output.print_json({"ok": not failed, "dataset": str(result.dataset), "films": result.films})
    else:
        output.out.print(f"{len(result.films) - len(failed)} of {len(result.films)} film(s) done in {result.dataset}",
                         markup=False)
    raise typer.Exit(code)


class FilmBars:
    """On a terminal: a bar for the films, and one per film in flight with its step and
    how far it is (TransNetV2's frames, then shots)."""

    def __init__(self, films: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=output.err)
        self.films = self.progress.add_task("films", total=films)
        self.tasks: dict[str, object] = {}

    def __enter__(self) -> "FilmBars":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def step(self, film: str, step: str, done: int, total: int) -> None:
        if film not in self.tasks:
            self.tasks[film] = self.progress.add_task(film, total=total)
        unit = "frames" if step == "boundaries" else "shots"
        self.progress.update(self.tasks[film], description=f"  {film}: {step} ({unit})", completed=done, total=total,
                             refresh=True)  # a fast film's shots are shown too, not skipped between two redraws

    def film_done(self, film: str) -> None:
        if film in self.tasks:
            self.progress.remove_task(self.tasks.pop(film))
        self.progress.advance(self.films)


@data_app.command("status")
def status(dataset: Path = typer.Argument(..., help="Dataset folder."), json_mode: bool = JsonOpt) -> None:
    """Films done / pending / failed (why), shots kept and dropped by reason, hours."""
    from cinema_cli.data.report import status as read

    try:
        data = read(dataset)
    except CinemaError as err:
        raise fail(err, json_mode) from None
    if json_mode:
        output.print_json(data)
        return
    output.out.print(f"{data['films']} film(s), {data['hours']:.3f} h: {len(data['done'])} done, "
                     f"{len(data['pending'])} pending, {len(data['failed'])} failed", markup=False)
    for film, why in data["why"].items():
        output.out.print(f"  {film}: {why}", markup=False)
    dropped = ", ".join(f"{reason} {n}" for reason, n in data["dropped"].items()) or "none"
    output.out.print(f"shots: {data['shots']}, kept {data['kept']}; dropped: {dropped}", markup=False)
    detectors = ", ".join(f"{name} ({n} film(s))" for name, n in data["detectors"].items()) or "none yet"
    output.out.print(f"shot boundaries by: {detectors}", markup=False)
    samples = ", ".join(f"{t} s: {n}" for t, n in data["multishot_samples"].items()) or "none"
    output.out.print(f"multi-shot samples: {samples}", markup=False)


@data_app.command("show")
def show(dataset: Path = typer.Argument(..., help="Dataset folder."),
         film: Optional[str] = typer.Option(None, "--film", help="Only this film (its id in the dataset)."),
         json_mode: bool = JsonOpt) -> None:
    """Contact sheets (PNG) and a page (HTML): keyframes, captions, boundaries, why dropped."""
    from cinema_cli.data.report import show as write

    try:
        data = write(dataset, film)
    except CinemaError as err:
        raise fail(err, json_mode) from None
    if json_mode:
        output.print_json({"ok": True, **data})
        return
    output.out.print("\n".join([f"page: {data['html']}", *(f"sheet: {s}" for s in data["sheets"])]), markup=False)


def bench_data(
    minutes: str = typer.Option("10,30", help="Lengths of the generated films, in minutes."),
    detector: str = typer.Option("auto", help="Shot boundaries: auto, transnetv2 or scenedetect."),
    json_mode: bool = JsonOpt,
) -> None:
    """Seconds of work per hour of source and peak RSS, on generated films (no captions)."""
    from cinema_cli.bench.data import run_data_bench

    try:
        report = run_data_bench([float(m) for m in minutes.split(",")], detector)
    except (CinemaError, ValueError) as err:
        raise fail(err if isinstance(err, CinemaError) else CinemaError(str(err)), json_mode) from None
    if json_mode:
        output.print_json(report)
        return
    for key, value in report.items():
        output.out.print(f"{key:>32}  {value}", markup=False)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
    bench_app.command("data")(bench_data)
