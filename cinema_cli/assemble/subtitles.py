"""Dialogue as subtitles: one SRT cue per shot that has dialogue, shown from the cut
into the shot to the cut out of it (`timeline`: the centre of a crossfade's overlap),
so consecutive cues never overlap."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cinema_cli.assemble.timeline import Timeline


@dataclass(frozen=True)
class Cue:
    start_ms: int
    end_ms: int
    text: str


def frame_ms(frame: int, fps: int) -> int:
    """A film frame's start in whole milliseconds (SRT's resolution)."""
    return round(frame * 1000 / fps)


def dialogue_cues(timeline: Timeline, dialogue: dict[str, str]) -> list[Cue]:
    """Cues for the shots in `dialogue` (shot id -> text), in film order."""
    cues = []
    for shot in timeline.shots:
        text = dialogue.get(shot.id, "").strip()
        if text:
            # A blank line ends an SRT cue, so the text must not contain one.
            text = re.sub(r"\n\s*\n+", "\n", text)
            cues.append(Cue(frame_ms(shot.cut_in, timeline.fps), frame_ms(shot.cut_out, timeline.fps), text))
    return cues


def _timestamp(ms: int) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d},{millis:03d}"


def srt_text(cues: list[Cue]) -> str:
    return "".join(
        f"{index}\n{_timestamp(cue.start_ms)} --> {_timestamp(cue.end_ms)}\n{cue.text}\n\n"
        for index, cue in enumerate(cues, start=1)
    )
