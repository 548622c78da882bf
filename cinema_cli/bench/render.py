"""`cinema bench render`: is re-rendering proportional to what changed, and does memory
stay flat in film length?

Each render runs in a fresh worker process (`python -m cinema_cli.bench.render_worker`)
so its peak RSS, and that of the ffmpeg processes it ran, are its own.

With `--gpus N` (`run_ranks_bench`): how much faster `render --gpus N` is than one process,
and the most it could be on this machine (`speedup_ceiling`: on a CPU, one process already
keeps more than one core busy).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from cinema_cli.errors import CinemaError
from cinema_cli.project.create import create_project
from cinema_cli.project.manifest import file_sha256
from cinema_cli.runtime.distributed import cpu_cores, cuda_devices

CAST = ["Mara", "Theo", "Ines"]
LOCATIONS = [("garage", "a cluttered garage", "night"), ("street", "a rainy street", "night"),
             ("roof", "a windy rooftop", "dawn")]
MOVES = ["push-in", "pan-right", "static", "pull-out", "tilt-up", "pan-left"]
FRAMINGS = ["wide", "medium", "close-up", "medium", "extreme-wide", "close-up"]


def bench_script(shots: int) -> dict:
    """A film of `shots` shots over three locations, crossfading between scenes."""
    per_scene = max(1, -(-shots // len(LOCATIONS)))
    scenes, made = [], 0
    while made < shots:
        sid, location, time = LOCATIONS[len(scenes) % len(LOCATIONS)]
        beats = []
        for _ in range(min(per_scene, shots - made)):
            who = CAST[made % len(CAST)]
            beats.append({
                "text": f"<{who}> moment {made + 1}: looks toward the light",
                "camera": f"{FRAMINGS[made % 6]}, {MOVES[made % 6]}",
                "duration": 3.0,
            })
            made += 1
        scenes.append({"id": f"{sid}{len(scenes)}", "location": location, "time": time,
                       "transition": "crossfade" if scenes else "cut", "beats": beats})
    return {
        "title": f"Bench film ({shots} shots)",
        "style": "storyboard",
        "characters": [{"name": n, "description": f"{n}, a character"} for n in CAST],
        "scenes": scenes,
    }


def make_project(folder: Path, shots: int) -> Path:
    root = create_project(folder)
    (root / "script.yaml").write_text(yaml.safe_dump(bench_script(shots), sort_keys=False))
    return root


def render_in_worker(root: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "cinema_cli.bench.render_worker", str(root)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise CinemaError(f"bench render of {root} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def edit_one_caption(root: Path, shot_id: str) -> None:
    path = root / "storyboard.yaml"
    board = yaml.safe_load(path.read_text())
    for shot in board["shots"]:
        if shot["id"] == shot_id:
            shot["caption"] += " Rain starts to fall."
    path.write_text(yaml.safe_dump(board, sort_keys=False))


def run_render_bench(shots: int = 12) -> dict:
    with tempfile.TemporaryDirectory(prefix="cinema-bench-") as tmp:
        small = make_project(Path(tmp) / "small", shots)
        full = render_in_worker(small)
        edited_id = f"s{shots // 2:02d}"
        edit_one_caption(small, edited_id)
        again = render_in_worker(small)
        large = render_in_worker(make_project(Path(tmp) / "large", 2 * shots))
    peak_small = max(full["peak_rss_mb"], full["peak_ffmpeg_rss_mb"])
    peak_large = max(large["peak_rss_mb"], large["peak_ffmpeg_rss_mb"])
    return {
        "shots": shots,
        "full_render_seconds": full["seconds"],
        "edited_shot": edited_id,
        "rerender_seconds": again["seconds"],
        "rerender_rebuilt": again["rebuilt"],
        "rerender_ratio": round(again["seconds"] / full["seconds"], 4),
        "rerender_ratio_target": 0.25,
        f"peak_rss_mb_{shots}_shots": peak_small,
        f"peak_rss_mb_{2 * shots}_shots": peak_large,
        "peak_rss_python_mb": [full["peak_rss_mb"], large["peak_rss_mb"]],
        "peak_rss_ffmpeg_mb": [full["peak_ffmpeg_rss_mb"], large["peak_ffmpeg_rss_mb"]],
        "rss_ratio": round(peak_large / peak_small, 4),
        "rss_ratio_target": 1.2,
        "film_seconds": [full["film_seconds"], large["film_seconds"]],
    }


def timed_render(root: Path, *extra: str) -> dict:
    """`cinema render --json` (with `extra`) in its own process: its wall time, start-up
    included, the CPU seconds it and every process under it used, and its report."""
    cpu_before = _children_cpu()
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "cinema_cli", "render", "-p", str(root), "--json", *extra],
                          capture_output=True, text=True)
    wall = time.monotonic() - started
    cpu = _children_cpu() - cpu_before
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise CinemaError(f"bench render {' '.join(extra)} of {root} failed:\n{proc.stderr[-2000:]}")
    return {"wall": wall, "cpu": cpu, **json.loads(lines[-1])}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _without_memory_preview(root: Path) -> None:
    config = root / "cinema.yaml"
    data = yaml.safe_load(config.read_text())
    data["keyframes"] = {"backend": "sketch", "options": {"preview_memory": False}}
    config.write_text(yaml.safe_dump(data, sort_keys=False))


def artifact_hashes(root: Path) -> dict[str, str]:
    files = [*root.glob("keyframes/*"), *root.glob("shots/*.mp4"), root / "film.mp4"]
    return {p.relative_to(root).as_posix(): file_sha256(p) for p in sorted(files) if p.is_file()}


def run_ranks_bench(shots: int = 24, gpus: int = 2, preview_memory: bool = True) -> dict:
    """The same film rendered in one process and on `gpus` ranks (`render --gpus`): the
    speedup, wall clock (start-up included) and inside the run, and whether the two
    films are byte-identical. `preview_memory=False`: sketch keyframes that plan no
    memory context, so they wait for no other."""
    with tempfile.TemporaryDirectory(prefix="cinema-bench-ranks-") as tmp:
        roots = [make_project(Path(tmp) / name, shots) for name in ("one", "many")]
        if not preview_memory:
            for root in roots:
                _without_memory_preview(root)
        one = timed_render(roots[0])
        many = timed_render(roots[1], "--gpus", str(gpus))
        identical = artifact_hashes(roots[0]) == artifact_hashes(roots[1])
    last_keyframe = max((b["recorded"] for b in many["builds"] if b["stage"] == "keyframes"), default=0.0)
    busy: dict[int, float] = {}
    for build in many["builds"]:
        busy[build["rank"]] = busy.get(build["rank"], 0.0) + build["seconds"]
    # One process is not one core: Python draws frames while ffmpeg's encoder threads
    # compress them. N processes can at most turn the cores one process leaves idle into
    # speed, and only if they add no CPU work of their own (start-up, messages).
    cores_busy = one["cpu"] / one["wall"]
    return {
        "shots": shots,
        "processes": gpus,
        "preview_memory": preview_memory,
        "cpu_cores": cpu_cores(),
        "wall_seconds_1": round(one["wall"], 3),
        f"wall_seconds_{gpus}": round(many["wall"], 3),
        "speedup": round(one["wall"] / many["wall"], 4),
        "speedup_target": 1.5,
        "cores_busy_1": round(cores_busy, 3),
        # On CUDA each rank has a GPU of its own; on a CPU they share the cores.
        "speedup_ceiling": gpus if cuda_devices() else round(min(gpus, cpu_cores()) / max(cores_busy, 1.0), 4),
        "render_seconds_1": one["seconds"],
        f"render_seconds_{gpus}": many["seconds"],
        "render_speedup": round(one["seconds"] / many["seconds"], 4),
        "startup_seconds_1": round(one["wall"] - one["seconds"], 3),
        f"startup_seconds_{gpus}": round(many["wall"] - many["seconds"], 3),
        # CPU seconds of all the processes (ranks, torchrun, ffmpeg): what the ranks add
        # (start-up: torchrun and each rank import torch) whatever else the machine runs.
        "cpu_seconds_1": round(one["cpu"], 3),
        f"cpu_seconds_{gpus}": round(many["cpu"], 3),
        "busy_seconds_by_rank": {str(r): round(s, 3) for r, s in sorted(busy.items())},
        # How far the stages overlapped: shots handed out before the last keyframe was recorded.
        "keyframes_done_at": last_keyframe,
        "shots_started_before": sum(b["handed_out"] < last_keyframe for b in many["builds"] if b["stage"] == "shots"),
        "identical": identical,
    }
