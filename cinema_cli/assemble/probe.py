"""What a video or audio file holds, read with the ffmpeg binary alone (no ffprobe ships
with imageio-ffmpeg). Frame counts and audio durations are exact: the stream is decoded."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cinema_cli.assemble.ffmpeg import run_ffmpeg
from cinema_cli.errors import CinemaError


@dataclass
class VideoInfo:
    codec: str
    pix_fmt: str
    width: int
    height: int
    fps: float
    frames: int
    duration: float
    has_audio: bool
    has_subtitles: bool = False


@dataclass
class AudioInfo:
    codec: str
    sample_rate: int
    channels: str  # as ffmpeg names the layout: mono, stereo, 5.1...
    duration: float  # seconds of decoded audio


_STREAM = re.compile(r"^\s*Stream #0:\d+\S*: (Video|Audio|Subtitle): (.*)$", re.MULTILINE)
_PARENS = re.compile(r"\([^()]*\)")
_SIZE = re.compile(r"^(\d+)x(\d+)\b")
_RATE = re.compile(r"^([\d.]+)(k?) (fps|tbr)$")
_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_FRAMES = re.compile(r"^frame=(\d+)$", re.MULTILINE)
_OUT_TIME = re.compile(r"^out_time_us=(\d+)$", re.MULTILINE)
_SAMPLE_RATE = re.compile(r"^(\d+) Hz$")


def probe(path: Path) -> VideoInfo:
    """Codec, pixel format, size, frame rate, exact frame count, duration, audio presence."""
    path = Path(path)
    # passthrough: count the frames the file has, not a constant-rate resampling.
    stderr, header, streams = _decode(path, ["-map", "0:v:0", "-fps_mode", "passthrough"])
    video = next((desc for kind, desc in streams if kind == "Video"), None)
    counts = _FRAMES.findall(stderr)
    if video is None or not counts:
        raise CinemaError(f"{path} is not a readable video (ffmpeg found no video stream)")

    # "h264 (High) (avc1 / 0x31637661), yuv420p(tv, bt709, progressive), 160x96 [SAR 1:1
    # DAR 5:3], 11 kb/s, 12 fps, ...": fields without their parenthesised notes.
    fields = _fields(video)
    codec = fields[0].split()[0]
    pix_fmt = fields[1].split()[0] if len(fields) > 1 else ""
    width = height = 0
    rates: dict[str, float] = {}
    for field in fields[1:]:
        if size := _SIZE.match(field):
            width, height = int(size[1]), int(size[2])
        elif rate := _RATE.match(field):
            rates[rate[3]] = float(rate[1]) * (1000 if rate[2] else 1)
    fps = rates.get("fps") or rates.get("tbr") or 0.0
    frames = int(counts[-1])

    if duration := _DURATION.search(header):
        hours, minutes, seconds = duration.groups()
        seconds_total = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    else:  # raw streams carry no container duration
        seconds_total = frames / fps if fps else 0.0
    return VideoInfo(
        codec=codec,
        pix_fmt=pix_fmt,
        width=width,
        height=height,
        fps=fps,
        frames=frames,
        duration=seconds_total,
        has_audio=any(kind == "Audio" for kind, _ in streams),
        has_subtitles=any(kind == "Subtitle" for kind, _ in streams),
    )


def probe_audio(path: Path) -> AudioInfo:
    """The first audio stream of any file: codec, sample rate, channel layout, and its
    exact duration (decoded to the end)."""
    path = Path(path)
    stderr, _, streams = _decode(path, ["-map", "0:a:0?"])
    audio = next((desc for kind, desc in streams if kind == "Audio"), None)
    times = _OUT_TIME.findall(stderr)
    if audio is None or not times:
        raise CinemaError(f"{path} has no readable audio (ffmpeg found no audio stream)")
    fields = _fields(audio)
    rate = next((int(m[1]) for f in fields if (m := _SAMPLE_RATE.match(f))), 0)
    return AudioInfo(
        codec=fields[0].split()[0],
        sample_rate=rate,
        channels=fields[2] if len(fields) > 2 else "",
        duration=int(times[-1]) / 1e6,
    )


def _decode(path: Path, map_args: list[str]) -> tuple[str, str, list[tuple[str, str]]]:
    """Decode the mapped stream to nowhere: ffmpeg's stderr, the input's header, and its
    (kind, description) streams. -progress writes machine-readable "frame=N" and
    "out_time_us=N" lines; the last of each is final."""
    if not path.is_file():
        raise CinemaError(f"cannot probe {path}: no such file")
    stderr = run_ffmpeg(
        ["-i", str(path), *map_args, "-f", "null", "-nostats", "-progress", "pipe:2", "-"],
        f"probing {path.name}",
    )
    # Only the input's description: the output section repeats "Stream #0:0: Video".
    header = stderr.split("Stream mapping:", 1)[0]
    return stderr, header, _STREAM.findall(header)


def _fields(description: str) -> list[str]:
    """A stream description's comma-separated fields, parenthesised notes removed."""
    while _PARENS.search(description):
        description = _PARENS.sub("", description)
    return [field.strip() for field in description.split(",")]
