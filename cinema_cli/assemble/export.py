"""The film's cut as an editor's timeline: OpenTimelineIO (`.otio`) or a CMX 3600 EDL.

One video track, one clip per shot in film order. A clip references its whole
`shots/ID.mp4` (the media's available range) and uses the part between its cut points
(`timeline`: the centre of a crossfade's overlap), so the track is exactly as long as
film.mp4. A crossfade is an OTIO SMPTE dissolve centred on the cut point, `fade // 2`
frames before it and the rest after, which the shots' own frames cover as handles: the
editor's dissolve shows exactly the frames film.mp4 blends. Each clip carries a marker
with its caption and the shot's fields as metadata.

Media are referenced by absolute `file://` URLs: DaVinci Resolve and the OTIO adapters
Premiere workflows go through resolve those directly, while a relative URL would be
taken relative to the editing application's working folder, not the timeline file.
After moving the project, relink (both editors match the file names, which are the shot
ids).

EDL timecode exists only at SMPTE rates, so an EDL needs a project fps of 24, 25, 30,
48, 50 or 60 (integer rates: non-drop frame). It is written by OTIO's cmx_3600 adapter,
which puts a dissolve as a `D` event of the full crossfade length starting where the
overlap starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import opentimelineio as otio
from opentimelineio.opentime import RationalTime, TimeRange

from cinema_cli.assemble.timeline import Timeline
from cinema_cli.errors import BadInput

FORMATS = ("otio", "edl")
EDL_RATES = (24, 25, 30, 48, 50, 60)


@dataclass(frozen=True)
class ShotInfo:
    id: str
    scene: str
    caption: str
    transition: str
    dialogue: str | None
    path: Path  # the shot's video file


def build_timeline(title: str, timeline: Timeline, shots: list[ShotInfo]) -> otio.schema.Timeline:
    """The OTIO timeline of the film; `shots` in the order of `timeline.shots`."""
    fps = timeline.fps

    def frames(n: int) -> RationalTime:
        return RationalTime(n, fps)

    track = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    for placed, shot in zip(timeline.shots, shots, strict=True):
        if placed.fade_in:
            track.append(otio.schema.Transition(
                name=f"crossfade {track[-1].name} to {shot.id}",
                transition_type=otio.schema.TransitionTypes.SMPTE_Dissolve,
                in_offset=frames(placed.fade_in // 2),
                out_offset=frames(placed.fade_in - placed.fade_in // 2),
            ))
        first = placed.cut_in - placed.start  # the shot's frame at its cut point
        media = otio.schema.ExternalReference(
            target_url=shot.path.resolve().as_uri(),
            available_range=TimeRange(frames(0), frames(placed.frames)),
        )
        media.name = shot.id  # the EDL adapter's reel name
        clip = otio.schema.Clip(
            name=shot.id,
            media_reference=media,
            source_range=TimeRange(frames(first), frames(placed.cut_out - placed.cut_in)),
            metadata={"cinema": {
                "shot": shot.id, "scene": shot.scene, "caption": shot.caption,
                "transition": shot.transition, "dialogue": shot.dialogue,
            }},
        )
        clip.markers.append(otio.schema.Marker(
            name=" ".join(shot.caption.split()),  # one line: EDL comments are lines
            marked_range=TimeRange(frames(first), frames(1)),
            metadata={"cinema": {"shot": shot.id}},
        ))
        track.append(clip)
    result = otio.schema.Timeline(name=title, global_start_time=frames(0))
    result.tracks.append(track)
    return result


def timeline_text(timeline: otio.schema.Timeline, fmt: str, fps: int) -> str:
    """The timeline serialised as `fmt` (otio | edl)."""
    if fmt == "otio":
        return otio.adapters.write_to_string(timeline, adapter_name="otio_json")
    if fmt != "edl":
        raise BadInput(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if fps not in EDL_RATES:
        raise BadInput(
            f"an EDL needs SMPTE timecode, which exists at {', '.join(map(str, EDL_RATES))} fps; "
            f"this project runs at {fps} fps: export --format otio instead, or change fps in cinema.yaml"
        )
    # The adapter trims clips to its own dissolve convention in place: give it a copy.
    text = otio.adapters.write_to_string(
        timeline.deepcopy(), adapter_name="cmx_3600", rate=fps, style="avid"
    )
    # The adapter leaves out the frame code mode; integer rates are non-drop frame.
    title, _, events = text.partition("\n") if text.startswith("TITLE:") else ("", "", text)
    return f"{title}\nFCM: NON-DROP FRAME\n{events}".lstrip("\n")
