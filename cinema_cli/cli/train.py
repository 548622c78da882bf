"""`cinema train keyframes`. Thin: resolve the settings, check the dataset and run folder,
call cinema_cli.train, show progress. Also runs under `accelerate launch -m cinema_cli`
or `torchrun -m cinema_cli`: every process runs this, rank 0 prints and writes."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Optional

import typer

from cinema_cli.cli import output
from cinema_cli.cli.common import JsonOpt, fail
from cinema_cli.errors import CinemaError

train_app = typer.Typer(help="Fine-tune models on datasets from `cinema data prepare`.", no_args_is_help=True)


def _ints(text: Optional[str], flag: str) -> Optional[list[int]]:
    from cinema_cli.errors import BadInput

    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise BadInput(f"{flag} takes comma-separated whole numbers, got {text!r}") from None


def _size(text: str) -> tuple[int, int]:
    from cinema_cli.errors import BadInput

    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise BadInput(f"--size takes HEIGHTxWIDTH, got {text!r}") from None
    if height < 16 or width < 16 or height % 16 or width % 16:
        raise BadInput(f"--size: height and width must be multiples of 16, got {text!r}")
    return height, width


@train_app.command("keyframes")
def keyframes(
    dataset: Path = typer.Argument(..., help="A dataset folder written by `cinema data prepare`."),
    base: Optional[str] = typer.Option(None, "--base", help="FLUX.2 klein: a diffusers folder or hub id, or `tiny`."),
    out: Path = typer.Option(..., "-o", "--output", help="Run folder (new, or the run to --resume)."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="train.yaml: settings over the paper's defaults."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in -o from its last checkpoint."),
    context: Optional[str] = typer.Option(None, "--context", help="Pairs per sequence, per stage: e.g. 1,8,16,32."),
    stage_steps: Optional[str] = typer.Option(None, "--stage-steps", help="Steps of each stage: e.g. 1000,1000,1000,1000."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Sequences per step over all processes."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate."),
    rank: Optional[int] = typer.Option(None, "--rank", help="LoRA rank."),
    method: Optional[str] = typer.Option(None, "--method", help="lora (default) or full."),
    size: Optional[str] = typer.Option(None, "--size", help="Training frames HEIGHTxWIDTH (default 400x800)."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="Steps between checkpoints."),
    gradient_checkpointing: Optional[bool] = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    json_mode: bool = JsonOpt,
) -> None:
    """Train Captain Cinema's interleaved keyframe model (LoRA on FLUX.2 klein).

    Examples: cinema train keyframes ds --base black-forest-labs/FLUX.2-klein-4B -o runs/mystory
              accelerate launch -m cinema_cli train keyframes ds --base ... -o runs/mystory --resume
    """
    from cinema_cli.train import config as train_config
    from cinema_cli.train import run as run_folder
    from cinema_cli.train.keyframes import KeyframeTraining
    from cinema_cli.train.loop import train

    main = int(os.environ.get("RANK", "0")) == 0
    try:
        height, width = _size(size) if size is not None else (None, None)
        overrides = {"context": _ints(context, "--context"), "stage_steps": _ints(stage_steps, "--stage-steps"),
                     "batch_size": batch_size, "optimizer.lr": lr, "lora.rank": rank, "method": method,
                     "height": height, "width": width, "checkpoint_every": checkpoint_every,
                     "gradient_checkpointing": gradient_checkpointing, "seed": seed}
        if resume:
            given = [k for k, v in overrides.items() if v is not None] + (["--config"] if config_file else [])
            if given:
                from cinema_cli.errors import BadInput

                raise BadInput(f"a resumed run keeps its saved settings; drop {', '.join(given)}")
            config = run_folder.check(out, True, "keyframes", None, base, dataset)
        else:
            config = train_config.resolve(base, config_file, overrides)
            if main:  # the others would find the folder rank 0 has begun to write
                run_folder.check(out, False, "keyframes", config, base, dataset)
        family = KeyframeTraining(config, dataset)  # reads and checks the dataset and stages
        with run_folder.lock(out) if main else contextlib.nullcontext():
            if main and not resume:
                run_folder.start(out, "keyframes", config, dataset)
            if main and not json_mode:
                output.err.print(f"sequences per context (dynamic stride vs consecutive): {family.report}",
                                 markup=False)
            with _progress(config.steps, main and not json_mode) as on_step:
                result = train(family, out, resume=resume, on_step=on_step)
    except CinemaError as err:
        raise fail(err, json_mode) from None
    if main and json_mode:
        output.print_json({"ok": True, **result, "sequences": family.report})


@train_app.command("video")
def video(
    dataset: Path = typer.Argument(..., help="A dataset folder written by `cinema data prepare` (multi-shot samples)."),
    base: Optional[str] = typer.Option(None, "--base", help="Wan: a diffusers folder or hub id (T2V for scene, "
                                       "I2V for keyframes), or `tiny`."),
    mode: Optional[str] = typer.Option(None, "--mode", help="scene (HoloCine) or keyframes (Captain Cinema)."),
    out: Path = typer.Option(..., "-o", "--output", help="Run folder (new, or the run to --resume)."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="train.yaml: settings over the recipe's defaults."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in -o from its last checkpoint."),
    expert: Optional[str] = typer.Option(None, "--expert", help="Wan2.2 expert(s) to train: high, low or both."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimizer steps."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Samples per step over all processes."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (default 1e-5)."),
    rank: Optional[int] = typer.Option(None, "--rank", help="LoRA rank."),
    method: Optional[str] = typer.Option(None, "--method", help="lora (default) or full."),
    engine: Optional[str] = typer.Option(None, "--engine", help="ddp (default) or fsdp: a full fine-tune's weights "
                                         "sharded over the launched processes."),
    size: Optional[str] = typer.Option(None, "--size", help="Training frames HEIGHTxWIDTH (default 480x832)."),
    shot_frames: Optional[int] = typer.Option(None, "--shot-frames", help="Frames per shot (scene: 4k; keyframes: 4k+1)."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="Steps between checkpoints."),
    validate_every: Optional[int] = typer.Option(None, "--validate-every", help="Steps between validation clips."),
    cp: Optional[int] = typer.Option(None, "--cp", min=1, max=64,
                                     help="Processes each sample's tokens are split over (context parallelism, "
                                          "Ulysses; cp in train.yaml). Launch a multiple of it."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    json_mode: bool = JsonOpt,
) -> None:
    """Train Wan on multi-shot samples: HoloCine's scene model or Captain Cinema's keyframe-conditioned one.

    Examples: cinema train video ds --base Wan-AI/Wan2.2-T2V-A14B-Diffusers --mode scene -o runs/holo
              accelerate launch -m cinema_cli train video ds --mode keyframes --base Wan-AI/Wan2.2-I2V-A14B-Diffusers -o runs/kf
              accelerate launch --num_processes 8 -m cinema_cli train video ds --mode scene --base ... --cp 4 -o runs/long
    """
    from cinema_cli.errors import BadInput
    from cinema_cli.train import run as run_folder
    from cinema_cli.train import video_config
    from cinema_cli.train.loop import train
    from cinema_cli.train.video import VideoTraining

    main = int(os.environ.get("RANK", "0")) == 0
    try:
        height = width = None
        if size is not None:
            try:
                height, width = (int(v) for v in size.lower().split("x"))
            except ValueError:
                raise BadInput(f"--size takes HEIGHTxWIDTH, got {size!r}") from None
        overrides = {"mode": mode, "expert": expert, "steps": steps, "batch_size": batch_size, "optimizer.lr": lr,
                     "lora.rank": rank, "method": method, "engine": engine, "height": height, "width": width,
                     "shot_frames": shot_frames, "checkpoint_every": checkpoint_every,
                     "validate_every": validate_every, "cp": cp, "seed": seed}
        if resume:
            given = [k for k, v in overrides.items() if v is not None] + (["--config"] if config_file else [])
            if given:
                raise BadInput(f"a resumed run keeps its saved settings; drop {', '.join(given)}")
            config = run_folder.check(out, True, "video", None, base, dataset, video_config.VideoTrainConfig)
        else:
            config = video_config.resolve(base, config_file, overrides)
            if main:
                run_folder.check(out, False, "video", config, base, dataset)
        family = VideoTraining(config, dataset)  # reads and checks the dataset and the base's kind
        with run_folder.lock(out) if main else contextlib.nullcontext():
            if main and not resume:
                run_folder.start(out, "video", config, dataset)
            with _progress(config.steps, main and not json_mode) as on_step:
                result = train(family, out, resume=resume, on_step=on_step)
    except CinemaError as err:
        raise fail(err, json_mode) from None
    if main and json_mode:
        output.print_json({"ok": True, **result, "mode": config.mode, "experts": family.experts,
                           "samples": len(family.samples)})


def _progress(total: int, show: bool):
    """A rich bar with loss, lr and it/s on a terminal; plain lines otherwise."""
    from cinema_cli.train.loop import describe

    @contextlib.contextmanager
    def bar():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                   TimeRemainingColumn())
        with Progress(*columns, console=output.err) as progress:
            task = progress.add_task("train", total=total, stats="")

            def on_step(record: dict) -> None:
                stats = (f"loss {record['loss']:.4f}  lr {record['lr']:.2e}  {1 / record['seconds']:.2f} it/s  "
                         f"context {record['context']}")
                progress.update(task, completed=record["step"], stats=stats)
                if "validation_latent_mse" in record:  # a validation storyboard was drawn: say so above the bar
                    progress.console.print(describe(record, total), markup=False)

            yield on_step

    @contextlib.contextmanager
    def lines():
        yield lambda record: output.err.print(describe(record, total), markup=False)

    @contextlib.contextmanager
    def quiet():
        yield lambda record: None

    if not show:
        return quiet()
    return bar() if output.err.is_terminal else lines()


def bench_train(
    contexts: str = typer.Option("1,8,16,32", "--contexts", help="Pairs per sequence to measure."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1,
                                        help="Timed steps per row after the warm-up (default: 2 keyframes, 5 video)."),
    size: Optional[str] = typer.Option(None, "--size",
                                       help="Frames HEIGHTxWIDTH (default: 400x800 on CUDA, 128x256 on a CPU)."),
    family: str = typer.Option("all", "--family", help="keyframes, video or all."),
    shots: str = typer.Option("2,4,8,13", "--shots", help="Video rows: shots per scene to measure."),
    json_mode: bool = JsonOpt,
) -> None:
    """Training throughput and peak memory: keyframes (sequences/s against context length,
    GoldenMem against naive) and video (tokens/s against shots, sparse against full attention)."""
    from cinema_cli.errors import BadInput

    try:
        if family not in ("all", "keyframes", "video"):
            raise BadInput(f"--family is keyframes, video or all, not {family!r}")
        report: dict = {}
        if family in ("all", "keyframes"):
            from cinema_cli.bench.train import run_train_bench

            frame = _size(size) if size is not None else None
            report = run_train_bench(tuple(_ints(contexts, "--contexts")), steps or 2, frame)
        if family in ("all", "video"):
            from cinema_cli.bench.train_video import run_video_bench

            report["video"] = run_video_bench(tuple(_ints(shots, "--shots")), steps or 5)
    except CinemaError as err:
        raise fail(err, json_mode) from None
    if json_mode:
        output.print_json(report)
        return
    for row in report.get("rows", []) + report.get("video", {}).get("rows", []):
        output.out.print("  ".join(f"{k} {v}" for k, v in row.items()), markup=False)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
    bench_app.command("train")(bench_train)
