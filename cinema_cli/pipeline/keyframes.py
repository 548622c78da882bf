"""The keyframe stage: one image per shot, conditioned on the context its memory chose.

Keyframe k may be conditioned on any keyframe before it, so its job waits for theirs,
and whether it is still current is judged again once they are built: a rebuilt
keyframe makes exactly the later keyframes that used it stale.
"""

from __future__ import annotations

import json
from pathlib import Path

from cinema_cli.keyframes.base import CharacterLook, ContextFrame, KeyframePlan, KeyframePreflight, KeyframeRequest
from cinema_cli.pipeline.context import Context
from cinema_cli.pipeline.jobs import Job, Made
from cinema_cli.pipeline.recipes import KeyframeRecipe
from cinema_cli.pipeline.state import DONE, STALE, ArtifactState, evaluate
from cinema_cli.project.files import atomic_write_text, temp_path_for
from cinema_cli.project.manifest import Record, canonical_hash
from cinema_cli.project.schema import Shot, Storyboard


class KeyframeStage:
    name = "keyframes"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.project = ctx.project
        self._inputs: dict | None = None

    @property
    def backend_inputs(self) -> dict | None:
        if self._inputs is None:
            self._inputs = self.ctx.backend_inputs(self.ctx.keyframes) or {}
        return self._inputs or None

    def recipe(self, shot: Shot) -> KeyframeRecipe:
        ctx = self.ctx
        # No scene only in a storyboard the story stage will regenerate (check_storyboard).
        scene = ctx.script.scene(shot.scene)
        cast = {}
        for name in shot.characters:
            character = ctx.script.character(name)
            refs = [ctx.hasher(p) for p in self.project.character_reference_paths(name)]
            cast[name] = {"description": character.description if character else "", "references": refs}
        backend = ctx.keyframes
        return KeyframeRecipe(
            caption=shot.caption,
            characters=shot.characters,
            camera=shot.camera,
            seed=shot.seed,
            scene=shot.scene,
            location=scene.location if scene else None,
            time_of_day=scene.time if scene else None,
            cast=cast,
            style=ctx.script.style,
            resolution=str(ctx.config.resolution),
            backend=backend.name,
            backend_version=backend.version,
            backend_options=backend.options.model_dump(mode="json"),
            backend_inputs=self.backend_inputs,
            memory=ctx.memory.recipe,
        )

    def state(self, shot: Shot, states: dict[str, ArtifactState]) -> tuple[ArtifactState, list[dict]]:
        """Its state given the states of the keyframes before it, and the context it was drawn with."""
        ctx = self.ctx
        path = self.project.keyframe_path(shot.id)
        record = ctx.manifest.get("keyframes", shot.id)
        context = list(record.recipe.get("context", [])) if record else []
        state = evaluate(ctx.hasher, path, record, self.recipe(shot))
        if state.state == DONE:
            for entry in context:
                if "path" in entry:  # a character's reference image, not a keyframe
                    if ctx.hasher(self.project.root / entry["path"]) != entry["output"]:
                        state.reasons.append(f"context reference {entry['path']} changed")
                    continue
                upstream = states.get(entry["shot"])
                if upstream is None or upstream.state != DONE:
                    state.reasons.append(f"context keyframe {entry['shot']} is stale")
                elif ctx.hasher(self.project.keyframe_path(entry["shot"])) != entry["output"]:
                    state.reasons.append(f"context keyframe {entry['shot']} changed")
            if state.reasons:
                state.state = STALE
        public_context = [{k: v for k, v in e.items() if k != "output"} for e in context]
        return state, public_context

    def states(self, board: Storyboard) -> tuple[dict[str, ArtifactState], dict[str, list[dict]]]:
        states: dict[str, ArtifactState] = {}
        contexts: dict[str, list[dict]] = {}
        for shot in board.shots:
            states[shot.id], contexts[shot.id] = self.state(shot, states)
        return states, contexts

    def plan(self, board: Storyboard, force: set[str]) -> tuple[list[Job], dict[str, ArtifactState]]:
        """A job per shot, each after the one before it (its context may be any earlier
        keyframe); `stale` marks those that are stale now. Also the states as they stand."""
        states, _ = self.states(board)
        jobs, before = [], ()
        for shot in board.shots:
            stale = states[shot.id].state != DONE or shot.id in force
            jobs.append(Job(self.name, shot.id, recipe=self.recipe(shot), outputs=(
                self.project.keyframe_path(shot.id), self.project.sidecar_path(shot.id)),
                after=before, shots=(shot.id,), label=shot.id, stale=stale))
            before = (shot.id,)
        return jobs, states

    def run(self, board: Storyboard, force: set[str], executor) -> tuple[dict[str, ArtifactState], list[str]]:
        """Build what is stale, in order; the states after, and the shots whose keyframe was built."""
        jobs, _ = self.plan(board, force)
        states: dict[str, ArtifactState] = {}
        shots = {s.id: s for s in board.shots}

        def still_needed(job: Job) -> bool:
            # Re-evaluated in order: a rebuilt keyframe makes only its dependents stale.
            state, _ = self.state(shots[job.key], states)
            needed = state.state != DONE or job.key in force
            states[job.key] = ArtifactState(DONE) if needed else state
            return needed

        built = executor.run(self, jobs, still_needed)
        return states, [job.key for job in built]

    def request(self, shot: Shot) -> KeyframeRequest:
        """What the backend is asked: retrieved from the keyframes before it (all drawn by
        now, in storyboard order) and the cast's reference images, each at its GoldenMem size."""
        ctx = self.ctx
        scene = ctx.script.scene(shot.scene)
        assert scene is not None
        width, height = ctx.config.resolution.width, ctx.config.resolution.height
        context = tuple(
            ContextFrame(c.candidate.shot, c.candidate.path, round(c.score, 4), c.slot.pixels, c.slot.tokens,
                         c.candidate.caption)
            for c in ctx.memory.context(self.project.storyboard, shot, width, height)
        )
        return KeyframeRequest(
            shot_id=shot.id,
            scene_id=shot.scene,
            caption=shot.caption,
            characters=tuple(
                CharacterLook(name, cast.description if cast else "", self.project.character_reference_paths(name))
                for name, cast in ((n, ctx.script.character(n)) for n in shot.characters)
            ),
            framing=shot.framing,
            move=shot.move,
            location=scene.location,
            time_of_day=scene.time,
            style=ctx.script.style,
            width=width,
            height=height,
            seed=shot.seed,
            context=context,
            runtime=ctx.config.runtime,
        )

    def build(self, job: Job) -> None:
        self.record(job, self.make(job, self.project.tmp_dir))

    def make(self, job: Job, tmp_dir: Path) -> Made:
        """Draw the keyframe into `tmp_dir`, unpublished; completes the job's request and
        recipe (its context). Writes no project state: a worker rank runs this."""
        ctx = self.ctx
        shot = self.project.shot(job.key)
        job.request = self.request(shot)
        image = ctx.keyframes.instance.render(job.request, ctx.reporter.step)
        path = self.project.keyframe_path(shot.id)
        temp = temp_path_for(path, tmp_dir)
        try:
            image.save(temp, format="PNG")
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        job.recipe.context = [self._context_entry(c) for c in job.request.context]
        return Made({path: temp})

    def record(self, job: Job, made: Made) -> None:
        """Publish what `make` drew, write its sidecar, and record it in the manifest."""
        ctx = self.ctx
        shot = self.project.shot(job.key)
        made.publish()
        path = self.project.keyframe_path(shot.id)
        recipe = job.recipe.to_dict()
        output = ctx.hasher(path) or ""
        sidecar = {
            "shot": shot.id,
            "input_hash": canonical_hash(recipe),
            "backend": ctx.keyframes.name,
            "backend_version": ctx.keyframes.version,
            "seed": shot.seed,
            "size": [job.request.height, job.request.width],
            "context": [{k: v for k, v in e.items() if k != "output"} for e in recipe["context"]],
        }
        atomic_write_text(self.project.sidecar_path(shot.id), json.dumps(sidecar, indent=2) + "\n",
                          self.project.tmp_dir)
        ctx.manifest.put("keyframes", shot.id, Record(recipe, output))

    def _context_entry(self, frame: ContextFrame) -> dict:
        """A context frame as the recipe records it: what it is, its size, and the hash of
        the file it was, so a change to that file makes this keyframe stale."""
        entry = {"shot": frame.shot, "score": frame.score, "size": list(frame.size), "tokens": frame.tokens,
                 "output": self.ctx.hasher(frame.path)}
        if frame.shot.startswith("@"):  # a reference image: which one of the character's
            entry["path"] = frame.path.relative_to(self.project.root).as_posix()
        return entry

    @property
    def has_preflight(self) -> bool:
        return isinstance(self.ctx.keyframes.instance, KeyframePreflight)

    def preflight(self) -> None:
        """The keyframe backend's own checks (weights present, memory enough) before anything
        is written, when the keyframe stage may have work."""
        ctx = self.ctx
        plan = KeyframePlan(ctx.config.resolution.width, ctx.config.resolution.height, ctx.config.runtime)
        ctx.notices.extend(ctx.keyframes.instance.preflight(plan))
