"""Commands that only read a project build no model: `cinema status` on a project set
up for the GPU backends imports neither torch nor diffusers, and makes no keyframe or
story backend (the shot backend is made for its frame rule; its constructor loads nothing)."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml
from finishing_support import cinema

PROBE = """
import json, sys
from cinema_cli.pipeline import Pipeline
from cinema_cli.project.project import Project
pipeline = Pipeline(Project.open())
status = pipeline.status().to_json()
print(json.dumps({
    "heavy": [m for m in ("torch", "diffusers", "transformers") if m in sys.modules],
    "made": [k for k in ("story", "keyframes", "video") if "instance" in vars(getattr(pipeline.ctx, k))],
    "keyframes": [s["keyframe"] for s in status["shots"]],
}))
"""


def test_status_builds_no_model(tmp_path):
    cinema("new", "film", "--example", "heist", cwd=tmp_path)
    root = tmp_path / "film"
    cinema("story", cwd=root)
    config = yaml.safe_load((root / "cinema.yaml").read_text())
    config["keyframes"] = {"backend": "flux2", "options": {"model": "tiny"}}
    config["video"] = {"backend": "wan", "options": {"model": "tiny", "mode": "flf2v"}}
    (root / "cinema.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=root, capture_output=True, text=True, check=True)
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["heavy"] == []
    assert seen["made"] == ["video"]
    assert seen["keyframes"] and set(seen["keyframes"]) == {"missing"}
