"""The keyframe stage: one image per shot, conditioned on the context its memory chose."""

from __future__ import annotations

import json

from cinema_cli.keyframes.base import CharacterLook, ContextFrame, KeyframePlan, KeyframeRequest
from cinema_cli.pipeline.state import DONE, STALE, ArtifactState, ProjectStatus
from cinema_cli.project.files import atomic_output, atomic_write_text
from cinema_cli.project.manifest import Record, canonical_hash
from cinema_cli.project.schema import Shot


class KeyframeStage:
    """Methods of Pipeline for the keyframe stage."""

    def _keyframe_recipe(self, shot: Shot) -> dict:
        # No scene only in a storyboard the story stage will regenerate (check_storyboard).
        scene = self.script.scene(shot.scene)
        cast = {}
        for name in shot.characters:
            character = self.script.character(name)
            refs = [self.hasher(p) for p in self.project.character_reference_paths(name)]
            cast[name] = {"description": character.description if character else "", "references": refs}
        backend = self.keyframe_backend
        return {
            "caption": shot.caption,
            "characters": shot.characters,
            "camera": shot.camera,
            "seed": shot.seed,
            "scene": shot.scene,
            "location": scene.location if scene else None,
            "time of day": scene.time if scene else None,
            "cast": cast,
            "style": self.script.style,
            "resolution": str(self.config.resolution),
            "backend": backend.name,
            "backend version": backend.version,
            "backend options": backend.options.model_dump(mode="json"),
            "memory": self.memory.recipe,
        }

    def _keyframe_state(self, shot: Shot, states: dict[str, ArtifactState]) -> tuple[ArtifactState, list[dict]]:
        path = self.project.keyframe_path(shot.id)
        record = self.manifest.get("keyframes", shot.id)
        context = list(record.recipe.get("context", [])) if record else []
        state = self._evaluate(path, record, self._keyframe_recipe(shot), ignore=("context",))
        if state.state == DONE:
            for entry in context:
                if "path" in entry:  # a character's reference image, not a keyframe
                    if self.hasher(self.project.root / entry["path"]) != entry["output"]:
                        state.reasons.append(f"context reference {entry['path']} changed")
                    continue
                upstream = states.get(entry["shot"])
                if upstream is None or upstream.state != DONE:
                    state.reasons.append(f"context keyframe {entry['shot']} is stale")
                elif self.hasher(self.project.keyframe_path(entry["shot"])) != entry["output"]:
                    state.reasons.append(f"context keyframe {entry['shot']} changed")
            if state.reasons:
                state.state = STALE
        public_context = [{k: v for k, v in e.items() if k != "output"} for e in context]
        return state, public_context

    def _build_keyframe(self, shot: Shot) -> None:
        scene = self.script.scene(shot.scene)
        assert scene is not None
        # Retrieved from the keyframes before it (all drawn by now, in storyboard order)
        # and the cast's reference images, each at its GoldenMem size.
        width, height = self.config.resolution.width, self.config.resolution.height
        context = tuple(
            ContextFrame(c.candidate.shot, c.candidate.path, round(c.score, 4), c.slot.pixels, c.slot.tokens,
                         c.candidate.caption)
            for c in self.memory.context(self.project.storyboard, shot, width, height)
        )
        request = KeyframeRequest(
            shot_id=shot.id,
            scene_id=shot.scene,
            caption=shot.caption,
            characters=tuple(
                CharacterLook(name, cast.description if cast else "", self.project.character_reference_paths(name))
                for name, cast in ((n, self.script.character(n)) for n in shot.characters)
            ),
            framing=shot.framing,
            move=shot.move,
            location=scene.location,
            time_of_day=scene.time,
            style=self.script.style,
            width=width,
            height=height,
            seed=shot.seed,
            context=context,
            runtime=self.config.runtime,
        )
        image = self.keyframe_backend.render(request, self.reporter.step)
        path = self.project.keyframe_path(shot.id)
        with atomic_output(path, self.project.tmp_dir) as temp:
            image.save(temp, format="PNG")
        recipe = self._keyframe_recipe(shot)
        recipe["context"] = [self._context_entry(c) for c in context]
        output = self.hasher(path) or ""
        sidecar = {
            "shot": shot.id,
            "input_hash": canonical_hash(recipe),
            "backend": self.keyframe_backend.name,
            "backend_version": self.keyframe_backend.version,
            "seed": shot.seed,
            "size": [height, width],
            "context": [{k: v for k, v in e.items() if k != "output"} for e in recipe["context"]],
        }
        atomic_write_text(
            self.project.sidecar_path(shot.id), json.dumps(sidecar, indent=2) + "\n",
            self.project.tmp_dir,
        )
        self.manifest.put("keyframes", shot.id, Record(recipe, output))

    def _context_entry(self, frame: ContextFrame) -> dict:
        """A context frame as the recipe records it: what it is, its size, and the hash of
        the file it was, so a change to that file makes this keyframe stale."""
        entry = {"shot": frame.shot, "score": frame.score, "size": list(frame.size), "tokens": frame.tokens,
                 "output": self.hasher(frame.path)}
        if frame.shot.startswith("@"):  # a reference image: which one of the character's
            entry["path"] = frame.path.relative_to(self.project.root).as_posix()
        return entry

    def _preflight_keyframes(self, status: ProjectStatus, force: set[str]) -> None:
        """The keyframe backend's own checks (weights present, memory enough) before anything
        is written, when the keyframe stage may have work."""
        if status.story.state == DONE and not force and all(r.keyframe.state == DONE for r in status.shots):
            return
        plan = KeyframePlan(self.config.resolution.width, self.config.resolution.height, self.config.runtime)
        self.notices.extend(self.keyframe_backend.preflight(plan))
