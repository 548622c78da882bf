"""The stage graph: script -> storyboard -> keyframes -> shots -> film.

`graph.Pipeline` is what a command uses. Its stages (story, keyframes, shots, film)
are objects over one shared `context`; each plans jobs with typed `recipes`, and an
executor (`jobs`) builds them. `state` holds what a run or a status reports.
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
