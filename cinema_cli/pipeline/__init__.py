"""The stage graph: script -> storyboard -> keyframes -> shots -> film.

`graph.Pipeline` walks the stages; each stage's methods live in their own module
(story, keyframes, shots, film), and `state` holds what a run or a status reports.
"""

from cinema_cli.pipeline.graph import Pipeline
from cinema_cli.pipeline.state import (
    DONE,
    MISSING,
    STALE,
    ArtifactState,
    ProjectStatus,
    Rebuilt,
    RenderResult,
    Reporter,
    ShotStatus,
    SilentReporter,
)

__all__ = [
    "DONE", "MISSING", "STALE", "ArtifactState", "Pipeline", "ProjectStatus", "Rebuilt",
    "RenderResult", "Reporter", "ShotStatus", "SilentReporter",
]
