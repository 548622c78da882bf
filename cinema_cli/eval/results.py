"""A metric's result: its summary, per shot and per scene, kept in a project so the
report can draw every metric that has been run; and the A/B comparison of two results.

A result is plain JSON:

    {"metric": "text", "film": "heist", "models": {...}, "summary": {"semantic_shot": 0.21, ...},
     "shots": [{"id": "s01", "scene": "garage", "semantic_shot": 0.2, ...}, ...],
     "scenes": [{"scene": "garage", "semantic_shot": 0.2, ...}], "notices": [...]}

and is saved as .cinema/eval/METRIC.json (atomically; the last run of each metric).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from cinema_cli.project.files import atomic_write_text
from cinema_cli.project.project import Project


def mean(values) -> float | None:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return round(sum(values) / len(values), 4) if values else None


def per_scene(shots: list[dict], keys: list[str]) -> list[dict]:
    """Each scene's mean of the per-shot `keys`, in the order scenes first appear."""
    scenes = list(dict.fromkeys(s["scene"] for s in shots))
    return [{"scene": scene, "shots": sum(s["scene"] == scene for s in shots),
             **{k: mean(s.get(k) for s in shots if s["scene"] == scene) for k in keys}} for scene in scenes]


def results_dir(project: Project) -> Path:
    return project.state_dir / "eval"


def save(project: Project, result: dict) -> Path:
    path = results_dir(project) / f"{result['metric']}.json"
    atomic_write_text(path, json.dumps(result, indent=1) + "\n", project.tmp_dir)
    return path


def load_all(project: Project) -> dict[str, dict]:
    """The saved results of `project`, by metric; an unreadable file is skipped."""
    found = {}
    for path in sorted(results_dir(project).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("metric") == path.stem:
            found[path.stem] = data
    return found


def compare(this: dict, other: dict) -> dict:
    """delta = this - other, for the summary and for every shot and scene both have."""

    def delta(a, b):
        return round(a - b, 4) if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None

    def rows(key: str, name: str) -> list[dict]:
        theirs = {r[name]: r for r in other.get(key, [])}
        out = []
        for row in this.get(key, []):
            match = theirs.get(row[name])
            if match is None:
                continue
            out.append({name: row[name], **{k: delta(v, match.get(k)) for k, v in row.items()
                                           if k not in (name, "scene", "shots") and delta(v, match.get(k)) is not None}})
        return out

    summary = {k: {"this": v, "against": other.get("summary", {}).get(k),
                   "delta": delta(v, other.get("summary", {}).get(k))} for k, v in this.get("summary", {}).items()}
    return {"film": other.get("film"), "summary": summary, "shots": rows("shots", "id"),
            "scenes": rows("scenes", "scene")}
