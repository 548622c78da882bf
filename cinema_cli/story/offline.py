"""The offline storyboarder: a deterministic expansion of the script's beats into shots,
one shot per beat. No network, no model; it is the default when no LLM is configured."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

from cinema_cli.project.schema import (
    Beat,
    CinemaConfig,
    Scene,
    Script,
    Shot,
    Storyboard,
    caption_tags,
    format_camera,
    parse_camera,
)
from cinema_cli.story.base import shot_seed, storyboarders

# A beat that names no camera gets one from its place in the scene: an establishing
# wide shot first, then a rotation that keeps consecutive shots visually distinct.
_ROTATION = ("medium, push-in", "close-up, static", "medium, pan-right", "wide, static",
             "close-up, push-in", "medium, tilt-up")
_INTIMATE = re.compile(r"\b(eyes?|face|tears?|whispers?|sweat|hands?|lips|smiles?|stares?)\b", re.I)


class OfflineOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@storyboarders.register
class OfflineStoryboarder:
    name = "offline"
    version = "1"
    Options = OfflineOptions
    notice = (
        "storyboard.yaml was written by the offline storyboarder (one shot per beat, no LLM); "
        "`cinema story --llm gemini` asks Gemini instead (with GEMINI_API_KEY set)"
    )

    def __init__(self, options: OfflineOptions) -> None:
        self.options = options

    def storyboard(self, script: Script, config: CinemaConfig) -> Storyboard:
        shots: list[Shot] = []
        total = sum(len(scene.beats) for scene in script.scenes)
        width = max(2, len(str(total)))
        for scene in script.scenes:
            for index, beat in enumerate(scene.beats):
                shot_id = f"s{len(shots) + 1:0{width}d}"
                caption = tag_cast(beat.text, [c.name for c in script.characters])
                shots.append(
                    Shot(
                        id=shot_id,
                        scene=scene.id,
                        caption=compose_caption(caption, scene),
                        characters=caption_tags(caption),
                        camera=beat.camera or default_camera(beat, index),
                        duration=beat.duration or config.shot_seconds,
                        transition=_transition(beat, scene, index, first=not shots),
                        seed=shot_seed(config.seed, shot_id),
                        dialogue=beat.dialogue,
                    )
                )
        return Storyboard(shots=shots)


def tag_cast(text: str, names: list[str]) -> str:
    """Mark bare mentions of cast names as <Name>; existing tags are left alone."""
    for name in sorted(names, key=len, reverse=True):
        text = re.sub(rf"(?<![<\w]){re.escape(name)}(?![>\w])", f"<{name}>", text)
    return text


def compose_caption(text: str, scene: Scene) -> str:
    """Action first, then setting and time of day, as in Captain Cinema's captions."""
    sentence = _sentence(text)
    if scene.location.lower() in sentence.lower():
        return sentence
    # "a rooftop at dawn" already says when: no "at dawn, dawn".
    said = re.search(rf"\b{re.escape(scene.time.strip().lower())}\b", scene.location.lower()) if scene.time.strip() else True
    setting = scene.location if said else f"{scene.location}, {scene.time}"
    return f"{sentence} {_sentence(setting)}"


def _sentence(text: str) -> str:
    text = text.strip().rstrip(".")
    return f"{text[:1].upper()}{text[1:]}."


def default_camera(beat: Beat, index: int) -> str:
    if index == 0:
        return "wide, static"
    if _INTIMATE.search(beat.text):
        return "close-up, push-in"
    return format_camera(*parse_camera(_ROTATION[(index - 1) % len(_ROTATION)]))


def _transition(beat: Beat, scene: Scene, index: int, first: bool) -> str:
    if first:
        return "cut"
    if beat.transition:
        return beat.transition
    return scene.transition if index == 0 else "cut"
