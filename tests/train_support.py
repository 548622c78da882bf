"""Small prepared datasets for the training tests: films of distinct ffmpeg test patterns,
one caption per shot from a sidecar file, run through the real `cinema data prepare`."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from cinema_cli.cli.app import app
from data_support import ffmpeg

FPS = 12
SHOT_SECONDS = 1.5
# Visually distinct, textured sources (flat colours would be filtered out as `flat`).
SOURCES = ["testsrc", "smptebars", "rgbtestsrc", "testsrc2", "pal75bars", "smptehdbars", "yuvtestsrc",
           "pal100bars"]
VARIANTS = ["", ",negate", ",hflip,hue=h=120"]
SETTINGS = {"keyframes": {"short_side": 32}, "filters": {"subtitles": False, "duplicate_threshold": 0.999},
            "boundaries": {"detector": "scenedetect"}, "captions": {"backend": "sidecar"},
            "samples": {"targets": [5.0]}}


def make_shots_film(path: Path, shots: int) -> Path:
    """A film of `shots` hard-cut shots, each a different pattern, 160x80, with its sidecar
    captions (`shot N of FILM`)."""
    graph = []
    for i in range(shots):
        source, variant = SOURCES[i % len(SOURCES)], VARIANTS[i // len(SOURCES) % len(VARIANTS)]
        graph.append(f"{source}=s=160x80:r={FPS}:d={SHOT_SECONDS}{variant},format=yuv420p,setsar=1[v{i}]")
    graph.append("".join(f"[v{i}]" for i in range(shots)) + f"concat=n={shots}:v=1[out]")
    ffmpeg("-filter_complex", ";".join(graph), "-map", "[out]", "-r", str(FPS), "-c:v", "libx264", "-g", str(FPS),
           str(path))
    captions = {"shots": {i: f"shot {i} of {path.stem}, {SOURCES[i % len(SOURCES)]} pattern" for i in range(shots)}}
    path.with_name(f"{path.stem}.captions.yaml").write_text(yaml.safe_dump(captions))
    return path


def prepare_dataset(root: Path, films: list[Path]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.yaml").write_text(yaml.safe_dump(SETTINGS))
    result = CliRunner().invoke(app, ["data", "prepare", *map(str, films), "-o", str(root), "--json"])
    assert result.exit_code == 0, f"{result.stdout}\n{result.stderr}\n{result.exception!r}"
    return root

