"""The keyframe stage's memory: for one shot of a project, the context it is drawn with.

Candidates are the keyframes of the shots before it (in storyboard order, so they are
all drawn by the time it is) and, as permanent identity anchors, the cast's reference
images. The embedder scores them, the selection picks the best complementary subset
that GoldenMem has room for, and each chosen frame gets its GoldenMem size.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cinema_cli.memory.candidates import Candidate, Query
from cinema_cli.memory.embedders.base import Embedder, embedders
from cinema_cli.memory.goldenmem import Schedule, schedule
from cinema_cli.memory.index import EmbeddingIndex
from cinema_cli.memory.select import Chosen, assign, choose
from cinema_cli.memory.signature import signatures
from cinema_cli.memory.weights import WeightsMissing, transformers_folder
from cinema_cli.project.project import Project
from cinema_cli.project.schema import MemorySettings, Shot, Storyboard
from cinema_cli.project.yamlio import file_error

Hasher = Callable[[Path], "str | None"]

# Bump when a change to the selection or the schedule alters which context is chosen,
# so keyframes planned the old way are planned again.
VERSION = "1"


def embedder_name(settings: MemorySettings, root: Path) -> str:
    """`auto` is lexical unless weights are configured: then clip, or text when the
    weights are a transformers text model."""
    if settings.embedder != "auto":
        return settings.embedder
    if transformers_folder(settings.weights, root) is not None:
        return "text"
    if settings.weights is not None or settings.model.startswith("hf-hub:"):
        return "clip"
    return "lexical"


class MemoryPlanner:
    def __init__(self, project: Project, settings: MemorySettings, hasher: Hasher,
                 embedder: str | None = None) -> None:
        """`embedder` overrides the configured one (for `cinema eval retrieval`).
        Bad weights are refused here, before anything is drawn."""
        self.project = project
        self.settings = settings
        self.hasher = hasher
        self.index = EmbeddingIndex(project.cache_dir / "memory", project.tmp_dir)
        name = embedder or embedder_name(settings, project.root)
        try:
            self.embedder: Embedder = embedders.get(name)(settings, project.root, project.config.runtime.device)
        except WeightsMissing as err:
            raise file_error(project.config_path, [(("memory", err.field), f"memory.{err.field}", str(err))]) from None

    @property
    def recipe(self) -> dict:
        """What a keyframe's context depends on besides the frames: the settings and the
        exact embedder (model and weights included)."""
        return {**self.settings.model_dump(mode="json"), "embedder": self.embedder.identity, "version": VERSION}

    def schedule(self, width: int, height: int, count: int | None = None) -> Schedule:
        s = self.settings
        return schedule(
            height, width, s.max_context if count is None else count, vae_factor=s.vae_factor,
            patch=s.patch, group=s.group_size, min_side=s.min_side, budget=s.token_budget,
        )

    def candidates(self, board: Storyboard, shot: Shot) -> list[Candidate]:
        script = self.project.script
        found = []
        for order, earlier in enumerate(board.shots[: board.index(shot.id)]):
            path = self.project.keyframe_path(earlier.id)
            digest = self.hasher(path)
            if digest is None:
                continue
            scene = script.scene(earlier.scene)
            found.append(Candidate(earlier.id, path, digest, earlier.caption, frozenset(earlier.characters),
                                   scene.location if scene else None, order))
        if self.settings.references:  # anchors for the people in this shot
            for name in shot.characters:
                character = script.character(name)
                for path in self.project.character_reference_paths(name):
                    found.append(Candidate(f"@{name}", path, self.hasher(path) or "",
                                           character.description if character else "", frozenset([name]), None, -1))
        return found

    def query(self, shot: Shot) -> Query:
        scene = self.project.script.scene(shot.scene)
        return Query(shot.caption, frozenset(shot.characters), scene.location if scene else "")

    def ranked(self, board: Storyboard, shot: Shot, limit: int) -> tuple[list[Candidate], list[int], list[float]]:
        """The candidates, the positions of the `limit` chosen ones (best first) and all scores."""
        candidates = self.candidates(board, shot)
        if not candidates or limit == 0:
            return candidates, [], []
        scores = self.embedder.scores(self.query(shot), candidates, self.index)
        chosen = choose(candidates, scores, signatures(candidates, self.index),
                        limit=limit, threshold=self.settings.duplicate_threshold, floor=self.embedder.floor)
        return candidates, chosen, [float(s) for s in scores]

    def context(self, board: Storyboard, shot: Shot, width: int, height: int) -> list[Chosen]:
        """The context of `shot`'s keyframe, each frame with its GoldenMem size."""
        slots = self.schedule(width, height).context
        candidates, chosen, scores = self.ranked(board, shot, len(slots))
        return assign(candidates, scores, chosen, slots, self.settings.scale_order)
