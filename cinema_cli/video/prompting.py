"""A shot as text for a video model: its caption, with the storyboard's camera directive
(framing and move) written out in words, since a video model reads only text."""

from __future__ import annotations

from cinema_cli.keyframes.prompting import SHOT_SIZE
from cinema_cli.project.schema import Framing, Move, plain_text

CAMERA_MOVE = {
    Move.static: "The camera holds still.",
    Move.push_in: "The camera slowly pushes in.",
    Move.pull_out: "The camera slowly pulls out.",
    Move.pan_left: "The camera pans left.",
    Move.pan_right: "The camera pans right.",
    Move.tilt_up: "The camera tilts up.",
    Move.tilt_down: "The camera tilts down.",
}


def shot_prompt(caption: str, framing: Framing, move: Move) -> str:
    """e.g. "Close-up. Ada turns around. The camera slowly pushes in." """
    text = plain_text(caption).strip()
    sentence = text if text.endswith((".", "!", "?")) else f"{text}."
    return f"{SHOT_SIZE[framing]}. {sentence} {CAMERA_MOVE[move]}"
