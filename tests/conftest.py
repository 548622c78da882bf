"""What the test files share: reading and tampering with a project's manifest (one
record per artifact under .cinema/manifest/), so no test depends on its layout; running
offline; the registered backends and the options that run each one here."""

from __future__ import annotations

import os
from pathlib import Path

# pytest -n N runs N workers side by side: each worker (and the cinema processes it
# starts) gets its share of the cores, as torch threads competing for the same cores
# slow every test down. Set before anything imports torch.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ.setdefault(
        "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

import pytest

from cinema_cli.project.manifest import Manifest, Record


def open_manifest(root: Path) -> Manifest:
    return Manifest(Path(root) / ".cinema" / "manifest", Path(root) / ".cinema" / "tmp")


def manifest_records(root: Path) -> dict[str, dict[str, dict]]:
    """Every record of a project: {stage: {key: {"recipe": ..., "output": sha256}}}."""
    return open_manifest(root).artifacts()


def put_record(root: Path, stage: str, key: str, recipe: dict, output: str) -> None:
    """Write one record as cinema does."""
    open_manifest(root).put(stage, key, Record(recipe, output))


# ---------------------------------------------------------------- backends


@pytest.fixture
def offline(monkeypatch):
    """Nothing may be downloaded: missing weights are an error, not a fetch."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# Options that run each registered backend on this machine, fast: the tiny presets.
# A new backend adds its line here, and the contract test runs it.
TEST_OPTIONS = {
    "keyframes": {
        "sketch": {},
        "flux2": {"model": "tiny", "steps": 2},
        "interleaved": {"model": "tiny", "steps": 2},
    },
    "video": {
        "animatic": {},
        "wan": {"model": "tiny", "mode": "flf2v", "steps": 2, "guidance": 1.0},
        "scene": {"model": "tiny", "steps": 2, "guidance": 1.0},
        "keyframe-scene": {"model": "tiny", "steps": 2, "guidance": 1.0},
        "holocine": {"model": "tiny", "dit": None, "steps": 2, "guidance": 1.0},
        "helios": {"model": "tiny", "steps": 2, "guidance": 1.0, "history": [4, 2, 1], "chunk": 2},
    },
}


def registered(stage: str) -> list[str]:
    """The backends a stage's registry offers (built in ones; test doubles start with `test-`)."""
    from cinema_cli.keyframes.base import keyframe_backends
    from cinema_cli.video.base import shot_backends

    registry = keyframe_backends if stage == "keyframes" else shot_backends
    return [name for name in registry.names() if not name.startswith("test-")]


@pytest.fixture
def noise_image():
    """`noise_image(path, width, height, seed)`: a random RGB PNG (a keyframe, a reference)."""
    import numpy as np
    from PIL import Image

    def make(path: Path, width: int, height: int, seed: int = 0) -> Path:
        rng = np.random.default_rng(seed)
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        return path
    return make
