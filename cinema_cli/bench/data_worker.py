"""One `data prepare` of one film in its own process; prints JSON with its time and peak memory."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from cinema_cli.data.prepare import prepare


def main(film: str, dataset: str, detector: str) -> None:
    started = time.monotonic()
    result = prepare(Path(dataset), [Path(film)], overrides={"boundaries": {"detector": detector},
                                                             "captions": {"backend": "none"}})
    entry = next(iter(result.films.values()))
    print(json.dumps({
        "seconds": round(time.monotonic() - started, 3),
        "state": entry["state"], "why": entry.get("why"), "detector": entry.get("detector"), "shots": entry.get("shots"), "kept": entry.get("kept"),
        # ru_maxrss is in KiB on Linux.
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_ffmpeg_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main(*sys.argv[1:4])
