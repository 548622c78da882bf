"""One timed render in its own process; prints JSON with its time and peak memory."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from cinema_cli.pipeline import Pipeline
from cinema_cli.project.project import Project


def main(root: str) -> None:
    started = time.monotonic()
    project = Project.open(Path(root), search_up=False)
    pipeline = Pipeline(project)
    with project.lock():
        result = pipeline.run()
    seconds = time.monotonic() - started
    board = project.storyboard
    print(json.dumps({
        "seconds": round(seconds, 3),
        "rebuilt": {"keyframes": result.rebuilt.keyframes, "shots": result.rebuilt.shots,
                    "film": result.rebuilt.film},
        "film_seconds": sum(s.duration for s in board.shots),
        # ru_maxrss is in KiB on Linux.
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_ffmpeg_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main(sys.argv[1])
