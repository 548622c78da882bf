"""Asking an LLM until its reply validates.

The first prompt, then up to REPAIR_TURNS repair turns that send the validator's
problems back with the model's own answer, then a clear error. Nothing is written
until a reply is valid, so a failed conversation leaves storyboard.yaml as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from cinema_cli.errors import BackendError
from cinema_cli.story.prompts import repair_prompt
from cinema_cli.story.validate import InvalidReply

REPAIR_TURNS = 2
SHOWN_PROBLEMS = 12  # a final error lists at most this many

log = logging.getLogger(__name__)
T = TypeVar("T")

Turn = tuple[str, str]  # (role, text); role is "user" or "model"


class Chat(Protocol):
    """One request to the model: the conversation so far in, the reply's text out."""

    def __call__(self, turns: Sequence[Turn], schema: dict) -> str: ...


def ask_until_valid(chat: Chat, prompt: str, schema: dict, parse: Callable[[str], T], who: str, what: str) -> T:
    turns: list[Turn] = [("user", prompt)]
    tries = REPAIR_TURNS + 1
    for attempt in range(1, tries + 1):
        reply = chat(turns, schema)
        try:
            return parse(reply)
        except InvalidReply as err:
            problems = err.problems
        log.info("%s: %s was invalid (%d problems), try %d of %d", who, what, len(problems), attempt, tries)
        if attempt < tries:
            turns += [("model", reply), ("user", repair_prompt(problems))]
    shown = "\n".join(f"  - {p}" for p in problems[:SHOWN_PROBLEMS])
    more = f"\n  ... and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
    raise BackendError(
        f"{who} gave no valid {what} in {tries} tries (the last {REPAIR_TURNS} with the "
        f"problems sent back), so nothing was written. The last answer's problems:\n{shown}{more}"
    )
