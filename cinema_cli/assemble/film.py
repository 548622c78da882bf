"""Assemble shot files into the film.

Cuts ("cut" and "continuous") join by stream copy. Each run of shots joined by
crossfades is rendered once into a segment with ffmpeg's xfade filter, encoded with the
shots' own `h264_args`, and cached by content, so an edit elsewhere in the film does not
re-render it. All segments are then concatenated by stream copy. ffmpeg streams every
step: memory does not grow with the film.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from cinema_cli.assemble.ffmpeg import TAG_BT709, h264_args, mp4_args, run_ffmpeg
from cinema_cli.project.files import atomic_output, temp_path_for
from cinema_cli.video.base import EncodeSettings

TRANSITIONS = ("cut", "crossfade", "continuous")


@dataclass(frozen=True)
class FilmClip:
    path: Path
    frames: int
    # How this clip joins the previous one: "cut" | "crossfade" | "continuous".
    # Ignored for the first clip.
    transition: str


@dataclass
class FilmResult:
    frames: int
    # True when this call encoded nothing: every segment was a shot or a cached segment.
    stream_copied: bool
    segments: int
    # Crossfade segments encoded by this call (cache hits are not counted).
    reencoded_segments: int


def overlaps(frames: list[int], transitions: list[str], crossfade_frames: int) -> list[int]:
    """How many frames each clip overlaps the one before it in the film: the crossfade
    length clamped to half the shorter of the two clips, 0 for a cut (and for the first
    clip, and for a crossfade clamped to nothing). The one rule for the film's timing:
    subtitles, timeline export and cut evaluation use it too."""
    result = []
    for index, (length, transition) in enumerate(zip(frames, transitions)):
        fade = 0
        if index > 0 and transition == "crossfade":
            fade = min(crossfade_frames, frames[index - 1] // 2, length // 2)
        result.append(fade)
    return result


def _runs(clips: list[FilmClip], crossfade_frames: int) -> list[tuple[list[FilmClip], list[int]]]:
    """Split the clips into maximal runs joined by crossfades. Each run comes with the
    length in frames of each of its crossfades (see `overlaps`)."""
    for clip in clips:
        if clip.transition not in TRANSITIONS:
            raise ValueError(f"unknown transition {clip.transition!r} for {clip.path.name}")
    fades = overlaps([c.frames for c in clips], [c.transition for c in clips], crossfade_frames)
    runs: list[tuple[list[FilmClip], list[int]]] = []
    for clip, fade in zip(clips, fades):
        if fade > 0:
            runs[-1][0].append(clip)
            runs[-1][1].append(fade)
        else:
            runs.append(([clip], []))
    return runs


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _xfade_graph(clips: list[FilmClip], fades: list[int], fps: int) -> tuple[str, int]:
    """The xfade filter chain for a run and the run's length in frames."""
    steps = []
    length = clips[0].frames
    previous = "[0:v]"
    for k, (clip, fade) in enumerate(zip(clips[1:], fades), start=1):
        # The fade starts `fade` frames before the end of what is joined so far.
        # Seconds to the microsecond: at the project's timescale that rounds back to
        # exactly this frame.
        offset = (length - fade) / fps
        steps.append(
            f"{previous}[{k}:v]xfade=transition=fade:duration={fade / fps:.6f}"
            f":offset={offset:.6f}[x{k}]"
        )
        previous = f"[x{k}]"
        length += clip.frames - fade
    steps.append(f"{previous}{TAG_BT709}[out]")
    return ";".join(steps), length


def _crossfade_segment(
    clips: list[FilmClip],
    fades: list[int],
    *,
    tmp_dir: Path,
    cache_dir: Path,
    fps: int,
    encode: EncodeSettings,
) -> tuple[Path, int, bool]:
    """The cached segment for a crossfaded run: (path, frames, whether it was encoded now)."""
    graph, frames = _xfade_graph(clips, fades, fps)
    output_args = ["-map", "[out]", "-an", *h264_args(encode, fps), *mp4_args(fps)]
    # Keyed by everything that decides the output bytes: inputs by content, the filter
    # graph (frames, crossfades, fps) and the encoder and muxer options.
    key = json.dumps(
        {
            "inputs": [_file_sha256(clip.path) for clip in clips],
            "frames": [clip.frames for clip in clips],
            "graph": graph,
            "output": output_args,
        },
        sort_keys=True,
    )
    segment = cache_dir / f"xfade-{hashlib.sha256(key.encode()).hexdigest()[:32]}.mp4"
    if segment.is_file():
        return segment, frames, False
    inputs = [arg for clip in clips for arg in ("-i", str(clip.path))]
    with atomic_output(segment, tmp_dir) as temp:
        run_ffmpeg(
            ["-loglevel", "error", *inputs, "-filter_complex", graph, *output_args, str(temp)],
            f"crossfading {', '.join(clip.path.name for clip in clips)}",
        )
    return segment, frames, True


def _concat_line(path: Path) -> str:
    # The concat demuxer reads a quoted path literally; a quote is closed, escaped, reopened.
    return "file '" + str(path.resolve()).replace("'", "'\\''") + "'\n"


def assemble_film(
    clips: list[FilmClip],
    out: Path,
    *,
    tmp_dir: Path,
    cache_dir: Path,
    fps: int,
    encode: EncodeSettings,
    crossfade_frames: int,
) -> FilmResult:
    """Write the film to `out` atomically. Its length in frames is the sum of the clips'
    minus each crossfade's overlap."""
    if not clips:
        raise ValueError("a film needs at least one clip")
    segments: list[Path] = []
    frames = 0
    encoded = 0
    for run, fades in _runs(clips, crossfade_frames):
        if len(run) == 1:
            segments.append(run[0].path)
            frames += run[0].frames
            continue
        segment, length, made = _crossfade_segment(
            run, fades, tmp_dir=tmp_dir, cache_dir=cache_dir, fps=fps, encode=encode
        )
        segments.append(segment)
        frames += length
        encoded += made

    listing = temp_path_for(Path("concat.txt"), tmp_dir)
    try:
        listing.write_text("".join(_concat_line(path) for path in segments), encoding="utf-8")
        with atomic_output(out, tmp_dir) as temp:
            run_ffmpeg(
                [
                    # -xerror: a segment that cannot be read fails the film instead of
                    # silently ending it early.
                    "-loglevel", "error", "-xerror",
                    "-f", "concat", "-safe", "0", "-i", str(listing),
                    "-map", "0:v:0", "-c", "copy", *mp4_args(fps), str(temp),
                ],
                f"concatenating {len(segments)} segments into {out.name}",
            )
    finally:
        listing.unlink(missing_ok=True)
    return FilmResult(
        frames=frames, stream_copied=encoded == 0, segments=len(segments), reencoded_segments=encoded
    )
