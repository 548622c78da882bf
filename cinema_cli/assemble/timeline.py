"""Where each shot lands in the assembled film, in frames.

A crossfade overlaps two shots by `fade` frames (`film.overlaps`, the rule assembly
uses). Wherever one point in time has to stand for the join — a subtitle boundary, the
cut point of an editor's transition, the cut a detector should find — it is the centre
of the overlap: `fade // 2` frames into it. For a cut the overlap is 0 and the cut point
is simply the first frame of the new shot.
"""

from __future__ import annotations

from dataclasses import dataclass

from cinema_cli.assemble.film import overlaps


@dataclass(frozen=True)
class Placed:
    """One shot in the film. Film frames are counted from 0."""

    id: str
    frames: int  # the shot file's length
    start: int  # film frame of the shot's first frame (inside the overlap for a crossfade)
    fade_in: int  # frames it overlaps the shot before (0: a cut, or the first shot)
    cut_in: int  # film frame of the cut point into this shot
    cut_out: int  # film frame of the cut point out of it (the film's end for the last)

    @property
    def end(self) -> int:
        """Film frame just after the shot's last frame."""
        return self.start + self.frames


@dataclass(frozen=True)
class Timeline:
    shots: tuple[Placed, ...]
    fps: int

    @property
    def frames(self) -> int:
        return self.shots[-1].end if self.shots else 0

    def cut_frames(self) -> list[int]:
        """The cut point of every join, in film order."""
        return [shot.cut_in for shot in self.shots[1:]]


def film_timeline(shots: list[tuple[str, int, str]], fps: int, crossfade_frames: int) -> Timeline:
    """Place (id, frames, transition) shots as assembly joins them."""
    fades = overlaps([f for _, f, _ in shots], [t for _, _, t in shots], crossfade_frames)
    starts, cuts = [], []
    position = 0
    for (_, frames, _), fade in zip(shots, fades):
        start = position - fade
        starts.append(start)
        cuts.append(start + fade // 2)
        position = start + frames
    ends = cuts[1:] + [position]
    return Timeline(
        tuple(
            Placed(shot_id, frames, start, fade, cut_in, cut_out)
            for (shot_id, frames, _), fade, start, cut_in, cut_out in zip(shots, fades, starts, cuts, ends)
        ),
        fps,
    )
