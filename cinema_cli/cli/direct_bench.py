"""`cinema bench direct`: speed and active memory of online directing (Helios, CAMR vs
recency vs a naive full history) against the length of the film. Thin: parse, call the
library, print."""

from __future__ import annotations

import typer

from cinema_cli.cli import output
from cinema_cli.cli.common import JsonOpt, fail
from cinema_cli.errors import CinemaError


def bench_direct(
    preset: str = typer.Option("tiny", "--preset", help="tiny (seconds on a CPU) or real-shape (Helios-Base's "
                                                        "frame, chunk and history sizes)."),
    shots: int = typer.Option(8, "--shots", min=2, max=200, help="Shots in the directed film."),
    chunks: int = typer.Option(1, "--chunks", min=1, max=16, help="Chunks per shot."),
    json_mode: bool = JsonOpt,
) -> None:
    """Seconds per second of video, latency to a new shot's first frame, and active memory
    per shot as the film grows, with memory: camr, recency and full.

    Example: cinema bench direct --preset tiny --shots 12 --json
    """
    from cinema_cli.bench.direct import run_direct_bench

    try:
        report = run_direct_bench(preset=preset, shots=shots, chunks_per_shot=chunks, on_row=_progress)
    except CinemaError as err:
        raise fail(err, json_mode) from None
    if json_mode:
        output.print_json(report)
        return
    output.out.print(f"{report['preset']} on {report['device']}: {report['frame'][0]}x{report['frame'][1]}, "
                     f"{report['frames_per_shot']} frames a shot")
    for policy, summary in report["policies"].items():
        output.out.print(f"{policy:>8}: history tokens {summary['history_tokens_first_to_last']} "
                         f"(x{summary['history_tokens_growth']}), "
                         f"{summary['seconds_per_video_second_late_shots']} s per video second, "
                         f"first frame after {summary['first_frame_latency_s_late_shots']} s (later shots)")


def _progress(policy: str, row: dict) -> None:
    """One line per measured shot on stderr, so a long run shows where it is."""
    output.err.print(f"{policy} shot {row['shot']}: {row['history_frames']} history frames, "
                     f"{row['history_tokens']} tokens, {row['seconds']} s, first frame {row['first_frame_latency_s']} s")


def register(bench_app: typer.Typer) -> None:
    bench_app.command("direct")(bench_direct)
