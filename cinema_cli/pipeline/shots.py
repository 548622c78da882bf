"""The shot stage: one video per shot (or per scene, for backends that render groups).

A shot job needs its keyframes (`Job.needs`: its own, the next one when the shot flows
into it, every member's for a scene), and is judged once they are recorded: its recipe
holds their hashes."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from cinema_cli.pipeline.context import Context
from cinema_cli.pipeline.jobs import Job, Made, Step
from cinema_cli.pipeline.recipes import ShotRecipe
from cinema_cli.pipeline.state import DONE, MISSING, STALE, ArtifactState, evaluate
from cinema_cli.project.files import temp_path_for
from cinema_cli.project.manifest import Record, canonical_hash
from cinema_cli.project.schema import CinemaConfig, Shot, Storyboard
from cinema_cli.runtime.memory import SceneMemory
from cinema_cli.video.base import (
    FrameSnapping,
    GroupShotBackend,
    MemoryEstimating,
    Preflight,
    RenderPlan,
    SceneRequest,
    ShotRequest,
)


def requested_frames(shot: Shot, fps: int) -> int:
    return max(1, round(shot.duration * fps))


def shot_frames(shot: Shot, config: CinemaConfig, backend: object) -> int:
    """duration x fps, snapped to a count the backend makes (Wan: 4k+1). Status, the
    film and the shot's own recipe all use this one count."""
    requested = requested_frames(shot, config.fps)
    return backend.frames_for(requested) if isinstance(backend, FrameSnapping) else requested


class ShotStage:
    name = "shots"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.project = ctx.project
        self._inputs: dict | None = None

    @property
    def backend(self):
        return self.ctx.video.instance

    def frames_of(self, shot: Shot) -> int:
        return shot_frames(shot, self.ctx.config, self.backend)

    def groups(self, board: Storyboard) -> list[list[Shot]]:
        """The shots the backend renders together: one each, or whole scenes for a group backend."""
        if not isinstance(self.backend, GroupShotBackend):
            return [[shot] for shot in board.shots]
        return [[board.shots[board.index(i)] for i in ids] for ids in self.backend.groups(board, self.frames_of)]

    def _group_of(self, board: Storyboard, shot: Shot) -> list[Shot] | None:
        if not isinstance(self.backend, GroupShotBackend):
            return None
        return next(g for g in self.groups(board) if any(s.id == shot.id for s in g))

    def _scene_fields(self, scene_id: str, group: list[Shot]) -> dict:
        """The scene-wide inputs of a group render (its global prompt)."""
        script = self.ctx.script
        scene = script.scene(scene_id)
        assert scene is not None  # checked when the storyboard was loaded
        cast = {}
        for shot in group:
            for name in shot.characters:
                character = script.character(name)
                cast[name] = character.description if character else ""
        return {"location": scene.location, "time of day": scene.time, "description": scene.description,
                "style": script.style, "cast": cast}

    def _next_keyframe(self, board: Storyboard, shot: Shot) -> Path | None:
        """Shot k flows into keyframe k+1 when shot k+1 joins it `continuous`."""
        if not self.backend.uses_next_keyframe:
            return None
        i = board.index(shot.id)
        # A directed shot comes later in time than the shot before it was made: the past
        # never reads it, or continuing a shot would make the shot it continues stale.
        if i + 1 < len(board.shots) and board.shots[i + 1].transition == "continuous" \
                and not board.shots[i + 1].directed:
            return self.project.keyframe_path(board.shots[i + 1].id)
        return None

    @property
    def backend_inputs(self) -> dict | None:
        if self._inputs is None:
            self._inputs = self.ctx.backend_inputs(self.ctx.video) or {}
        return self._inputs or None

    def recipe(self, board: Storyboard, shot: Shot) -> ShotRecipe:
        recipe = self._own_recipe(board, shot)
        group = self._group_of(board, shot)
        if group is not None:
            # Denoised with its scene: it depends on the scene's prompt and on every shot in it.
            recipe.scene_prompt = self._scene_fields(shot.scene, group)
            recipe.scene_shots = {
                "scene": shot.scene,
                "shots": {s.id: canonical_hash(self._own_recipe(board, s).to_dict())
                          for s in group if s.id != shot.id},
            }
        return recipe

    def _own_recipe(self, board: Storyboard, shot: Shot) -> ShotRecipe:
        ctx, choice = self.ctx, self.ctx.video
        next_key = self._next_keyframe(board, shot)
        return ShotRecipe(
            keyframe=ctx.hasher(self.project.keyframe_path(shot.id)),
            next_keyframe=ctx.hasher(next_key) if next_key else None,
            caption=shot.caption,
            camera=shot.camera,
            frames=self.frames_of(shot),
            fps=ctx.config.fps,
            resolution=str(ctx.config.resolution),
            seed=shot.seed,
            encoding=asdict(ctx.encode),
            backend=choice.name,
            backend_version=choice.version,
            backend_options=choice.options.model_dump(mode="json"),
            backend_inputs=self.backend_inputs,
        )

    def _keyframes_of(self, board: Storyboard, shot: Shot) -> list[str]:
        """The shots whose keyframes `shot` is made from: its own, and the next one it flows into."""
        next_key = self._next_keyframe(board, shot)
        return [shot.id] if next_key is None else [shot.id, next_key.stem]

    def state(self, board: Storyboard, shot: Shot, keyframes: dict[str, ArtifactState]) -> ArtifactState:
        path = self.project.shot_path(shot.id)
        upstream = self._keyframes_of(board, shot)
        siblings = [s.id for s in self._group_of(board, shot) or [] if s.id != shot.id]
        reasons = [f"keyframe {k} is {keyframes[k].state}" for k in upstream if keyframes[k].state != DONE]
        reasons += [f"scene {shot.scene}: shot {k} changed (its keyframe is {keyframes[k].state})"
                    for k in siblings if keyframes[k].state != DONE]
        if reasons:
            if not path.is_file():
                return ArtifactState(MISSING)
            return ArtifactState(STALE, reasons)
        return evaluate(self.ctx.hasher, path, self.ctx.manifest.get("shots", shot.id), self.recipe(board, shot))

    def states(self, board: Storyboard, keyframes: dict[str, ArtifactState]) -> dict[str, ArtifactState]:
        return {s.id: self.state(board, s, keyframes) for s in board.shots}

    def plan(self, board: Storyboard, keyframes: dict[str, ArtifactState],
             force: set[str]) -> tuple[list[Job], dict[str, ArtifactState]]:
        """A job per shot (or per scene for a group backend), `stale` when it is stale or
        forced given the keyframes' `keyframes` states, and the states as they stand."""
        states = self.states(board, keyframes)
        jobs = []
        for group in self.groups(board):
            ids = tuple(s.id for s in group)
            grouped = isinstance(self.backend, GroupShotBackend)
            needs = dict.fromkeys(("keyframes", k) for s in group for k in self._keyframes_of(board, s))
            jobs.append(Job(
                self.name, ids[0] if not grouped else f"scene {group[0].scene} ({', '.join(ids)})",
                recipe=[self.recipe(board, s) for s in group],
                outputs=tuple(self.project.shot_path(i) for i in ids),
                request=self._scene_request(board, group) if grouped else self._request(board, group[0]),
                needs=tuple(needs), shots=ids,
                stale=any(states[s.id].state != DONE or s.id in force for s in group),
            ))
        return jobs, states

    def step(self, board: Storyboard, keyframes: dict[str, ArtifactState],
             force: set[str]) -> tuple[Step, dict[str, ArtifactState]]:
        """This stage's part of a run, after the keyframes' (`keyframes`: their states, each
        final once its job is judged), and the shots' states, each final once its job is."""
        states: dict[str, ArtifactState] = {}

        def plan() -> list[Job]:
            jobs, planned = self.plan(board, keyframes, force)
            states.update(planned)
            return jobs

        def still_needed(job: Job) -> bool:
            # Judged, and its recipe made, once its keyframes are recorded (their hashes are in it).
            group = [board.shots[board.index(i)] for i in job.shots]
            judged = {s.id: self.state(board, s, keyframes) for s in group}
            needed = any(judged[i].state != DONE or i in force for i in job.shots)
            if needed:
                job.recipe = [self.recipe(board, s) for s in group]
                judged = {i: ArtifactState(DONE) for i in job.shots}
            states.update(judged)
            return needed

        return Step(self, plan, still_needed), states

    def _request(self, board: Storyboard, shot: Shot) -> ShotRequest:
        config = self.ctx.config
        return ShotRequest(
            shot_id=shot.id,
            caption=shot.caption,
            keyframe=self.project.keyframe_path(shot.id),
            next_keyframe=self._next_keyframe(board, shot),
            framing=shot.framing,
            move=shot.move,
            frames=self.frames_of(shot),
            fps=config.fps,
            width=config.resolution.width,
            height=config.resolution.height,
            seed=shot.seed,
            runtime=config.runtime,
        )

    def _scene_request(self, board: Storyboard, group: list[Shot]) -> SceneRequest:
        scene = self._scene_fields(group[0].scene, group)
        return SceneRequest(
            scene_id=group[0].scene,
            location=scene["location"],
            time_of_day=scene["time of day"],
            description=scene["description"],
            style=scene["style"],
            cast=tuple(scene["cast"].items()),
            shots=tuple(self._request(board, s) for s in group),
        )

    def build(self, job: Job) -> None:
        self.record(job, self.make(job, self.project.tmp_dir))

    def make(self, job: Job, tmp_dir: Path) -> Made:
        """Render a job's shots in one backend call into `tmp_dir`, unpublished. Writes no
        project state: a worker rank runs this."""
        ctx = self.ctx
        temps = [temp_path_for(p, tmp_dir) for p in job.outputs]
        try:
            if isinstance(job.request, SceneRequest):
                self.backend.render_group(job.request, temps, ctx.encode, ctx.reporter.step)
            else:
                self.backend.render(job.request, temps[0], ctx.encode, ctx.reporter.step)
        except BaseException:
            for temp in temps:
                temp.unlink(missing_ok=True)
            raise
        return Made(dict(zip(job.outputs, temps)))

    def record(self, job: Job, made: Made) -> None:
        """Publish a job's shots (they appear together, once all are made) and record them."""
        ctx = self.ctx
        made.publish()
        for key, path, recipe in zip(job.shots, job.outputs, job.recipe):
            ctx.record("shots", key, Record(recipe.to_dict(), ctx.hasher(path) or ""))

    @property
    def has_preflight(self) -> bool:
        return isinstance(self.backend, Preflight)

    def preflight(self) -> None:
        """The shot backend's own checks (weights present, memory enough) before anything is
        written, when the shot stage may have work."""
        self.ctx.notices.extend(self.backend.preflight(self.render_plan()))

    def memory(self) -> SceneMemory | None:
        """What the longest scene (or shot) asks of a GPU, where the backend estimates it."""
        return self.backend.scene_memory(self.render_plan()) if isinstance(self.backend, MemoryEstimating) else None

    def render_plan(self) -> RenderPlan:
        """What the render asks of the backend: its frame size and each call's frames."""
        ctx = self.ctx
        board = self.project.storyboard if self.project.has_storyboard() else None
        if board is None:  # the story stage writes it first; shots will be about shot_seconds long
            requested = max(1, round(ctx.config.shot_seconds * ctx.config.fps))
            snap = self.backend.frames_for if isinstance(self.backend, FrameSnapping) else int
            frames: tuple[int, ...] = (snap(requested),)
            continuous = 0
            longest = f"a shot of {frames[0]} frames"
        else:
            groups = self.groups(board)
            frames = tuple(sum(self.frames_of(s) for s in group) for group in groups)
            continuous = sum(s.transition == "continuous" for s in board.shots[1:])
            longest = "no shot"
            if frames:
                group = groups[frames.index(max(frames))]
                shots = group[0].id if len(group) == 1 else f"{group[0].id}-{group[-1].id}"
                longest = f"scene {group[0].scene} ({shots}, {max(frames)} frames)"
        return RenderPlan(
            width=ctx.config.resolution.width, height=ctx.config.resolution.height, fps=ctx.config.fps,
            frames=frames, runtime=ctx.config.runtime, continuous=continuous, longest=longest,
        )

    def snapped_notice(self, shots: list[Shot]) -> None:
        """Say which of `shots` (those rendered) got another length than they asked for."""
        fps = self.ctx.config.fps
        snapped = [f"{s.id} {r}->{f}" for s in shots if (f := self.frames_of(s)) != (r := requested_frames(s, fps))]
        if snapped:
            self.ctx.notices.append(
                f"video: {self.ctx.video.name} makes only some frame counts, so shot lengths were snapped "
                f"(frames at {fps} fps): {', '.join(snapped)}"
            )
