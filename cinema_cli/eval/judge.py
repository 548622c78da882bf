"""`eval judge`: Captain Cinema's Gemini judge (its Appendix H).

The film's keyframes go to Gemini in story order, one picture per shot (a folder's
video gives its middle sampled frame), with the six-aspect rubric of
templates/prompts/judge.txt: character consistency, scene consistency, visual quality,
aesthetics, diversity, narrative coherence, each an integer 0-5 with a one-sentence
justification. The answer is validated; an invalid one is sent back with its problems
(as storyboarding does), and 429/5xx answers are retried with backoff by the same
transport, then a clear error. The key comes from GEMINI_API_KEY / GOOGLE_API_KEY only.
With `per_scene`, each scene of two or more shots is judged on its own too.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence

import numpy as np
from PIL import Image

from cinema_cli.errors import BadInput
from cinema_cli.eval.results import mean
from cinema_cli.eval.sources import Film
from cinema_cli.story.prompts import render
from cinema_cli.story.repair import ask_until_valid
from cinema_cli.story.validate import InvalidReply

NAME = "judge"
KEYFRAMES_ONLY = True  # a project's keyframes, as the paper judged keyframe sequences
ASPECTS = ("character_consistency", "scene_consistency", "visual_quality", "aesthetics", "diversity",
           "narrative_coherence")
KEYS = [*ASPECTS, "mean"]
MAX_FRAMES = 48  # the longest sequence the paper judged
LONG_SIDE = 512  # pixels of a picture sent: enough to judge faces, small to send
DEFAULTS = {"model": "gemini-2.5-flash", "timeout": 120.0, "retries": 4, "backoff": 2.0, "per_scene": False}
_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n(.*?)\n?```\s*$", re.S)


def schema() -> dict:
    aspect = {"type": "OBJECT", "properties": {"score": {"type": "INTEGER"}, "justification": {"type": "STRING"}},
              "required": ["score", "justification"]}
    return {"type": "OBJECT", "properties": {a: aspect for a in ASPECTS}, "required": list(ASPECTS)}


def scores_from_reply(text: str) -> dict:
    """{aspect: {"score", "justification"}}, or InvalidReply with every problem."""
    fenced = _FENCE.match(text)
    try:
        data = json.loads(fenced[1] if fenced else text)
    except json.JSONDecodeError as err:
        raise InvalidReply([f"the reply is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"]) from None
    if not isinstance(data, dict):
        raise InvalidReply([f"expected a JSON object, found {type(data).__name__}"])
    problems, scores = [], {}
    for aspect in ASPECTS:
        entry = data.get(aspect)
        if not isinstance(entry, dict):
            problems.append(f"{aspect}: missing; expected {{\"score\": 0-5, \"justification\": \"...\"}}")
            continue
        score, why = entry.get("score"), entry.get("justification")
        if isinstance(score, float) and score.is_integer():
            score = int(score)
        if not isinstance(score, int) or isinstance(score, bool) or not 0 <= score <= 5:
            problems.append(f"{aspect}.score: {score!r} is not an integer from 0 to 5")
        if not isinstance(why, str) or not why.strip():
            problems.append(f"{aspect}.justification: expected one sentence saying why")
        scores[aspect] = {"score": score, "justification": why.strip() if isinstance(why, str) else why}
    extra = sorted(set(data) - set(ASPECTS))
    if extra:
        problems.append(f"unknown aspect {extra[0]!r}; the aspects are {', '.join(ASPECTS)}")
    if problems:
        raise InvalidReply(problems)
    return scores


def png(frame: np.ndarray) -> tuple[str, bytes]:
    """A keyframe as a picture part of a Gemini turn: (mime type, bytes)."""
    image = Image.fromarray(frame)
    scale = min(1.0, LONG_SIDE / max(image.size))
    if scale < 1.0:
        image = image.resize((round(image.width * scale), round(image.height * scale)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "image/png", buffer.getvalue()


class Judge:
    def __init__(self, options: dict) -> None:
        self.options = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
        from cinema_cli.story.gemini_transport import GeminiTransport

        o = self.options
        try:
            self.transport = GeminiTransport(model=o["model"], base_url=None, timeout=o["timeout"],
                                             retries=o["retries"], backoff=o["backoff"])
        except BadInput:
            raise BadInput("eval judge asks Gemini and needs an API key: set GEMINI_API_KEY (or GOOGLE_API_KEY) "
                           "in the environment; cinema never writes it to a file") from None

    def __call__(self, frames: Sequence[np.ndarray], captions: Sequence[str] = ()) -> dict:
        listed = "".join(f"\n{i + 1}. {c}" for i, c in enumerate(captions) if c)
        text = render("judge", count=len(frames),
                      captions=f"\n\nWhat each keyframe was meant to show:{listed}" if listed else "")
        scores = ask_until_valid(lambda turns, schema_: self.transport.generate(turns, schema_),
                                 [text, *map(png, frames)], schema(), scores_from_reply, "Gemini", "judgement")
        return {"scores": scores, **{a: scores[a]["score"] for a in ASPECTS},
                "mean": mean(scores[a]["score"] for a in ASPECTS)}


def spread(items: list, limit: int) -> list:
    """At most `limit` items, evenly spread, first and last kept."""
    if len(items) <= limit:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def measure(film: Film, tools) -> dict:
    judge = Judge(tools.models.judge)
    shots = spread(film.shots, MAX_FRAMES)
    notices = [f"the film has {len(film.shots)} shots; {MAX_FRAMES} of them, evenly spread, were judged"] \
        if len(shots) < len(film.shots) else []
    whole = judge([s.frames[len(s.frames) // 2] for s in shots], [s.caption for s in shots])
    scenes = []
    if judge.options["per_scene"]:
        for scene in film.scenes:
            members = [s for s in shots if s.scene == scene]
            if len(members) >= 2:
                verdict = judge([s.frames[len(s.frames) // 2] for s in members], [s.caption for s in members])
                scenes.append({"scene": scene, "shots": len(members), **{k: verdict[k] for k in KEYS},
                               "justifications": {a: verdict["scores"][a]["justification"] for a in ASPECTS}})
    return {"models": {"judge": judge.options["model"]}, "summary": {k: whole[k] for k in KEYS},
            "justifications": {a: whole["scores"][a]["justification"] for a in ASPECTS},
            "judged": [s.id for s in shots], "shots": [], "scenes": scenes, "notices": notices}
