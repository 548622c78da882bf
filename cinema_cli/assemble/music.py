"""A music bed for the film: shaped to the film's exact length, faded in and out, and
normalised to a target integrated loudness (EBU R128) with ffmpeg's `loudnorm`.

Two passes, as loudnorm's documentation recommends for accuracy: the first measures the
shaped music, the second applies one linear gain computed from that measurement
(`linear=true`; loudnorm falls back to its dynamic mode only when a linear gain would
push the true peak over `TRUE_PEAK`). Silence added to pad the music out sits below
R128's gate, so it does not dilute the measured loudness.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from cinema_cli.assemble.ffmpeg import run_ffmpeg
from cinema_cli.assemble.probe import probe_audio
from cinema_cli.errors import BadInput

SAMPLE_RATE = 48000
TRUE_PEAK = -1.5  # dBTP, loudnorm's default ceiling
LOUDNESS_RANGE = 11.0  # LU, loudnorm's default
_JSON_BLOCK = re.compile(r"\{[^{}]*\}")


@dataclass(frozen=True)
class MusicBed:
    path: Path
    loudness: float  # target integrated loudness, LUFS
    fade_seconds: float
    label: str  # where the setting came from, for messages: "--music" or "cinema.yaml: assemble.music"


def _shape(bed: MusicBed, seconds: float) -> str:
    """Resample to stereo 48 kHz, cut or pad to exactly `seconds`, fade in and out.
    The fade out ends where the music does (at the film's end when it is longer)."""
    music_seconds = probe_audio(bed.path).duration
    if music_seconds <= 0:
        raise BadInput(f"{bed.label}: {bed.path.name} has no audio samples")
    heard = min(music_seconds, seconds)
    fade = min(bed.fade_seconds, heard / 2)
    steps = [
        f"aresample={SAMPLE_RATE}", "aformat=sample_fmts=fltp:channel_layouts=stereo",
        "asetpts=PTS-STARTPTS", f"atrim=duration={seconds:.6f}", f"apad=whole_dur={seconds:.6f}",
    ]
    if fade > 0:
        steps += [f"afade=t=in:d={fade:.6f}", f"afade=t=out:st={heard - fade:.6f}:d={fade:.6f}"]
    return ",".join(steps)


def _loudnorm(bed: MusicBed) -> str:
    return f"loudnorm=I={bed.loudness:.2f}:TP={TRUE_PEAK}:LRA={LOUDNESS_RANGE}"


def measure(bed: MusicBed, shaped: str) -> dict[str, str]:
    """loudnorm's first pass over the shaped music: its JSON measurement."""
    stderr = run_ffmpeg(
        ["-nostats", "-i", str(bed.path), "-map", "0:a:0",
         "-af", f"{shaped},{_loudnorm(bed)}:print_format=json", "-f", "null", "-"],
        f"measuring the loudness of {bed.path.name}",
    )
    blocks = _JSON_BLOCK.findall(stderr)
    if not blocks:
        raise BadInput(f"{bed.label}: ffmpeg could not measure the loudness of {bed.path.name}")
    measured = json.loads(blocks[-1])
    if not math.isfinite(float(measured["input_i"])):
        raise BadInput(f"{bed.label}: {bed.path.name} is silent; there is no loudness to normalise")
    return measured


def music_filter(bed: MusicBed, seconds: float) -> str:
    """The audio filter chain (an `-af`/filtergraph fragment) that turns the music into
    the bed: shaped, then normalised with the measured values, back at 48 kHz and cut to
    `seconds` again (loudnorm works at 192 kHz and may hand back a few extra samples)."""
    shaped = _shape(bed, seconds)
    m = measure(bed, shaped)
    second_pass = (
        f"{_loudnorm(bed)}:measured_I={m['input_i']}:measured_TP={m['input_tp']}"
        f":measured_LRA={m['input_lra']}:measured_thresh={m['input_thresh']}"
        f":offset={m['target_offset']}:linear=true"
    )
    return f"{shaped},{second_pass},aresample={SAMPLE_RATE},atrim=duration={seconds:.6f}"
