"""Helpers shared by the finishing tests (board, export, subtitles and music, cuts):
run the real `cinema` console script, make small example projects, and compute the
film's timing from the storyboard independently of the code under test."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import yaml

from cinema_cli.assemble.ffmpeg import ffmpeg_exe


def _console_script() -> str:
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / "cinema"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("cinema") or "cinema"


CINEMA = _console_script()


def cinema(*args: str, cwd: Path, rc: int | None = 0) -> subprocess.CompletedProcess:
    result = subprocess.run([CINEMA, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "COLUMNS": "200"})
    if rc is not None:
        assert result.returncode == rc, (
            f"cinema {' '.join(args)} exited {result.returncode}, expected {rc}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def cinema_json(*args: str, cwd: Path, rc: int = 0) -> dict:
    lines = [line for line in cinema(*args, "--json", cwd=cwd, rc=rc).stdout.splitlines() if line.strip()]
    return json.loads(lines[-1])


def small_project(parent: Path, name: str, width: int, height: int, fps: int, example: str = "heist") -> Path:
    cinema("new", name, "--example", example, cwd=parent)
    project = parent / name
    path = project / "cinema.yaml"
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^resolution:.*$", f"resolution: {{width: {width}, height: {height}}}", text)
    text = re.sub(r"(?m)^fps:.*$", f"fps: {fps}", text)
    path.write_text(text, encoding="utf-8")
    return project


def shots(project: Path) -> list[dict]:
    return yaml.safe_load((project / "storyboard.yaml").read_text(encoding="utf-8"))["shots"]


def expected_spans(project: Path, fps: int, crossfade_seconds: float = 0.5) -> list[dict]:
    """Each shot's place in the film, from the README's rules: frames = round(duration x
    fps); a crossfade overlaps round(crossfade_seconds x fps) frames, clamped to half the
    shorter shot; the cut point of a crossfade is the centre of the overlap."""
    fade_frames = max(1, round(crossfade_seconds * fps))
    spans: list[dict] = []
    for shot in shots(project):
        frames = max(1, round(shot["duration"] * fps))
        fade = 0
        if spans and shot["transition"] == "crossfade":
            fade = min(fade_frames, spans[-1]["frames"] // 2, frames // 2)
        start = spans[-1]["start"] + spans[-1]["frames"] - fade if spans else 0
        spans.append({"id": shot["id"], "frames": frames, "fade": fade, "start": start,
                      "cut": start + fade // 2, "dialogue": shot.get("dialogue")})
    for span, after in zip(spans, spans[1:] + [None]):
        span["cut_out"] = after["cut"] if after else span["start"] + span["frames"]
    return spans


def ffmpeg(*args: str) -> str:
    return subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", *args],
                          capture_output=True, text=True, check=True).stderr
