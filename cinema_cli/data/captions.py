"""Captions for a dataset's keyframes and multi-shot samples.

- gemini: the shipped annotation prompt (templates/prompts/caption_frame.txt) with the
  keyframe, through the storyboarder's Gemini transport (key from the environment,
  timeouts, retries on 429/5xx) and its ask-until-valid loop: a reply that is not the
  JSON asked for, or tags someone outside the cast, gets the problems sent back, then
  is refused. A multi-shot sample's global caption is asked for from its shots' captions
  (caption_scene.txt).
- sidecar: captions the user wrote, one YAML file per film (FILM.captions.yaml beside
  the film, or in captions.sidecar_dir): `shots:` keyed by shot index or by a timestamp
  inside the shot ("0:01:23.5"), and an optional `global:` caption for the film's
  multi-shot samples. Tags outside the cast are refused here too.
- none: no captions.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cinema_cli.data.config import CaptionSettings
from cinema_cli.errors import BadInput, ProjectFileError
from cinema_cli.project.schema import Character, caption_tags
from cinema_cli.project.yamlio import line_of, load_model, load_yaml
from cinema_cli.story.prompts import render
from cinema_cli.story.repair import ask_until_valid
from cinema_cli.story.validate import InvalidReply, _json_object

VERSION = "1"  # of the reply handling; part of every caption's recipe


class Cast(BaseModel):
    """cast.yaml: the characters captions may tag, as in script.yaml."""

    model_config = ConfigDict(extra="forbid")
    characters: list[Character] = Field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.characters]


def load_cast(path: Path | None) -> Cast:
    if path is None:
        return Cast()
    if path.is_dir():
        raise BadInput(f"--cast {path}: is a folder; give a cast YAML file (characters: [{{name, description}}])")
    return load_model(path, Cast)


def cast_text(cast: Cast) -> str:
    return "\n".join(f"- <{c.name}>: {c.description or '(no description)'}" for c in cast.characters) \
        or "(none: tag nobody)"


def cast_problems(caption: str, cast: Cast, field: str = "caption") -> list[str]:
    unknown = [name for name in caption_tags(caption) if name not in cast.names]
    if not unknown:
        return []
    allowed = ", ".join(f"<{n}>" for n in cast.names) or "none (the cast list is empty)"
    return [f"{field}: tags {', '.join(f'<{n}>' for n in unknown)} outside the cast; allowed: {allowed}"]


def parse_caption(text: str, cast: Cast) -> dict:
    """{"caption", "characters"} from a model's JSON reply, or InvalidReply."""
    data = _json_object(text)
    caption = data.get("caption")
    if not isinstance(caption, str) or not caption.strip():
        raise InvalidReply(['caption: expected a non-empty string under "caption"'])
    problems = cast_problems(caption, cast)
    if problems:
        raise InvalidReply(problems)
    return {"caption": caption.strip(), "characters": caption_tags(caption)}


def _schema(cast: Cast) -> dict[str, Any]:
    characters: dict[str, Any] = {"type": "ARRAY", "items": {"type": "STRING"}}
    if cast.names:
        characters["items"]["enum"] = cast.names
    else:
        characters["maxItems"] = 0
    return {"type": "OBJECT", "properties": {
        "caption": {"type": "STRING", "description": "the paragraph; the cast only as <Name> tags"},
        "characters": characters | {"description": "every name tagged in the caption, without brackets"},
    }, "required": ["caption", "characters"], "propertyOrdering": ["caption", "characters"]}


class GeminiCaptioner:
    who = "Gemini"

    def __init__(self, settings: CaptionSettings, cast: Cast):
        from cinema_cli.story.gemini_transport import GeminiTransport

        self.cast = cast
        self.transport = GeminiTransport(model=settings.model, base_url=None, timeout=settings.timeout,
                                         retries=settings.retries, backoff=settings.backoff)

    def _ask(self, prompt: Any, what: str) -> dict:
        return ask_until_valid(lambda turns, schema: self.transport.generate(turns, schema), prompt,
                               _schema(self.cast), lambda reply: parse_caption(reply, self.cast), self.who, what)

    def keyframe(self, jpeg: bytes) -> dict:
        prompt = render("caption_frame", cast=cast_text(self.cast))
        return self._ask([prompt, ("image/jpeg", jpeg)], "keyframe caption")

    def scene(self, shot_captions: list[str]) -> dict:
        shots = "\n".join(f"{i + 1}. {caption}" for i, caption in enumerate(shot_captions))
        return self._ask(render("caption_scene", shots=shots, cast=cast_text(self.cast)), "global caption")


def prompt_identity(cast: Cast) -> str:
    """What the prompts say, for recipes: a changed prompt or cast redoes the captions."""
    return render("caption_frame", cast=cast_text(cast)) + "\n" + render("caption_scene", shots="", cast=cast_text(cast))


# ---------------------------------------------------------------- sidecar files

_TIMESTAMP = re.compile(r"^(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)$")


def sidecar_path(film: Path, settings: CaptionSettings) -> Path:
    folder = Path(settings.sidecar_dir).expanduser() if settings.sidecar_dir else film.parent
    return folder / f"{film.stem}.captions.yaml"


def load_sidecar(path: Path, spans: list[dict], cast: Cast) -> dict:
    """{"shots": {index: {"caption", "characters"}}, "global": {...} | None} from a sidecar
    file, every problem named with file, line and field."""
    if not path.is_file():
        raise BadInput(f"captions are sidecar, but {path} does not exist: write one caption per shot "
                       "(shots: {0: \"...\", \"0:01:05.0\": \"...\"}), or choose --captions none")
    data, node = load_yaml(path)
    data = data or {}
    problems: list[tuple[int | None, str, str]] = []
    if not isinstance(data, dict) or not set(data) <= {"shots", "global"}:
        raise ProjectFileError(path, [(1, "", "expected a mapping with `shots:` and optionally `global:`")])
    shots: dict[int, dict] = {}
    for key, caption in (data.get("shots") or {}).items():
        loc = ("shots", key)
        index = _shot_for(key, spans)
        if index is None:
            problems.append((line_of(node, loc), f"shots.{key}", "not a shot index or a timestamp inside a shot "
                             f"(this film has shots 0 to {len(spans) - 1})"))
        elif not isinstance(caption, str) or not caption.strip():
            problems.append((line_of(node, loc), f"shots.{key}", "expected a caption (text)"))
        else:
            problems += [(line_of(node, loc), f"shots.{key}", p.split(": ", 1)[1]) for p in cast_problems(caption, cast)]
            shots[index] = {"caption": caption.strip(), "characters": caption_tags(caption)}
    film_caption = data.get("global")
    if film_caption is not None and not (isinstance(film_caption, str) and film_caption.strip()):
        problems.append((line_of(node, ("global",)), "global", "expected a caption (text)"))
    elif film_caption is not None:
        problems += [(line_of(node, ("global",)), "global", p.split(": ", 1)[1])
                     for p in cast_problems(film_caption, cast)]
    if problems:
        raise ProjectFileError(path, problems)
    whole = {"caption": film_caption.strip(), "characters": caption_tags(film_caption)} if film_caption else None
    return {"shots": shots, "global": whole}


def _shot_for(key: Any, spans: list[dict]) -> int | None:
    if isinstance(key, int) and not isinstance(key, bool):
        return key if 0 <= key < len(spans) else None
    match = _TIMESTAMP.match(str(key).strip())
    if not match:
        return None
    seconds = int(match[1] or 0) * 3600 + int(match[2]) * 60 + float(match[3])
    return next((s["index"] for s in spans if s["start"] <= seconds < s["end"]), None)
