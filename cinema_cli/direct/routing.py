"""The memory log: for each directed shot, which past it was made from.

A causal backend reports its `Routing` (which past latent frames filled its history
slots, and their scores). On the previz path the shot's memory is its keyframe's: the
earlier keyframes (and reference images) the memory planner retrieved, with their
relevance. One JSON line per shot in `.cinema/direct/memory.jsonl`, rewritten whole and
atomically, so a kill never leaves a torn line; `cinema shot ID` shows a shot's entry.
"""

from __future__ import annotations

import json
from pathlib import Path

from cinema_cli.keyframes.base import ContextFrame
from cinema_cli.project.files import atomic_write_text
from cinema_cli.project.project import Project
from cinema_cli.video.causal import KEYFRAME_INDEX, RoutedFrame, Routing


def memory_log(project: Project) -> RoutingLog:
    return RoutingLog(project.state_dir / "direct" / "memory.jsonl", project.tmp_dir)


def directed_memory(project: Project, shot_id: str) -> dict | None:
    """What `cinema direct` logged of a shot's memory; None for a shot it did not make."""
    return memory_log(project).get(shot_id)


def keyframe_routing(context: tuple[ContextFrame, ...], candidates: int, embedder: str) -> Routing:
    """The memory planner's choice for a keyframe, as a routing: each context frame is
    frame 0 of its shot (a keyframe is one picture), scored by retrieval relevance."""
    return Routing(
        policy="retrieval", candidates=candidates,
        slots=tuple(RoutedFrame(frame.shot, 0, float(frame.score)) for frame in context),
        notes={"embedder": embedder, "sizes": {frame.shot: list(frame.size) for frame in context}},
    )


class RoutingLog:
    def __init__(self, path: Path, tmp_dir: Path) -> None:
        self.path = path
        self.tmp_dir = tmp_dir

    def entries(self) -> dict[str, dict]:
        if not self.path.is_file():
            return {}
        found = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line someone damaged: that shot shows no memory
            if isinstance(entry, dict) and isinstance(entry.get("shot"), str):
                found[entry["shot"]] = entry
        return found

    def get(self, shot_id: str) -> dict | None:
        return self.entries().get(shot_id)

    def put(self, shot_id: str, routing: Routing) -> None:
        entries = self.entries()
        entries.pop(shot_id, None)
        entries[shot_id] = {"shot": shot_id, **routing.to_json()}
        self._write(entries)

    def keep(self, shot_ids: set[str]) -> None:
        """Drop the entries of shots no longer in the film."""
        entries = self.entries()
        if set(entries) - shot_ids:
            self._write({k: v for k, v in entries.items() if k in shot_ids})

    def _write(self, entries: dict[str, dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, "".join(json.dumps(e) + "\n" for e in entries.values()), self.tmp_dir)


def describe(entry: dict) -> str:
    """One line for a person: the policy and each routed frame with its score."""
    slots = entry.get("slots") or []
    if not slots:
        return f"{entry.get('policy', '?')}: nothing from the past (of {entry.get('candidates', 0)} candidates)"
    frames = ", ".join(
        f"{s['shot_id']}" + ("" if entry.get("policy") == "retrieval" else
                             " keyframe" if s["index"] == KEYFRAME_INDEX else f" frame {s['index']}")
        + f" ({s['score']:.3f})" for s in slots)
    return f"{entry.get('policy', '?')}: {frames} (of {entry.get('candidates', 0)} candidates)"
