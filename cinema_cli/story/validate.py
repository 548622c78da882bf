"""Checking an LLM's reply before anything is written: the JSON, the storyboard schema,
and this project's rules (scenes of the script, the declared cast, the configured
duration range, unique ids, non-empty captions).

Problems come back as short `field: message` lines, every one found in one pass (the
script checks only look at shots that passed the schema), so a repair turn can fix
them together and a final error can show them to the user.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cinema_cli.project.schema import (
    CinemaConfig,
    Script,
    Shot,
    Storyboard,
    check_storyboard_against_script,
)
from cinema_cli.project.yamlio import validation_error
from cinema_cli.story.base import shot_seed
from cinema_cli.story.llm_options import LLMOptions


_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n(.*?)\n?```\s*$", re.S)


class InvalidReply(Exception):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def storyboard_from_reply(text: str, script: Script, config: CinemaConfig, options: LLMOptions) -> Storyboard:
    """The storyboard in an LLM reply, or InvalidReply with every problem found."""
    data = _json_object(text)
    raw_shots = data.get("shots")
    if not isinstance(raw_shots, list) or not raw_shots:
        raise InvalidReply(['shots: expected a non-empty list of shot objects under "shots"'])
    problems: list[str] = []
    shots: list[tuple[int, Shot]] = []
    for i, raw in enumerate(raw_shots):
        if not isinstance(raw, dict):
            problems.append(f"shots.{i}: expected a shot object, found {type(raw).__name__}")
            continue
        shot_id = raw.get("id")
        # Seeds and locks are cinema's, not the model's: seeds stay stable per shot id.
        fields = {**raw, "seed": shot_seed(config.seed, shot_id) if isinstance(shot_id, str) else 0,
                  "locked": False}
        shot = _shot(fields, f"shots.{i}.", problems)
        if shot is not None:
            shots.append((i, shot))
            problems += _duration_problems(shot, f"shots.{i}.", options)
    ids = [shot.id for _, shot in shots]
    dupes = sorted({d for d in ids if ids.count(d) > 1})
    if dupes:
        problems.append(f"shots: duplicate id {', '.join(dupes)}; every shot needs its own id")
    problems += _script_problems([shot for _, shot in shots], [i for i, _ in shots], script, "shots.{}.")
    if problems:
        raise InvalidReply(problems)
    return Storyboard(shots=[shot for _, shot in shots])


def shot_from_reply(text: str, script: Script, options: LLMOptions, old: Shot) -> Shot:
    """The rewritten shot in an LLM reply; it keeps the old shot's id, scene, seed and
    lock (its place in the film and its take), or InvalidReply."""
    data = _json_object(text)
    problems: list[str] = []
    shot = _shot({**data, "id": old.id, "scene": old.scene, "seed": old.seed, "locked": old.locked}, "", problems)
    if shot is not None:
        problems += _duration_problems(shot, "", options)
        problems += _script_problems([shot], [0], script, "")
    if problems:
        raise InvalidReply(problems)
    assert shot is not None
    return shot


def _json_object(text: str) -> dict[str, Any]:
    if not text.strip():
        raise InvalidReply(["the reply is empty; answer with the JSON object"])
    fenced = _FENCE.match(text)  # local models like to wrap JSON in a code block
    try:
        data = json.loads(fenced[1] if fenced else text)
    except json.JSONDecodeError as err:
        problem = f"the reply is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"
        raise InvalidReply([problem]) from None
    if not isinstance(data, dict):
        raise InvalidReply([f"expected a JSON object, found {type(data).__name__}"])
    return data


def _shot(fields: dict[str, Any], prefix: str, problems: list[str]) -> Shot | None:
    try:
        return Shot.model_validate(fields)
    except ValidationError as err:
        # The same field messages a hand-written storyboard.yaml gets.
        problems += [f"{prefix}{field or 'shot'}: {message}"
                     for _, field, message in validation_error(Path("reply"), err, None).problems]
        return None


def _duration_problems(shot: Shot, prefix: str, options: LLMOptions) -> list[str]:
    if options.min_seconds <= shot.duration <= options.max_seconds:
        return []
    return [f"{prefix}duration: {shot.duration:g} s is outside the allowed "
            f"{options.min_seconds:g} to {options.max_seconds:g} s"]


def _script_problems(shots: list[Shot], indexes: list[int], script: Script, prefix: str) -> list[str]:
    """Unknown scenes and characters, with the field paths of the reply."""
    board = Storyboard.model_construct(shots=shots)  # already validated shot by shot
    problems = []
    for field, message in check_storyboard_against_script(board, script):
        _, position, rest = field.split(".", 2)
        problems.append(f"{prefix.format(indexes[int(position)])}{rest}: "
                        f"{message.replace('script.yaml', 'the script')}")
    return problems
