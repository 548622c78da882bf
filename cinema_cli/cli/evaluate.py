"""Quality metrics: `cinema eval text | consistency | aesthetic | judge | stress | report`.
Thin: parse, call cinema_cli.eval, print a table (or JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from cinema_cli.cli import output
from cinema_cli.cli.common import JsonOpt, ProjectOpt, fail
from cinema_cli.errors import BadInput, CinemaError

FolderOpt = typer.Option(None, "--folder", help="Measure a folder of videos (or keyframe images) instead of a project.")
CaptionsOpt = typer.Option(None, "--captions", help="YAML for the --folder: `film:` (global prompt) and `shots:`, a list of file, caption, characters, scene and location entries.")
AgainstOpt = typer.Option(None, "--against", help="A second project (or folder) to compare with: deltas are this - OTHER.")
FramesOpt = typer.Option(8, "--frames", min=1, max=64, help="Frames sampled from each shot's video.")
ClipModelOpt = typer.Option(None, "--clip-model", help="open_clip model (default: the project's memory CLIP, else ViT-L-14).")
ClipWeightsOpt = typer.Option(None, "--clip-weights", help="Its pretrained tag, a local file, or `random` (plumbing tests).")
DinoOpt = typer.Option(None, "--dino", help="DINO-class ViT, Hub id or local folder (default facebook/dinov2-base).")
DeviceOpt = typer.Option("auto", "--device", help="auto, cpu or cuda.")


def _models(clip_model, clip_weights, device, dino=None, aesthetic=None, faces=None, judge=None):
    from cinema_cli.eval.features import DEFAULT_DINO
    from cinema_cli.eval.runner import Models

    return Models(clip_model, clip_weights, dino or DEFAULT_DINO, aesthetic, device, faces, judge or {})


def _run(name: str, keys: list[str], project, folder, captions, against, frames, models, json_mode,
         table: bool = True) -> dict:
    from cinema_cli.eval.runner import Source, run_metric

    try:
        result = run_metric(name, Source(project, folder, captions), models, frames=frames, against=against)
    except CinemaError as err:
        raise fail(err, json_mode) from None
    for message in result.get("notices", []):
        output.notice(message)
    if json_mode:
        output.print_json({"ok": True, **result})
    elif table:
        print_result(result, keys)
    return result


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def print_result(result: dict, keys: list[str]) -> None:
    table = Table(title=f"{result['metric']}: {result['film']}")
    for column in ("shot", "scene", *keys):
        table.add_column(column, justify="left" if column in ("shot", "scene") else "right")
    for row in result["shots"]:
        table.add_row(row["id"], row["scene"], *(_cell(row.get(k)) for k in keys))
    output.out.print(table)
    for key, value in result["summary"].items():
        output.out.print(f"{key}: {_cell(value)}", markup=False)
    _print_against(result)


def _print_against(result: dict) -> None:
    against = result.get("against")
    if against:
        output.out.print(f"against {against['film']} (delta = this - other):", markup=False)
        for key, row in against["summary"].items():
            output.out.print(f"  {key}: {_cell(row['this'])} vs {_cell(row['against'])}  delta {_cell(row['delta'])}",
                             markup=False)


def eval_text(project: Optional[Path] = ProjectOpt, folder: Optional[Path] = FolderOpt,
              captions: Optional[Path] = CaptionsOpt, against: Optional[Path] = AgainstOpt,
              frames: int = FramesOpt, clip_model: Optional[str] = ClipModelOpt,
              clip_weights: Optional[str] = ClipWeightsOpt, device: str = DeviceOpt,
              json_mode: bool = JsonOpt) -> None:
    """Semantic consistency (HoloCine): CLIP similarity of each shot's frames to its
    caption (shot), its scene's prompt (scene) and the film's prompt (global).

    Examples: cinema eval text | cinema eval text --folder takes/ --captions captions.yaml --json
    """
    from cinema_cli.eval.text import KEYS

    _run("text", KEYS, project, folder, captions, against, frames,
         _models(clip_model, clip_weights, device), json_mode)


def eval_consistency(project: Optional[Path] = ProjectOpt, folder: Optional[Path] = FolderOpt,
                     captions: Optional[Path] = CaptionsOpt, against: Optional[Path] = AgainstOpt,
                     frames: int = FramesOpt, clip_model: Optional[str] = ClipModelOpt,
                     clip_weights: Optional[str] = ClipWeightsOpt, dino: Optional[str] = DinoOpt,
                     faces: Optional[Path] = typer.Option(
                         None, "--faces", help="OpenCV YuNet face detector (.onnx) to compare characters on faces."),
                     device: str = DeviceOpt, json_mode: bool = JsonOpt) -> None:
    """Inter-shot consistency of each character (on faces when found, else whole frames)
    and location, and intra-shot subject (DINO) and background (CLIP) consistency (VBench).

    Example: cinema eval consistency --against ../heist-v1
    """
    from cinema_cli.eval.consistency import KEYS

    _run("consistency", [*KEYS, "on"], project, folder, captions, against, frames,
         _models(clip_model, clip_weights, device, dino, faces=faces), json_mode)


def eval_aesthetic(weights: Optional[str] = typer.Option(
                       None, "--aesthetic", help="LAION aesthetic predictor weights: a file, or ORG/REPO/FILE in the HF cache."),
                   project: Optional[Path] = ProjectOpt, folder: Optional[Path] = FolderOpt,
                   captions: Optional[Path] = CaptionsOpt, against: Optional[Path] = AgainstOpt,
                   frames: int = FramesOpt, clip_model: Optional[str] = ClipModelOpt,
                   clip_weights: Optional[str] = ClipWeightsOpt, device: str = DeviceOpt,
                   json_mode: bool = JsonOpt) -> None:
    """The LAION aesthetic score (about 1-10) of each shot's frames, on CLIP features.

    Example: cinema eval aesthetic --aesthetic sac+logos+ava1-l14-linearMSE.pth --clip-model ViT-L-14 --clip-weights openai
    """
    from cinema_cli.eval.aesthetic import KEYS

    _run("aesthetic", [*KEYS, "aesthetic_min"], project, folder, captions, against, frames,
         _models(clip_model, clip_weights, device, aesthetic=weights), json_mode)


def eval_judge(project: Optional[Path] = ProjectOpt, folder: Optional[Path] = FolderOpt,
               captions: Optional[Path] = CaptionsOpt, against: Optional[Path] = AgainstOpt,
               model: str = typer.Option("gemini-2.5-flash", "--model", help="The Gemini model that judges."),
               per_scene: bool = typer.Option(False, "--per-scene", help="Judge each scene on its own too."),
               retries: int = typer.Option(4, "--retries", min=0, max=10, help="Retries on 429 and 5xx answers."),
               backoff: float = typer.Option(2.0, "--backoff", min=0.001, max=60, help="First wait in seconds; doubles."),
               timeout: float = typer.Option(120.0, "--timeout", min=1, help="Seconds per request."),
               json_mode: bool = JsonOpt) -> None:
    """Captain Cinema's Gemini judge: the keyframes in order, scored 0-5 with a reason on
    character and scene consistency, visual quality, aesthetics, diversity and narrative
    coherence. Needs GEMINI_API_KEY (or GOOGLE_API_KEY) in the environment.

    Example: cinema eval judge --per-scene
    """
    from cinema_cli.eval.judge import ASPECTS, KEYS

    options = {"model": model, "per_scene": per_scene, "retries": retries, "backoff": backoff, "timeout": timeout}
    result = _run("judge", KEYS, project, folder, captions, against, 1,
                  _models(None, None, "auto", judge=options), json_mode, table=False)
    if json_mode:
        return
    table = Table(title=f"judge ({result['models']['judge']}): {result['film']}, {len(result['judged'])} keyframes")
    for column in ("aspect", "score", "why"):
        table.add_column(column)
    for aspect in ASPECTS:
        table.add_row(aspect, str(result["summary"][aspect]), result["justifications"][aspect])
    output.out.print(table)
    output.out.print(f"mean: {_cell(result['summary']['mean'])}", markup=False)
    for row in result["scenes"]:
        output.out.print(f"scene {row['scene']}: " + ", ".join(f"{a} {row[a]}" for a in KEYS), markup=False)
    _print_against(result)


def eval_stress(pairs: str = typer.Option("8,16,32,48", "--pairs", help="Context lengths, in (keyframe, caption) pairs."),
                frames: int = typer.Option(2, "--frames", min=1, max=64, help="Keyframes drawn per row."),
                judge: Optional[bool] = typer.Option(
                    None, "--judge/--no-judge", help="Gemini scores per row (default: when a key is set)."),
                retries: int = typer.Option(4, "--retries", min=0, max=10, help="Judge: retries on 429 and 5xx."),
                backoff: float = typer.Option(2.0, "--backoff", min=0.001, max=60, help="Judge: first wait in seconds."),
                clip_model: Optional[str] = ClipModelOpt, clip_weights: Optional[str] = ClipWeightsOpt,
                device: str = DeviceOpt, project: Optional[Path] = ProjectOpt, json_mode: bool = JsonOpt) -> None:
    """The long-context stress test (Captain Cinema's Table 2): keyframes drawn by the
    project's keyframe backend with 8..48 pairs of context, GoldenMem on and off; tokens,
    seconds per keyframe, peak GPU memory, identity consistency, judge scores.

    Example: cinema eval stress --pairs 8,16,32,48 --frames 4
    """
    from cinema_cli.eval.runner import run_stress_test

    try:
        try:
            counts = tuple(int(p) for p in pairs.split(",") if p.strip())
        except ValueError:
            counts = ()
        if not counts or min(counts) < 1:
            raise BadInput(f"--pairs {pairs!r}: expected positive integers like 8,16,32,48")
        models = _models(clip_model, clip_weights, device, judge={"retries": retries, "backoff": backoff})
        result = run_stress_test(project, models, pairs=counts, frames=frames, judge=judge)
    except CinemaError as err:
        raise fail(err, json_mode) from None
    for message in result["notices"]:
        output.notice(message)
    if json_mode:
        output.print_json({"ok": True, **result})
        return
    table = Table(title=f"long-context stress: {result['backend']} at {result['resolution']}")
    columns = ["memory", "pairs", "context frames", "tokens", "x frame", "s/keyframe", "peak GiB", "identity"]
    if result["judged"]:
        columns.append("judge mean")
    for column in columns:
        table.add_column(column, justify="left" if column == "memory" else "right")
    for row in result["rows"]:
        cells = [row["memory"], str(row["pairs"]), str(row["context_frames"]), str(row["tokens"]),
                 f"{row['token_ratio']:.3f}", f"{row['seconds_per_keyframe']:.3f}", _cell(row["peak_gpu_gib"]),
                 _cell(row["identity"])]
        if result["judged"]:
            cells.append(_cell(row["judge"]["mean"]))
        table.add_row(*cells)
    output.out.print(table)
    output.out.print(f"GoldenMem tokens at {max(result['pairs'])} pairs: {result['goldenmem_token_ratio_at_longest']:.3f} "
                     f"x one frame (bound {result['goldenmem_token_ratio_bound']}); naive grows by "
                     f"{result['naive_tokens_per_pair'][0]:g} tokens per pair", markup=False)


def eval_report(project: Optional[Path] = ProjectOpt, against: Optional[Path] = typer.Option(
                    None, "--against", help="A second project whose saved results are compared (delta = this - other)."),
                out: Optional[Path] = typer.Option(None, "-o", "--output", help="Page to write (default: eval-report.html)."),
                json_mode: bool = JsonOpt) -> None:
    """One self-contained HTML page with charts of every metric run for the project
    (cinema eval text, consistency, aesthetic, judge, stress), per shot and per scene.

    Example: cinema eval report --against ../heist-v1
    """
    from cinema_cli.eval.report import write_report
    from cinema_cli.project.project import Project

    try:
        proj = Project.open(project)
        other = Project.open(against, search_up=False) if against is not None else None
        with proj.lock():
            path = write_report(proj, other, out)
    except CinemaError as err:
        raise fail(err, json_mode) from None
    if json_mode:
        output.print_json({"ok": True, "report": str(path)})
    else:
        output.out.print(f"report: {path}", markup=False)


def register(eval_app: typer.Typer) -> None:
    eval_app.command("text")(eval_text)
    eval_app.command("consistency")(eval_consistency)
    eval_app.command("aesthetic")(eval_aesthetic)
    eval_app.command("judge")(eval_judge)
    eval_app.command("stress")(eval_stress)
    eval_app.command("report")(eval_report)
