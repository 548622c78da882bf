"""The shot stage: one video per shot (or per scene, for backends that render groups)."""

from __future__ import annotations

import contextlib
from dataclasses import asdict
from pathlib import Path

from cinema_cli.pipeline.state import DONE, MISSING, STALE, ArtifactState, ProjectStatus
from cinema_cli.project.files import atomic_output
from cinema_cli.project.manifest import Record, canonical_hash
from cinema_cli.project.schema import Shot, Storyboard
from cinema_cli.video.base import (
    FrameSnapping,
    GroupShotBackend,
    RenderPlan,
    SceneRequest,
    ShotRequest,
)


class ShotStage:
    """Methods of Pipeline for the shot stage."""

    def requested_frames(self, shot: Shot) -> int:
        return max(1, round(shot.duration * self.config.fps))

    def frames_of(self, shot: Shot) -> int:
        """duration x fps, snapped to a count the backend makes (Wan: 4k+1). Status, the
        film and the shot's own recipe all use this one count."""
        return self._snap(self.requested_frames(shot))

    def _snap(self, requested: int) -> int:
        backend = self.shot_backend
        return backend.frames_for(requested) if isinstance(backend, FrameSnapping) else requested

    def _groups(self, board: Storyboard) -> list[list[Shot]]:
        """The shots the backend renders together: one each, or whole scenes for a group backend."""
        if not isinstance(self.shot_backend, GroupShotBackend):
            return [[shot] for shot in board.shots]
        return [[board.shots[board.index(i)] for i in ids] for ids in self.shot_backend.groups(board, self.frames_of)]

    def _group_of(self, board: Storyboard, shot: Shot) -> list[Shot] | None:
        if not isinstance(self.shot_backend, GroupShotBackend):
            return None
        return next(g for g in self._groups(board) if any(s.id == shot.id for s in g))

    def _scene_fields(self, scene_id: str, group: list[Shot]) -> dict:
        """The scene-wide inputs of a group render (its global prompt)."""
        scene = self.script.scene(scene_id)
        assert scene is not None  # checked when the storyboard was loaded
        cast = {}
        for shot in group:
            for name in shot.characters:
                character = self.script.character(name)
                cast[name] = character.description if character else ""
        return {"location": scene.location, "time of day": scene.time, "description": scene.description,
                "style": self.script.style, "cast": cast}

    def _next_keyframe(self, board: Storyboard, shot: Shot) -> Path | None:
        """Shot k flows into keyframe k+1 when shot k+1 joins it `continuous`."""
        if not self.shot_backend.uses_next_keyframe:
            return None
        i = board.index(shot.id)
        if i + 1 < len(board.shots) and board.shots[i + 1].transition == "continuous":
            return self.project.keyframe_path(board.shots[i + 1].id)
        return None

    def _shot_recipe(self, board: Storyboard, shot: Shot) -> dict:
        recipe = self._own_shot_recipe(board, shot)
        group = self._group_of(board, shot)
        if group is not None:
            # Denoised with its scene: it depends on the scene's prompt and on every shot in it.
            recipe["scene prompt"] = self._scene_fields(shot.scene, group)
            recipe["scene shots"] = {
                "scene": shot.scene,
                "shots": {s.id: canonical_hash(self._own_shot_recipe(board, s)) for s in group if s.id != shot.id},
            }
        return recipe

    def _own_shot_recipe(self, board: Storyboard, shot: Shot) -> dict:
        backend = self.shot_backend
        next_key = self._next_keyframe(board, shot)
        return {
            "keyframe": self.hasher(self.project.keyframe_path(shot.id)),
            "next keyframe": self.hasher(next_key) if next_key else None,
            "caption": shot.caption,
            "camera": shot.camera,
            "frames": self.frames_of(shot),
            "fps": self.config.fps,
            "resolution": str(self.config.resolution),
            "seed": shot.seed,
            "encoding": asdict(self.encode),
            "backend": backend.name,
            "backend version": backend.version,
            "backend options": backend.options.model_dump(mode="json"),
        }

    def _shot_state(self, board: Storyboard, shot: Shot, keyframes: dict[str, ArtifactState]) -> ArtifactState:
        path = self.project.shot_path(shot.id)
        upstream = [shot.id]
        next_key = self._next_keyframe(board, shot)
        if next_key is not None:
            upstream.append(next_key.stem)
        siblings = [s.id for s in self._group_of(board, shot) or [] if s.id != shot.id]
        reasons = [f"keyframe {k} is {keyframes[k].state}" for k in upstream if keyframes[k].state != DONE]
        reasons += [f"scene {shot.scene}: shot {k} changed (its keyframe is {keyframes[k].state})"
                    for k in siblings if keyframes[k].state != DONE]
        if reasons:
            if not path.is_file():
                return ArtifactState(MISSING)
            return ArtifactState(STALE, reasons)
        return self._evaluate(path, self.manifest.get("shots", shot.id), self._shot_recipe(board, shot))

    def _shot_request(self, board: Storyboard, shot: Shot) -> ShotRequest:
        return ShotRequest(
            shot_id=shot.id,
            caption=shot.caption,
            keyframe=self.project.keyframe_path(shot.id),
            next_keyframe=self._next_keyframe(board, shot),
            framing=shot.framing,
            move=shot.move,
            frames=self.frames_of(shot),
            fps=self.config.fps,
            width=self.config.resolution.width,
            height=self.config.resolution.height,
            seed=shot.seed,
            runtime=self.config.runtime,
        )

    def _build_shot(self, board: Storyboard, shot: Shot) -> None:
        path = self.project.shot_path(shot.id)
        request = self._shot_request(board, shot)
        recipe = self._shot_recipe(board, shot)
        with atomic_output(path, self.project.tmp_dir) as temp:
            self.shot_backend.render(request, temp, self.encode, self.reporter.step)
        self.manifest.put("shots", shot.id, Record(recipe, self.hasher(path) or ""))

    def _build_group(self, board: Storyboard, group: list[Shot]) -> None:
        """Render a group in one backend call; its shots appear together, once all are made."""
        scene = self._scene_fields(group[0].scene, group)
        request = SceneRequest(
            scene_id=group[0].scene,
            location=scene["location"],
            time_of_day=scene["time of day"],
            description=scene["description"],
            style=scene["style"],
            cast=tuple(scene["cast"].items()),
            shots=tuple(self._shot_request(board, s) for s in group),
        )
        recipes = [self._shot_recipe(board, s) for s in group]
        paths = [self.project.shot_path(s.id) for s in group]
        with contextlib.ExitStack() as outputs:
            temps = [outputs.enter_context(atomic_output(p, self.project.tmp_dir)) for p in paths]
            self.shot_backend.render_group(request, temps, self.encode, self.reporter.step)
        for shot, path, recipe in zip(group, paths, recipes):
            self.manifest.put("shots", shot.id, Record(recipe, self.hasher(path) or ""))

    def _preflight_shots(self, status: ProjectStatus, force: set[str]) -> None:
        """The shot backend's own checks (weights present, memory enough) before anything is
        written, when the shot stage may have work."""
        current = status.story.state == DONE and all(
            r.keyframe.state == DONE and r.shot.state == DONE for r in status.shots
        )
        if current and not force:
            return
        board = self.project.storyboard if self.project.has_storyboard() else None
        if board is None:  # the story stage writes it first; shots will be about shot_seconds long
            frames: tuple[int, ...] = (self._snap(max(1, round(self.config.shot_seconds * self.config.fps))),)
            continuous = 0
        else:
            frames = tuple(sum(self.frames_of(s) for s in group) for group in self._groups(board))
            continuous = sum(s.transition == "continuous" for s in board.shots[1:])
        plan = RenderPlan(
            width=self.config.resolution.width, height=self.config.resolution.height, fps=self.config.fps,
            frames=frames, runtime=self.config.runtime, continuous=continuous,
        )
        self.notices.extend(self.shot_backend.preflight(plan))

    def _snapped_notice(self, shots: list[Shot]) -> None:
        snapped = [f"{s.id} {r}->{f}" for s in shots if (f := self.frames_of(s)) != (r := self.requested_frames(s))]
        if snapped:
            self.notices.append(
                f"video: {self.shot_backend.name} makes only some frame counts, so shot lengths were snapped "
                f"(frames at {self.config.fps} fps): {', '.join(snapped)}"
            )
