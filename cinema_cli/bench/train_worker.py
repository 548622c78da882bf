"""One row of `cinema bench train` on a CPU in a fresh process (its peak memory is then
its own): python -m cinema_cli.bench.train_worker PAIRS GOLDENMEM(0|1) STEPS HEIGHT WIDTH."""

from __future__ import annotations

import json
import sys

from cinema_cli.bench.train import Bench

if __name__ == "__main__":
    pairs, goldenmem, steps, height, width = map(int, sys.argv[1:6])
    row = Bench(False, height, width).row(pairs, bool(goldenmem), steps)
    sys.stdout.write(json.dumps(row) + "\n")
