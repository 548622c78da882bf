"""Add a soft subtitle track and a music bed to an assembled film.

The video is stream-copied; only the audio is encoded (AAC) and the SRT converted to
MP4's own subtitle format (mov_text), so players show it as a track that can be turned
off.
"""

from __future__ import annotations

from pathlib import Path

from cinema_cli.assemble.ffmpeg import mp4_args, run_ffmpeg
from cinema_cli.assemble.music import SAMPLE_RATE, MusicBed, music_filter
from cinema_cli.project.files import atomic_output


def finish_film(
    video: Path,
    out: Path,
    *,
    fps: int,
    frames: int,
    subtitles: Path | None,
    music: MusicBed | None,
    tmp_dir: Path,
) -> None:
    """Write `video` plus the SRT `subtitles` and the `music` bed to `out` atomically.
    The music is cut or padded to the film's `frames` exactly."""
    inputs = ["-i", str(video)]
    maps = ["-map", "0:v:0"]
    codecs = ["-c:v", "copy"]
    if music is not None:
        inputs += ["-i", str(music.path)]
        graph = f"[1:a:0]{music_filter(music, frames / fps)}[music]"
        maps += ["-filter_complex", graph, "-map", "[music]"]
        codecs += ["-c:a", "aac", "-b:a", "192k", "-ar", str(SAMPLE_RATE)]
    if subtitles is not None:
        index = 2 if music is not None else 1
        inputs += ["-f", "srt", "-i", str(subtitles)]
        maps += ["-map", f"{index}:s:0"]
        codecs += ["-c:s", "mov_text"]
    with atomic_output(out, tmp_dir) as temp:
        run_ffmpeg(
            ["-loglevel", "error", *inputs, *maps, *codecs, *mp4_args(fps), str(temp)],
            f"adding {' and '.join(w for w, x in (('music', music), ('subtitles', subtitles)) if x)} "
            f"to {out.name}",
        )
