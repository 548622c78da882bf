"""`cinema bench data`: dataset preparation speed and memory against film length.

Films of each length are generated with ffmpeg's lavfi at 128x72, 24 fps: a test
pattern whose hue, zoom and motion jump every 4 seconds (a hard cut TransNetV2 sees),
so every length has the same shots per minute. Each film is prepared, without
captions, in its own process, which reports its wall time, CPU time and peak RSS. The
ratios are the claims: throughput as a multiple of real time, and the longest film's
peak RSS over the shortest's (flat memory: about 1). The CPU time and the load average
say how far a busy machine's wall time is from an idle one's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from cinema_cli.assemble.ffmpeg import run_ffmpeg
from cinema_cli.errors import CinemaError

SIZE, FPS, SHOT_SECONDS = "128x72", 24, 4


def make_film(path: Path, minutes: float) -> None:
    step = f"floor(t/{SHOT_SECONDS})"
    run_ffmpeg(["-f", "lavfi", "-i", f"testsrc2=s={SIZE}:r={FPS}:d={minutes * 60:g}",
                "-vf", f"hue=h='{step}*137':s='1+mod({step},3)/2',negate=enable='mod({step},2)',format=yuv420p",
                "-c:v", "libx264", "-preset", "veryfast", "-g", str(2 * FPS), str(path)], f"generating {path.name}")


def prepare_in_worker(film: Path, dataset: Path, detector: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "cinema_cli.bench.data_worker", str(film), str(dataset), detector],
                          capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        raise CinemaError(f"the prepare worker failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_data_bench(minutes: list[float], detector: str = "auto") -> dict:
    rows = []
    with tempfile.TemporaryDirectory(prefix="cinema-bench-data-") as folder:
        for length in minutes:
            film = Path(folder) / f"film-{length:g}min.mp4"
            make_film(film, length)
            run = prepare_in_worker(film, Path(folder) / f"ds-{length:g}", detector)
            if run["state"] != "done":
                raise CinemaError(f"preparing {film.name} ended {run['state']}: {run['why']}")
            source_seconds = length * 60
            rows.append({"minutes": length, **run,
                         "seconds_per_hour_of_source": round(run["seconds"] * 3600 / source_seconds, 1),
                         "times_real_time": round(source_seconds / run["seconds"], 2),
                         "times_real_time_per_cpu_second": round(source_seconds / run["cpu_seconds"], 2)})
    shortest, longest = rows[0], rows[-1]
    return {
        "load_average": [round(x, 2) for x in os.getloadavg()],  # others' work on the machine, if any
        "detector": detector, "detector_used": sorted({r["detector"] for r in rows}), "captions": "none",
        "film": f"{SIZE} at {FPS} fps, a cut every {SHOT_SECONDS} s",
        "cpu_threads": os.cpu_count(), "runs": rows,
        "times_real_time": min(r["times_real_time"] for r in rows),
        "peak_rss_ratio_longest_to_shortest": round(longest["peak_rss_mb"] / shortest["peak_rss_mb"], 3),
    }
