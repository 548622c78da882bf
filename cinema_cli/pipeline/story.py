"""The story stage: script.yaml -> storyboard.yaml, and one-shot rewrites."""

from __future__ import annotations

from dataclasses import dataclass

from cinema_cli.errors import BadInput
from cinema_cli.pipeline.context import Context
from cinema_cli.pipeline.jobs import Job
from cinema_cli.pipeline.recipes import CHOSEN_FOR_ONE_RUN, STORY_BACKEND_KEYS, StoryRecipe
from cinema_cli.pipeline.state import DONE, MISSING, STALE, ArtifactState
from cinema_cli.project.manifest import Record
from cinema_cli.project.schema import Shot, Storyboard
from cinema_cli.story.base import ShotRewriter


@dataclass(frozen=True)
class StoryRequest:
    replaces: bool  # an old storyboard is replaced: its locked shots are kept


class StoryStage:
    """script.yaml -> storyboard.yaml: one job, when the storyboard is missing or stale
    and not the user's own work."""

    name = "story"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.project = ctx.project

    def recipe(self) -> StoryRecipe:
        ctx = self.ctx
        return StoryRecipe(
            script=ctx.script.model_dump(mode="json"),
            shot_seconds=ctx.config.shot_seconds,
            seed=ctx.config.seed,
            backend=ctx.story.name,
            backend_version=ctx.story.version,
            backend_options=ctx.story.options.model_dump(mode="json"),
            backend_chosen_for_one_run=True if ctx.story_chosen else None,
        )

    def _chosen_before(self, record: Record | None) -> str | None:
        """The backend of an earlier `cinema story --llm NAME` that this run does not repeat."""
        if record is None or not record.recipe.get(CHOSEN_FOR_ONE_RUN) or self.ctx.story_chosen:
            return None
        return record.recipe["backend"]

    def check_storyboard(self, *, force_story: bool = False) -> Storyboard | None:
        """Validate storyboard.yaml before anything is written: against script.yaml when it
        will be used as it is, by its own schema alone when the story stage is about to
        regenerate it (then it may still name a scene the new script dropped)."""
        if not self.project.has_storyboard():
            return None
        if self._story_regenerates(force_story):
            self._refuse_over_directed(self.project.storyboard_unchecked)
            return self.project.storyboard_unchecked
        return self.project.storyboard

    def _refuse_over_directed(self, board: Storyboard) -> None:
        """Shots made by `cinema direct` are a film generated forward in time: each was
        drawn from the shots before it. Regenerating the storyboard would replace that past
        under them, so the storyboarder is refused rather than let loose on it."""
        directed = [s.id for s in board.shots if s.directed]
        if directed:
            raise BadInput(
                f"storyboard.yaml holds {len(directed)} shot(s) made by `cinema direct` "
                f"({', '.join(directed[:5])}{', ...' if len(directed) > 5 else ''}); the storyboarder "
                "would replace the shots they were generated from, so it was not run. Edit shots with "
                "`cinema shot ID`, or start a new project for a new storyboard")

    def _story_regenerates(self, force: bool) -> bool:
        state = self.state()
        if state.state == MISSING:
            return True
        if force:
            return True
        chosen = self._chosen_before(self.ctx.manifest.get("story", "storyboard"))
        return state.state == STALE and not state.edited and not chosen

    def state(self) -> ArtifactState:
        path = self.project.storyboard_path
        if not path.is_file():
            return ArtifactState(MISSING)
        record = self.ctx.manifest.get("story", "storyboard")
        if record is None:
            return ArtifactState(DONE, edited=True)  # written by hand: it is the source
        edited = self.ctx.hasher(path) != record.output
        ignore = STORY_BACKEND_KEYS if self._chosen_before(record) else ()
        reasons = self.recipe().changes(record.recipe, ignore=ignore)
        return ArtifactState(STALE if reasons else DONE, reasons, edited)

    def plan(self, *, force: bool) -> list[Job]:
        """The storyboard's job, if it is to be written. A hand-edited storyboard is the
        user's work: it is only replaced with `force`, and locked shots always survive."""
        state = self.state()
        if state.state == DONE and not force:
            return []
        if state.edited and not force:
            self.ctx.notices.append(
                "storyboard.yaml was edited by hand, so it was kept although "
                f"{', '.join(state.reasons) or 'the script changed'}; "
                "run `cinema story --force` to regenerate it (locked shots are kept)"
            )
            return []
        chosen = self._chosen_before(self.ctx.manifest.get("story", "storyboard"))
        if chosen and not force:
            self.ctx.notices.append(
                f"storyboard.yaml was written by `cinema story --llm {chosen}`, so it was kept although "
                f"{', '.join(state.reasons)}; run `cinema story --llm {chosen}` to regenerate it "
                f"(or `cinema story --force` for the configured {self.ctx.story.name})"
            )
            return []
        return [Job(self.name, "storyboard", recipe=self.recipe(), outputs=(self.project.storyboard_path,),
                    request=StoryRequest(replaces=state.state != MISSING))]

    def build(self, job: Job) -> None:
        ctx = self.ctx
        # The old storyboard is read (and validated) before an LLM is asked for a new one;
        # against its own schema only, since the script it was made from has changed.
        old = self.project.storyboard_unchecked if job.request.replaces else None
        if old is not None:  # again under the lock: a session may have directed shots since
            self._refuse_over_directed(old)
        backend = ctx.story.instance
        board = backend.storyboard(ctx.script, ctx.config)
        if old is not None:
            board = _keep_locked(old, board)
        self.project.write_storyboard(board)
        ctx.record("story", "storyboard", Record(job.recipe.to_dict(), ctx.hasher(self.project.storyboard_path) or ""))
        if backend.notice:
            ctx.notices.append(backend.notice)

    def rewrite_shot(self, shot_id: str, instruction: str) -> Shot:
        """Have the LLM storyboarder rewrite one shot from a note. Only that shot changes in
        storyboard.yaml (like a hand edit), so the usual staleness then redoes just what
        depends on it. The caller holds the project lock (and called `check_rewrite`
        before taking it); the storyboard is read under the lock, as it is now."""
        backend = self.check_rewrite(shot_id)
        board = self.project.storyboard
        shot = backend.rewrite_shot(self.ctx.script, self.ctx.config, board, shot_id, instruction)
        shots = list(board.shots)
        shots[board.index(shot_id)] = shot
        self.project.write_storyboard(Storyboard(shots=shots))
        return shot

    def check_rewrite(self, shot_id: str) -> ShotRewriter:
        """Refuse a rewrite that cannot happen, before the lock or the LLM is touched."""
        if not self.project.has_storyboard():
            raise BadInput("there is no storyboard.yaml to rewrite a shot of; run `cinema story` first")
        self.project.shot(shot_id)  # an unknown id is refused before the LLM is asked
        backend = self.ctx.story.instance
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
