"""Memory commands: `cinema eval retrieval` and `cinema bench memory`. Thin: parse, call
the library, print."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from cinema_cli.cli import output
from cinema_cli.cli.common import JsonOpt, ProjectOpt, fail, open_project
from cinema_cli.errors import BadInput, CinemaError


def eval_retrieval(
    labels: Path = typer.Option(..., "--labels", help="YAML: shot id -> [relevant earlier shot ids]."),
    k: int = typer.Option(4, "--k", min=1, max=64, help="Context frames the memory may choose."),
    embedder: Optional[str] = typer.Option(
        None, "--embedder", help="lexical, clip or text instead of cinema.yaml's memory.embedder."),
    project: Optional[Path] = ProjectOpt,
    json_mode: bool = JsonOpt,
) -> None:
    """Recall@k of the context the memory chooses, against hand-labelled relevant shots.

    recall@k = hits / min(k, relevant), averaged over the labelled shots. The keyframes
    must be drawn (cinema plan). Example: cinema eval retrieval --labels retrieval-labels.yaml
    """
    from cinema_cli.eval.retrieval import evaluate_retrieval
    from cinema_cli.memory.planner import MemoryPlanner
    from cinema_cli.project.manifest import FileHasher

    try:
        if embedder is not None and embedder not in ("lexical", "clip", "text"):
            raise BadInput(f"unknown embedder {embedder!r}; one of lexical, clip, text")
        proj = open_project(project)
        planner = MemoryPlanner(proj, proj.config.memory, FileHasher(), embedder)
        with proj.lock():  # it writes the embedding index
            report = evaluate_retrieval(planner, proj.storyboard, labels, k)
    except CinemaError as err:
        raise fail(err, json_mode) from None
    if json_mode:
        output.print_json({"ok": True, "labels": str(labels), **report})
        return
    table = Table(title=f"retrieval with {report['embedder']}")
    for column in ("shot", "relevant", f"chosen (k={k})", "recall"):
        table.add_column(column)
    for row in report["shots"]:
        table.add_row(row["shot"], ", ".join(row["relevant"]), ", ".join(row["retrieved"]), f"{row['recall']:.2f}")
    output.out.print(table)
    output.out.print(f"recall@{k}: {report['recall_at_k']:.3f}")


def bench_memory(
    budget: float = typer.Option(
        20.0, "--budget-seconds", min=0.1, help="Longest forward pass to attempt for naive memory."),
    repeats: int = typer.Option(3, "--repeats", min=1, help="Forward passes timed per layout (the fastest counts)."),
    json_mode: bool = JsonOpt,
) -> None:
    """Context tokens and MM-DiT forward time vs history length: GoldenMem vs naive memory."""
    from cinema_cli.bench.memory import run_memory_bench

    try:
        report = run_memory_bench(budget_seconds=budget, repeats=repeats)
    except CinemaError as err:
        raise fail(err, json_mode) from None
    if json_mode:
        output.print_json(report)
        return
    table = Table(title=f"memory cost on {report['device']} (target {report['target']['tokens']} tokens)")
    for column in ("history", "GoldenMem tokens", "ratio", "seconds", "naive tokens", "ratio", "seconds"):
        table.add_column(column, justify="right")
    for row in report["rows"]:
        g, n = row["goldenmem"], row["naive"]
        table.add_row(str(row["history"]), str(g["total_tokens"]), f"{g['total_ratio']:.3f}", f"{g['seconds']:.3f}",
                      str(n["total_tokens"]), f"{n['total_ratio']:.0f}",
                      f"{n['seconds']:.3f}" if n["seconds"] is not None else n["note"])
    output.out.print(table)
    for key in ("goldenmem_total_ratio_at_48", "goldenmem_time_ratio_at_48", "naive_growth_exponent"):
        output.out.print(f"{key}: {report[key]}")


def register(eval_app: typer.Typer, bench_app: typer.Typer) -> None:
    eval_app.command("retrieval")(eval_retrieval)
    bench_app.command("memory")(bench_memory)
