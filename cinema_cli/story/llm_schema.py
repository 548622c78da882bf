"""The JSON an LLM storyboarder must answer with, as a response schema.

Derived from the pydantic `Shot` model, then narrowed to this project: the script's
scene ids, its cast and every valid camera directive become enums, durations get the
configured range. Written in the OpenAPI subset that Gemini's structured output accepts:
no `$ref`, `title`, `default` or `pattern`, upper-case type names, and `nullable`
instead of pydantic's `anyOf [X, null]`. The validator checks every reply anyway; the
schema only makes a valid reply the likely one.
"""

from __future__ import annotations

from typing import Any

from cinema_cli.project.schema import Framing, Move, Script, Shot, format_camera
from cinema_cli.story.llm_options import LLMOptions


# What the LLM writes, in this order; cinema itself fills `seed` and `locked`.
SHOT_FIELDS = ("id", "scene", "caption", "characters", "camera", "duration", "transition", "dialogue")
# A rewritten shot keeps its id and scene (its place in the film).
REWRITE_FIELDS = SHOT_FIELDS[2:]

_KEPT = ("description", "enum", "minimum", "maximum", "minItems", "maxItems", "minLength")
_DESCRIPTIONS = {
    "id": "unique shot id, s01, s02, ... in film order",
    "scene": "id of the script scene this shot belongs to",
    "caption": "Captain Cinema style keyframe caption; the cast only as <Name> tags",
    "characters": "every name tagged in the caption, without the angle brackets",
    "camera": "FRAMING, MOVE",
    "duration": "length in seconds",
    "transition": "how this shot joins the one before it",
    "dialogue": "a line spoken in this shot, or null",
}


def storyboard_schema(script: Script, options: LLMOptions) -> dict[str, Any]:
    return {
        "type": "OBJECT",
        "properties": {
            "shots": {"type": "ARRAY", "minItems": 1, "items": shot_schema(script, options, SHOT_FIELDS)}
        },
        "required": ["shots"],
    }


def shot_schema(script: Script, options: LLMOptions, fields: tuple[str, ...]) -> dict[str, Any]:
    source = Shot.model_json_schema()["properties"]
    properties = {name: _openapi(source[name]) | {"description": _DESCRIPTIONS[name]} for name in fields}
    if "scene" in properties:
        properties["scene"]["enum"] = [scene.id for scene in script.scenes]
    cast = [character.name for character in script.characters]
    if cast:
        properties["characters"]["items"]["enum"] = cast
    else:
        properties["characters"]["maxItems"] = 0
    properties["camera"]["enum"] = [format_camera(f, m) for f in Framing for m in Move]
    properties["duration"].update(minimum=options.min_seconds, maximum=options.max_seconds)
    return {
        "type": "OBJECT",
        "properties": properties,
        "required": [name for name in fields if name != "dialogue"],
        "propertyOrdering": list(fields),
    }


def _openapi(node: dict[str, Any]) -> dict[str, Any]:
    """One node of pydantic's JSON schema in Gemini's OpenAPI subset; keywords outside
    it (title, default, pattern, exclusiveMinimum...) are dropped."""
    variants = [v for v in node.get("anyOf", ()) if v.get("type") != "null"]
    if variants:  # Optional[X]: the only union the Shot model has
        return _openapi(variants[0]) | {"nullable": True}
    out: dict[str, Any] = {"type": node["type"].upper()}
    if "items" in node:
        out["items"] = _openapi(node["items"])
    out.update({key: node[key] for key in _KEPT if key in node})
    return out
