"""A keyframe request as text for a text-to-image model.

A model does not know who <Mara> is: each tagged name is written out with the
character's description from script.yaml at its first mention, and the shot size and the
project's style are added, so every keyframe of the film is asked for the same people in
the same look.
"""

from __future__ import annotations

from cinema_cli.keyframes.base import KeyframeRequest
from cinema_cli.project.schema import CHARACTER_TAG, Framing

SHOT_SIZE = {
    Framing.extreme_wide: "Extreme wide shot",
    Framing.wide: "Wide shot",
    Framing.medium: "Medium shot",
    Framing.close_up: "Close-up",
    Framing.extreme_close_up: "Extreme close-up",
}


def keyframe_prompt(request: KeyframeRequest) -> str:
    looks = {c.name: c.description.strip() for c in request.characters}
    described: set[str] = set()

    def expand(match) -> str:
        name = match[1]
        if name in described or not looks.get(name):
            return name
        described.add(name)
        return f"{name} ({looks[name]})"

    caption = CHARACTER_TAG.sub(expand, request.caption).strip()
    parts = [f"{SHOT_SIZE[request.framing]}.", caption if caption.endswith((".", "!", "?")) else f"{caption}."]
    if request.style.strip():
        parts.append(f"Style: {request.style.strip().rstrip('.')}.")
    return " ".join(parts)
