"""The causal video protocol of `cinema direct`: a shot continues the film's history.

A causal backend (Helios) renders the next shot from the latent frames of the shots
before it, never touching them. Which past frames it looks at is its memory policy
(CAMR routes them by attention mass, recency takes the newest); it reports that choice
as a `Routing`, which the session logs per shot.

The history lives on disk, one latent file per shot plus an index, so a later session
continues without recomputing the past, and only the frames a shot routes are loaded.
The session appends a shot's latents before it publishes the shot, and drops entries
of shots that never became part of the storyboard (a Ctrl-C, a kill, an `undo`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from cinema_cli.project.files import atomic_output, atomic_write_text
from cinema_cli.video.base import EncodeSettings, ShotRequest, StepProgress

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class FrameRef:
    """One latent frame of the history: the shot it belongs to and its index in that shot."""

    shot_id: str
    index: int


# The index a routing gives the latent of a shot's own keyframe (it conditions the shot
# but is not one of its frames); frames of a shot are 0, 1, ...
KEYFRAME_INDEX = -1


@dataclass(frozen=True)
class RoutedFrame:
    shot_id: str
    index: int  # a latent frame of the shot, or KEYFRAME_INDEX
    score: float  # the policy's relevance score (attention mass for CAMR, recency rank otherwise)


@dataclass(frozen=True)
class Routing:
    """Which past frames filled a shot's history slots, and why."""

    policy: str  # "camr" | "recency" | "full"; "retrieval" for keyframes the memory planner chose (previz)
    candidates: int  # past latent frames there were to choose from
    slots: tuple[RoutedFrame, ...] = ()
    notes: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"policy": self.policy, "candidates": self.candidates,
                "slots": [asdict(s) for s in self.slots], "notes": dict(self.notes)}


class LatentHistory:
    """The latent frames of the film's shots, in film order, under `folder`.

    `index.json` lists the shots in order with their frame counts; each shot's latents
    are `<shot_id>.pt`, a tensor [C, T, H, W] of its T latent frames.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def _index_path(self) -> Path:
        return self.folder / "index.json"

    def _index(self) -> list[dict]:
        if not self._index_path.exists():
            return []
        return json.loads(self._index_path.read_text())["shots"]

    def _write_index(self, shots: list[dict]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self._index_path, json.dumps({"shots": shots}, indent=1))

    def shots(self) -> list[str]:
        return [s["id"] for s in self._index()]

    def frames(self) -> list[FrameRef]:
        return [FrameRef(s["id"], i) for s in self._index() for i in range(s["frames"])]

    def load(self, shot_id: str) -> torch.Tensor:
        import torch

        return torch.load(self.folder / f"{shot_id}.pt", map_location="cpu", weights_only=True)

    def gather(self, refs: list[FrameRef]) -> torch.Tensor:
        """The latent frames `refs`, stacked along time in the order given: [C, len(refs), H, W]."""
        import torch

        cache: dict[str, torch.Tensor] = {}
        picked = []
        for ref in refs:
            if ref.shot_id not in cache:
                cache[ref.shot_id] = self.load(ref.shot_id)
            picked.append(cache[ref.shot_id][:, ref.index])
        return torch.stack(picked, dim=1)

    def append(self, shot_id: str, latents: torch.Tensor) -> None:
        """Add a shot's latents [C, T, H, W] at the end (replacing an earlier entry of that id)."""
        import torch

        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_output(self.folder / f"{shot_id}.pt") as temp:
            torch.save(latents.detach().to("cpu").contiguous(), temp)
        shots = [s for s in self._index() if s["id"] != shot_id]
        self._write_index([*shots, {"id": shot_id, "frames": int(latents.shape[1])}])

    def drop(self, shot_id: str) -> None:
        self._write_index([s for s in self._index() if s["id"] != shot_id])
        (self.folder / f"{shot_id}.pt").unlink(missing_ok=True)


@runtime_checkable
class CausalShotBackend(Protocol):
    """A shot backend that can also continue a film: `render_next` conditions the shot
    on the history (and its keyframe, when `request.keyframe` exists) and returns the
    shot's own latent frames for the session to append. A cut forces no past frame into
    the history slots; a continue keeps the newest one."""

    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]]

    def render_next(
        self, request: ShotRequest, cut: bool, history: LatentHistory, out: Path,
        encode: EncodeSettings, progress: StepProgress,
    ) -> tuple[Routing, torch.Tensor]:
        """Write the shot (H.264 MP4) to `out`, a temporary path; leave `history` untouched."""
        ...
