"""The keyframe stage: one image per shot, conditioned on the context its memory chose.

Keyframe k may be conditioned on any keyframe before it, so its job waits for theirs,
and whether it is still current is judged again once they are built: a rebuilt
keyframe makes exactly the later keyframes that used it stale. (Which earlier keyframes
the memory picks can depend on how they were drawn — near-duplicates are skipped by
their pictures — so it is known only once they are.) A backend that draws nothing from
its context (`keyframes.base.reads_context`) gets none: its keyframes wait for no
other, and their recipes hold no memory settings, so an edit redraws no other keyframe.

A backend that draws keyframes together (`GroupKeyframeBackend`, the interleaved model's
joint mode) gets one job per group, making all its members: each member's recipe holds
the others' own recipes, so an edit to one makes the whole group stale, and a member
that is missing or stale makes the others stale too. Groups read no memory context, so
their jobs wait for none.
"""

from __future__ import annotations

import json
from pathlib import Path

from cinema_cli.keyframes.base import (
    CharacterLook,
    ContextFrame,
    GroupKeyframeBackend,
    KeyframePlan,
    KeyframePreflight,
    KeyframeRequest,
    reads_context,
)
from cinema_cli.pipeline.context import Context
from cinema_cli.pipeline.jobs import Job, Made, Step
from cinema_cli.pipeline.recipes import KeyframeRecipe
from cinema_cli.pipeline.state import DONE, STALE, ArtifactState, evaluate
from cinema_cli.project.files import atomic_write_text, temp_path_for
from cinema_cli.project.manifest import Record, canonical_hash
from cinema_cli.project.schema import Shot, Storyboard


# A group member's own entry in its recipe's `group` (its own fields are the recipe itself).
ITSELF = "itself"


class KeyframeStage:
    name = "keyframes"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.project = ctx.project
        self._inputs: dict | None = None
        self._groups: tuple[tuple, dict[str, list[Shot]]] | None = None

    @property
    def backend_inputs(self) -> dict | None:
        if self._inputs is None:
            self._inputs = self.ctx.backend_inputs(self.ctx.keyframes) or {}
        return self._inputs or None

    @property
    def reads_context(self) -> bool:
        """Whether the backend draws from the memory's context (else none is planned)."""
        return reads_context(self.ctx.keyframes.cls, self.ctx.keyframes.options)

    def group_of(self, board: Storyboard, shot: Shot) -> list[Shot] | None:
        """The shots drawn together with `shot` (itself included), or None when the backend
        draws one keyframe at a time."""
        if not hasattr(self.ctx.keyframes.cls, "render_group"):
            return None  # (without making the backend: `status` makes none)
        backend = self.ctx.keyframes.instance
        if not isinstance(backend, GroupKeyframeBackend):
            return None
        key = tuple((s.id, s.scene) for s in board.shots)
        if self._groups is None or self._groups[0] != key:
            groups = backend.groups(board)
            members = {} if groups is None else {
                i: [board.shots[board.index(j)] for j in ids] for ids in groups for i in ids}
            self._groups = (key, members)
        return self._groups[1].get(shot.id)

    def recipe(self, shot: Shot, board: Storyboard | None = None) -> KeyframeRecipe:
        group = self.group_of(board, shot) if board is not None else None
        if group is None:
            return self._own_recipe(shot, memory=self.reads_context)
        # Drawn with its group: no memory, and every member's own inputs.
        recipe = self._own_recipe(shot, memory=False)
        recipe.group = [
            [s.id, ITSELF if s.id == shot.id else canonical_hash(self._own_recipe(s, memory=False).to_dict())]
            for s in group
        ]
        return recipe

    def _own_recipe(self, shot: Shot, memory: bool = True) -> KeyframeRecipe:
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
            memory=ctx.memory.recipe if memory else None,
        )

    def state(self, shot: Shot, states: dict[str, ArtifactState],
              board: Storyboard | None = None) -> tuple[ArtifactState, list[dict]]:
        """Its state given the states of the keyframes before it, and the context it was
        drawn with. (A group member's state given its group's: `states`.)"""
        ctx = self.ctx
        path = self.project.keyframe_path(shot.id)
        record = ctx.manifest.get("keyframes", shot.id)
        context = list(record.recipe.get("context", [])) if record else []
        state = evaluate(ctx.hasher, path, record, self.recipe(shot, board))
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
            states[shot.id], contexts[shot.id] = self.state(shot, states, board)
        own = dict(states)
        for shot in board.shots:
            # Drawn together: a member to redraw means all are redrawn.
            siblings = [s.id for s in self.group_of(board, shot) or [] if s.id != shot.id]
            reasons = [f"drawn with {i}, whose keyframe is {own[i].state}" for i in siblings if own[i].state != DONE]
            if reasons and states[shot.id].state == DONE:
                states[shot.id] = ArtifactState(STALE, reasons)
        return states, contexts

    def plan(self, board: Storyboard, force: set[str]) -> tuple[list[Job], dict[str, ArtifactState]]:
        """A job per shot, each after the one before it (its context may be any earlier
        keyframe) unless the backend reads no context, or a job per group for a backend
        that draws groups; `stale` marks those that are stale now. Also the states as
        they stand."""
        states, _ = self.states(board)
        if board.shots and self.group_of(board, board.shots[0]) is not None:
            return self._group_jobs(board, states, force), states
        jobs, before, chained = [], (), self.reads_context
        for shot in board.shots:
            stale = states[shot.id].state != DONE or shot.id in force
            jobs.append(Job(self.name, shot.id, recipe=self.recipe(shot), outputs=(
                self.project.keyframe_path(shot.id), self.project.sidecar_path(shot.id)),
                after=before, shots=(shot.id,), label=shot.id, stale=stale))
            before = (shot.id,) if chained else ()
        return jobs, states

    def _group_jobs(self, board: Storyboard, states: dict[str, ArtifactState], force: set[str]) -> list[Job]:
        jobs, seen = [], set()
        for shot in board.shots:
            if shot.id in seen:
                continue
            group = self.group_of(board, shot)
            ids = tuple(s.id for s in group)
            seen.update(ids)
            jobs.append(Job(
                self.name, f"scene {shot.scene} ({', '.join(ids)})", recipe=[self.recipe(s, board) for s in group],
                outputs=tuple(p for i in ids for p in (self.project.keyframe_path(i), self.project.sidecar_path(i))),
                request=tuple(self._request(s, ()) for s in group), shots=ids, label=", ".join(ids),
                stale=any(states[i].state != DONE or i in force for i in ids),
            ))
        return jobs

    def step(self, board: Storyboard, force: set[str]) -> tuple[Step, dict[str, ArtifactState]]:
        """This stage's part of a run, and the keyframes' states: as planned now, each
        replaced as its job is judged (done when it is to be built), so the shot stage
        judges a shot by them once its keyframes are recorded."""
        jobs, states = self.plan(board, force)
        shots = {s.id: s for s in board.shots}

        def still_needed(job: Job) -> bool:
            if isinstance(job.request, tuple):  # a group: judged with all its members when planned
                needed = job.stale
                states.update({i: ArtifactState(DONE) for i in job.shots if needed})
                return needed
            # Judged once the keyframes its context may come from are: a rebuilt keyframe
            # makes only its dependents stale.
            state, _ = self.state(shots[job.key], states)
            needed = state.state != DONE or job.key in force
            states[job.key] = ArtifactState(DONE) if needed else state
            return needed

        return Step(self, lambda: jobs, still_needed), states

    def request(self, shot: Shot) -> KeyframeRequest:
        """What the backend is asked: retrieved from the keyframes before it (all drawn by
        now, in storyboard order) and the cast's reference images, each at its GoldenMem
        size; no context for a backend that reads none."""
        if not self.reads_context:
            return self._request(shot, ())
        width, height = self.ctx.config.resolution.width, self.ctx.config.resolution.height
        context = tuple(
            ContextFrame(c.candidate.shot, c.candidate.path, round(c.score, 4), c.slot.pixels, c.slot.tokens,
                         c.candidate.caption)
            for c in self.ctx.memory.context(self.project.storyboard, shot, width, height)
        )
        return self._request(shot, context)

    def _request(self, shot: Shot, context: tuple[ContextFrame, ...]) -> KeyframeRequest:
        ctx = self.ctx
        scene = ctx.script.scene(shot.scene)
        assert scene is not None
        width, height = ctx.config.resolution.width, ctx.config.resolution.height
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
        """Draw the job's keyframe (or a group's keyframes, in one backend call) into
        `tmp_dir`, unpublished; completes the job's request and recipe (its context).
        Writes no project state: a worker rank runs this."""
        if isinstance(job.request, tuple):
            images = self.ctx.keyframes.instance.render_group(job.request, self.ctx.reporter.step)
            return self._saved({self.project.keyframe_path(r.shot_id): image
                                for r, image in zip(job.request, images)}, tmp_dir)
        shot = self.project.shot(job.key)
        job.request = self.request(shot)
        image = self.ctx.keyframes.instance.render(job.request, self.ctx.reporter.step)
        made = self._saved({self.project.keyframe_path(shot.id): image}, tmp_dir)
        job.recipe.context = [self._context_entry(c) for c in job.request.context]
        return made

    @staticmethod
    def _saved(images: dict, tmp_dir: Path) -> Made:
        """PNGs in `tmp_dir`, one per target; none left behind if one fails."""
        made = Made({})
        try:
            for path, image in images.items():
                made.files[path] = temp_path_for(path, tmp_dir)
                image.save(made.files[path], format="PNG")
        except BaseException:
            made.discard()
            raise
        return made

    def record(self, job: Job, made: Made) -> None:
        """Publish what `make` drew (a group's keyframes together), write the sidecars,
        and record them in the manifest."""
        made.publish()
        if isinstance(job.request, tuple):
            for request, recipe in zip(job.request, job.recipe):
                recipe.context = []
                self._record(request, recipe, drawn_with=list(job.shots))
        else:
            self._record(job.request, job.recipe)

    def _record(self, request: KeyframeRequest, recipe: KeyframeRecipe, drawn_with: list[str] | None = None) -> None:
        """The keyframe's sidecar and manifest record, after its PNG."""
        ctx = self.ctx
        data = recipe.to_dict()
        output = ctx.hasher(self.project.keyframe_path(request.shot_id)) or ""
        sidecar = {
            "shot": request.shot_id,
            "input_hash": canonical_hash(data),
            "backend": ctx.keyframes.name,
            "backend_version": ctx.keyframes.version,
            "seed": request.seed,
            "size": [request.height, request.width],
            "context": [{k: v for k, v in e.items() if k != "output"} for e in data["context"]],
        }
        if drawn_with is not None:
            sidecar["drawn_with"] = drawn_with
        atomic_write_text(self.project.sidecar_path(request.shot_id), json.dumps(sidecar, indent=2) + "\n",
                          self.project.tmp_dir)
        ctx.record("keyframes", request.shot_id, Record(data, output))

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
