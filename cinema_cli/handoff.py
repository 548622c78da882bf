"""Handing the cut to an editor: the project's timeline written as OTIO or an EDL."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cinema_cli.assemble.export import FORMATS, ShotInfo, build_timeline, timeline_text
from cinema_cli.errors import BadInput
from cinema_cli.pipeline import DONE, Pipeline
from cinema_cli.project.files import atomic_write_text, check_folder_inside


@dataclass
class Exported:
    path: Path
    format: str
    clips: int
    transitions: int
    frames: int
    notices: list[str] = field(default_factory=list)


def export_timeline(pipeline: Pipeline, fmt: str, out: Path | None = None) -> Exported:
    """Write the film's timeline as `fmt` to `out` (default: film.otio / film.edl in the
    project), atomically, under the project lock. Everything is checked before the lock
    or anything else is written."""
    if fmt not in FORMATS:
        raise BadInput(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    project = pipeline.project
    if not project.has_storyboard():
        raise BadInput("there is no storyboard.yaml to export yet; run `cinema story` first")
    board = project.storyboard
    timeline = pipeline.film_timeline(board)
    shots = [ShotInfo(s.id, s.scene, s.caption, s.transition, s.dialogue, project.shot_path(s.id))
             for s in board.shots]
    text = timeline_text(build_timeline(project.script.title, timeline, shots), fmt, pipeline.config.fps)

    # Absolute but with symlinks kept: a link named as the target is replaced by the
    # atomic rename, never followed to a file elsewhere.
    target = Path(os.path.abspath(out if out is not None else project.root / f"film.{fmt}"))
    if target.is_dir():
        raise BadInput(f"-o {out}: is a folder; name the file to write, e.g. {Path(out, 'film.' + fmt)}")
    inside_project = project.root in target.parents
    if inside_project:
        check_folder_inside(project.root, target.parent, "export folder")
    with project.lock():
        atomic_write_text(target, text, project.tmp_dir if inside_project else target.parent)

    not_current = [row.id for row in pipeline.status().shots if row.shot.state != DONE]
    notices = [] if not not_current else [
        f"shot(s) {', '.join(not_current)} are not current: the timeline refers to the files "
        "`cinema render` will make"
    ]
    return Exported(target, fmt, len(shots), sum(1 for p in timeline.shots if p.fade_in), timeline.frames, notices)
