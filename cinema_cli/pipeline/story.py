"""The story stage: script.yaml -> storyboard.yaml, and one-shot rewrites."""

from __future__ import annotations

from cinema_cli.errors import BadInput
from cinema_cli.pipeline.state import DONE, MISSING, STALE, ArtifactState, recipe_changes
from cinema_cli.project.manifest import Record
from cinema_cli.project.schema import Shot, Storyboard
from cinema_cli.story.base import ShotRewriter


# The story recipe's keys about who wrote it. A storyboard from a one-run
# `cinema story --llm NAME` is judged without them, so the configured backend being
# another one does not make it stale.
CHOSEN_FOR_ONE_RUN = "backend chosen for one run"
STORY_BACKEND_KEYS = ("backend", "backend version", "backend options", CHOSEN_FOR_ONE_RUN)


class StoryStage:
    """Methods of Pipeline for the story stage."""

    def _story_recipe(self) -> dict:
        recipe = {
            "script": self.script.model_dump(mode="json"),
            "shot seconds": self.config.shot_seconds,
            "seed": self.config.seed,
            "backend": self.story_backend.name,
            "backend version": self.story_backend.version,
            "backend options": self.story_backend.options.model_dump(mode="json"),
        }
        if self.story_chosen:
            recipe[CHOSEN_FOR_ONE_RUN] = True
        return recipe

    def _chosen_before(self, record: Record | None) -> str | None:
        """The backend of an earlier `cinema story --llm NAME` that this run does not repeat."""
        if record is None or not record.recipe.get(CHOSEN_FOR_ONE_RUN) or self.story_chosen:
            return None
        return record.recipe["backend"]

    def check_storyboard(self, *, force_story: bool = False) -> Storyboard | None:
        """Validate storyboard.yaml before anything is written: against script.yaml when it
        will be used as it is, by its own schema alone when the story stage is about to
        regenerate it (then it may still name a scene the new script dropped)."""
        if not self.project.has_storyboard():
            return None
        if self._story_regenerates(force_story):
            return self.project.storyboard_unchecked
        return self.project.storyboard

    def _story_regenerates(self, force: bool) -> bool:
        state = self.story_state()
        if state.state == MISSING:
            return True
        if force:
            return True
        chosen = self._chosen_before(self.manifest.get("story", "storyboard"))
        return state.state == STALE and not state.edited and not chosen

    def story_state(self) -> ArtifactState:
        path = self.project.storyboard_path
        if not path.is_file():
            return ArtifactState(MISSING)
        record = self.manifest.get("story", "storyboard")
        if record is None:
            return ArtifactState(DONE, edited=True)  # written by hand: it is the source
        edited = self.hasher(path) != record.output
        ignore = STORY_BACKEND_KEYS if self._chosen_before(record) else ()
        reasons = recipe_changes(record.recipe, self._story_recipe(), ignore=ignore)
        return ArtifactState(STALE if reasons else DONE, reasons, edited)

    def write_story(self, *, force: bool) -> bool:
        """Generate storyboard.yaml if missing or stale. A hand-edited storyboard is the
        user's work: it is only replaced with `force`, and locked shots always survive."""
        state = self.story_state()
        if state.state == DONE and not force:
            return False
        if state.edited and not force:
            self.notices.append(
                "storyboard.yaml was edited by hand, so it was kept although "
                f"{', '.join(state.reasons) or 'the script changed'}; "
                "run `cinema story --force` to regenerate it (locked shots are kept)"
            )
            return False
        chosen = self._chosen_before(self.manifest.get("story", "storyboard"))
        if chosen and not force:
            self.notices.append(
                f"storyboard.yaml was written by `cinema story --llm {chosen}`, so it was kept although "
                f"{', '.join(state.reasons)}; run `cinema story --llm {chosen}` to regenerate it "
                f"(or `cinema story --force` for the configured {self.story_backend.name})"
            )
            return False
        # The old storyboard is read (and validated) before an LLM is asked for a new one;
        # against its own schema only, since the script it was made from has changed.
        old = self.project.storyboard_unchecked if state.state != MISSING else None
        self.reporter.stage("story", 1)
        self.reporter.item("story", "storyboard", 0, 1)
        board = self.story_backend.storyboard(self.script, self.config)
        if old is not None:
            board = _keep_locked(old, board)
        self.project.write_storyboard(board)
        self.manifest.put(
            "story", "storyboard",
            Record(self._story_recipe(), self.hasher(self.project.storyboard_path) or ""),
        )
        self.reporter.item_done("story", "storyboard")
        if self.story_backend.notice:
            self.notices.append(self.story_backend.notice)
        return True

    def rewrite_shot(self, shot_id: str, instruction: str) -> Shot:
        """Have the LLM storyboarder rewrite one shot from a note. Only that shot changes in
        storyboard.yaml (like a hand edit), so the usual staleness then redoes just what
        depends on it. The caller holds the project lock (and called `check_rewrite`
        before taking it); the storyboard is read under the lock, as it is now."""
        backend = self.check_rewrite(shot_id)
        board = self.project.storyboard
        shot = backend.rewrite_shot(self.script, self.config, board, shot_id, instruction)
        shots = list(board.shots)
        shots[board.index(shot_id)] = shot
        self.project.write_storyboard(Storyboard(shots=shots))
        return shot

    def check_rewrite(self, shot_id: str) -> ShotRewriter:
        """Refuse a rewrite that cannot happen, before the lock or the LLM is touched."""
        if not self.project.has_storyboard():
            raise BadInput("there is no storyboard.yaml to rewrite a shot of; run `cinema story` first")
        self.project.shot(shot_id)  # an unknown id is refused before the LLM is asked
        backend = self.story_backend
        if not isinstance(backend, ShotRewriter):
            raise BadInput(
                f"the {backend.name} storyboarder cannot rewrite a shot from a note; use an LLM "
                "(`--llm gemini` or `--llm local`), or edit it with `cinema shot ID --caption ...`"
            )
        return backend


def _keep_locked(old: Storyboard, new: Storyboard) -> Storyboard:
    """Shots marked `locked: true` survive regeneration unchanged, at their old place
    when the new storyboard has no shot of that id."""
    shots = list(new.shots)
    for index, shot in enumerate(old.shots):
        if not shot.locked:
            continue
        ids = [s.id for s in shots]
        if shot.id in ids:
            shots[ids.index(shot.id)] = shot
        else:
            shots.insert(min(index, len(shots)), shot)
    return Storyboard(shots=shots)
