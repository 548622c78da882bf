"""What a line typed into `cinema direct` means.

    <Mara> steps out of the car into the rain, wide     a new shot (a bare line is a cut)
    cut: close-up, <Mara> looks up at the clock         a new shot
    continue: she starts walking                        the current shot goes on, new prompt
    undo                                                drop the last shot
    quit                                                end the session

A first or last comma-separated part that reads as a camera ("wide", "close-up,
push-in") sets the shot's camera instead of being part of its caption. `<Name>` tags
must name the cast of script.yaml. A line starting with `#` is a comment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from cinema_cli.errors import BadInput
from cinema_cli.project.schema import CHARACTER_TAG, caption_tags, format_camera, parse_camera

MAX_CAPTION = 1000
_DIRECTIVE = re.compile(r"^(cut|continue)\s*:\s*(.*)$", re.IGNORECASE | re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class BadLine(BadInput):
    """A line that is not a shot, `undo` or `quit`; the session says why and goes on."""


@dataclass(frozen=True)
class Direction:
    """One shot to make: a cut to something new, or the current shot continuing."""

    kind: Literal["cut", "continue"]
    caption: str
    camera: str | None  # "FRAMING, MOVE" when the line gave one


@dataclass(frozen=True)
class Command:
    name: Literal["undo", "quit", "comment"]


def parse_line(line: str, cast: list[str]) -> Direction | Command:
    """The meaning of `line`; BadLine when it has none."""
    text = line.strip()
    if text.startswith("#"):
        return Command("comment")
    if text.lower() in ("undo", "quit", "exit"):
        return Command("quit" if text.lower() == "exit" else text.lower())  # type: ignore[arg-type]
    if not text:
        raise BadLine("an empty line is not a shot: type what the camera sees, `undo` or `quit`")
    kind: Literal["cut", "continue"] = "cut"
    match = _DIRECTIVE.match(text)
    if match:
        kind, text = match[1].lower(), match[2].strip()  # type: ignore[assignment]
        if not text:
            raise BadLine(f"`{kind}:` needs a prompt after it, e.g. `{kind}: <Name> turns to the window`")
    caption, camera = _split_camera(text)
    _check_caption(caption, cast)
    return Direction(kind, caption, camera)


def _split_camera(text: str) -> tuple[str, str | None]:
    """A leading or trailing comma-separated camera directive, taken off the caption."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > 1:
        for index in (0, len(parts) - 1):
            if not parts[index] or CHARACTER_TAG.search(parts[index]):
                continue
            try:
                camera = format_camera(*parse_camera(parts[index]))
            except ValueError:
                continue
            rest = ", ".join(p for i, p in enumerate(parts) if i != index)
            if rest:
                return rest, camera
    return text, None


def _check_caption(caption: str, cast: list[str]) -> None:
    if len(caption) > MAX_CAPTION:
        raise BadLine(f"the prompt is {len(caption)} characters; a shot's prompt is at most {MAX_CAPTION}")
    if _CONTROL.search(caption):
        raise BadLine("the prompt holds control characters; type plain text")
    if not any(ch.isalpha() for ch in CHARACTER_TAG.sub(r"\1", caption)):
        raise BadLine(f"{caption!r} has no words: describe what the camera sees")
    if CHARACTER_TAG.sub("", caption).count("<") or CHARACTER_TAG.sub("", caption).count(">"):
        raise BadLine(f"{caption!r} has a stray < or >: tag the cast as <Name>")
    unknown = [name for name in caption_tags(caption) if name not in cast]
    if unknown:
        raise BadLine(f"{', '.join(f'<{n}>' for n in unknown)} is not in the cast of script.yaml "
                      f"(cast: {', '.join(f'<{n}>' for n in cast) or 'none'}); add them to `characters` "
                      "there or untag the name")
