"""One card per shot for the board: the shot's fields and the pipeline's view of it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cinema_cli.errors import BadInput
from cinema_cli.pipeline import DONE, MISSING, STALE, ProjectStatus
from cinema_cli.project.project import Project
from cinema_cli.project.schema import Shot


@dataclass(frozen=True)
class Card:
    shot: Shot
    state: str  # the worse of the keyframe's and the video's: done, stale or missing
    reasons: list[str]
    context: list[dict]  # {shot, score, size, tokens} of each conditioning keyframe
    keyframe: Path | None  # the keyframe file, when there is one
    video: Path | None  # the shot file, when there is one


def cards(project: Project, status: ProjectStatus) -> list[Card]:
    if status.story.state == MISSING or not project.has_storyboard():
        raise BadInput("there is no storyboard.yaml to show yet; run `cinema story` first")
    rows = {row.id: row for row in status.shots}
    result = []
    for shot in project.storyboard.shots:
        row = rows[shot.id]
        states = (row.keyframe.state, row.shot.state)
        state = MISSING if MISSING in states else STALE if STALE in states else DONE
        keyframe, video = project.keyframe_path(shot.id), project.shot_path(shot.id)
        result.append(Card(
            shot=shot, state=state, reasons=row.keyframe.reasons + row.shot.reasons, context=row.context,
            keyframe=keyframe if keyframe.is_file() else None, video=video if video.is_file() else None,
        ))
    return result
