"""One peak-memory measurement of `cinema bench attention` in a fresh process (peak RSS
only grows within a process): python -m cinema_cli.bench.attention_worker SHOTS TOKENS DEVICE PATH."""

from __future__ import annotations

import json
import sys

from cinema_cli.bench.attention import peak_bytes
from cinema_cli.runtime.torch_compat import prepare_torch

if __name__ == "__main__":
    prepare_torch()
    shots, tokens, device, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    sys.stdout.write(json.dumps({"peak_bytes": peak_bytes(shots, tokens, device, path)}) + "\n")
