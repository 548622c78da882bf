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
        "state": entry["state"], "why": entry.get("why"), "detector": entry.get("detector"),
        "shots": entry.get("shots"), "kept": entry.get("kept"),
        # ru_maxrss is in KiB on Linux.
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_ffmpeg_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        # CPU time of this process and ffmpeg's: on a shared machine, wall time says how
        # busy the others were; on an idle 2-core one it is between half of this and this.
        "cpu_seconds": round(sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF,
                                 resource.RUSAGE_CHILDREN) for f in ("ru_utime", "ru_stime")), 3),
    }))


if __name__ == "__main__":
    main(*sys.argv[1:4])
