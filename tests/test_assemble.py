"""ffmpeg helpers, the animatic backend and film assembly, against the real ffmpeg."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from cinema_cli.assemble.ffmpeg import VideoWriter, ffmpeg_exe
from cinema_cli.assemble.film import FilmClip, assemble_film
from cinema_cli.assemble.probe import probe
from cinema_cli.errors import CinemaError, FFmpegError
from cinema_cli.project.schema import Framing, Move
from cinema_cli.video.animatic import AnimaticOptions
from cinema_cli.video.base import EncodeSettings, ShotRequest, shot_backends

W, H, FPS = 160, 96, 12
ENCODE = EncodeSettings()


def decode_frames(path: Path, count: int | None = None) -> np.ndarray:
    """Decoded RGB frames of a video, (N, H, W, 3)."""
    limit = ["-frames:v", str(count)] if count else []
    raw = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(path), *limit,
         "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, H, W, 3)


def write_clip(path: Path, frames: int, shade: int) -> Path:
    """A flat clip with a moving bar, so every frame differs."""
    with VideoWriter(path, W, H, FPS, ENCODE) as writer:
        for i in range(frames):
            frame = np.full((H, W, 3), shade, np.uint8)
            frame[:, (i * 7) % W] = 255
            writer.write(frame)
    return path


def keyframe_image(path: Path, size: tuple[int, int] = (W, H)) -> Path:
    """A smooth gradient with a few soft shapes: detail that motion visibly moves."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    image = np.stack([x / w * 255, y / h * 255, (x + y) / (w + h) * 255], axis=-1)
    for cx, cy, r in ((0.3, 0.4, 0.15), (0.7, 0.6, 0.2)):
        dist = np.hypot(x - cx * w, y - cy * h) / (r * h)
        image[..., 0] += 120 * np.exp(-(dist**2))
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
    return path


def shot_request(keyframe: Path, move: Move, frames: int = 9) -> ShotRequest:
    return ShotRequest(
        shot_id="s1", caption="a test", keyframe=keyframe, next_keyframe=None,
        framing=Framing.wide, move=move, frames=frames, fps=FPS, width=W, height=H, seed=0,
    )


# ---------------------------------------------------------------- writer and probe


def test_video_writer_output_is_probed_exactly(tmp_path):
    out = write_clip(tmp_path / "clip.mp4", 7, 90)
    info = probe(out)
    assert (info.codec, info.pix_fmt, info.width, info.height) == ("h264", "yuv420p", W, H)
    assert info.fps == FPS
    assert info.frames == 7
    assert info.duration == pytest.approx(7 / FPS, abs=0.02)
    assert info.has_audio is False


@pytest.mark.parametrize("bad", [np.zeros((H, W + 1, 3), np.uint8), np.zeros((H, W, 3), np.float32)])
def test_video_writer_rejects_wrong_frames(tmp_path, bad):
    with pytest.raises(ValueError, match="frame must be"):
        with VideoWriter(tmp_path / "clip.mp4", W, H, FPS, ENCODE) as writer:
            writer.write(np.zeros((H, W, 3), np.uint8))
            writer.write(bad)


def test_probe_refuses_what_is_not_a_video(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x01not a video" * 100)
    with pytest.raises(FFmpegError, match="probing garbage.mp4"):
        probe(garbage)
    with pytest.raises(CinemaError, match="no such file"):
        probe(tmp_path / "missing.mp4")


# ---------------------------------------------------------------- animatic


@pytest.mark.parametrize("move", list(Move))
def test_animatic_renders_exactly_the_requested_frames(tmp_path, move):
    backend = shot_backends.get("animatic")(AnimaticOptions())
    calls = []
    out = tmp_path / "shot.mp4"
    backend.render(
        shot_request(keyframe_image(tmp_path / "key.png"), move, frames=9), out, ENCODE,
        lambda done, total: calls.append((done, total)),
    )
    info = probe(out)
    assert (info.frames, info.width, info.height, info.fps) == (9, W, H, FPS)
    assert calls[-1] == (9, 9)


def test_animatic_push_in_starts_on_the_keyframe_and_moves(tmp_path):
    key = keyframe_image(tmp_path / "key.png")
    out = tmp_path / "shot.mp4"
    shot_backends.get("animatic")(AnimaticOptions()).render(
        shot_request(key, Move.push_in), out, ENCODE, lambda *_: None
    )
    frames = decode_frames(out).astype(np.int16)
    keyframe = np.asarray(Image.open(key).convert("RGB")).astype(np.int16)
    assert np.abs(frames[0] - keyframe).mean() < 4
    assert np.abs(frames[-1] - keyframe).mean() > 8  # the camera really pushed in


def test_animatic_resizes_a_keyframe_of_another_size(tmp_path):
    key = keyframe_image(tmp_path / "key.png", size=(2 * W, 2 * H))
    out = tmp_path / "shot.mp4"
    shot_backends.get("animatic")(AnimaticOptions()).render(
        shot_request(key, Move.static, frames=3), out, ENCODE, lambda *_: None
    )
    assert (probe(out).width, probe(out).height) == (W, H)


def test_animatic_options_are_bounded():
    with pytest.raises(ValidationError):
        AnimaticOptions(zoom=0.6)
    with pytest.raises(ValidationError):
        AnimaticOptions(travel=0)
    with pytest.raises(ValidationError):
        AnimaticOptions(speed=2)


# ---------------------------------------------------------------- film


@pytest.fixture()
def clips(tmp_path):
    # A quote in the folder name exercises the concat list's escaping.
    folder = tmp_path / "it's shots"
    folder.mkdir()
    return [
        write_clip(folder / f"s{i}.mp4", frames, shade)
        for i, (frames, shade) in enumerate([(10, 30), (13, 90), (12, 150), (9, 210)])
    ]


def film_dirs(tmp_path: Path) -> dict:
    return {"tmp_dir": tmp_path / "tmp", "cache_dir": tmp_path / "cache"}


def test_film_of_cuts_is_stream_copied(tmp_path, clips):
    film = [
        FilmClip(path, probe(path).frames, transition)
        for path, transition in zip(clips, ["cut", "cut", "continuous", "cut"])
    ]
    out = tmp_path / "film.mp4"
    result = assemble_film(
        film, out, **film_dirs(tmp_path), fps=FPS, encode=ENCODE, crossfade_frames=4
    )
    assert result.stream_copied and result.reencoded_segments == 0
    assert result.segments == 4
    assert result.frames == 44 == probe(out).frames
    assert list((tmp_path / "tmp").iterdir()) == []  # no list file or temp film left


def test_crossfade_overlaps_and_its_segment_is_cached(tmp_path, clips):
    transitions = ["cut", "cut", "crossfade", "cut"]
    film = [FilmClip(p, n, t) for p, n, t in zip(clips, [10, 13, 12, 9], transitions)]
    out = tmp_path / "film.mp4"
    first = assemble_film(
        film, out, **film_dirs(tmp_path), fps=FPS, encode=ENCODE, crossfade_frames=4
    )
    assert not first.stream_copied
    assert (first.segments, first.reencoded_segments) == (3, 1)
    assert first.frames == 44 - 4 == probe(out).frames
    # Across the fade the picture goes from shot 2's shade to shot 3's.
    frames = decode_frames(out)
    assert abs(int(frames[10 + 13 - 4 - 1, 0, 0, 0]) - 90) < 6
    assert abs(int(frames[10 + 13 + 1, 0, 0, 0]) - 150) < 6

    (segment,) = (tmp_path / "cache").iterdir()
    before = segment.stat()
    # An edit to a shot outside the crossfade re-uses the cached crossfade.
    write_clip(clips[0], 8, 60)
    film[0] = FilmClip(clips[0], 8, "cut")
    second = assemble_film(
        film, out, **film_dirs(tmp_path), fps=FPS, encode=ENCODE, crossfade_frames=4
    )
    assert second.stream_copied and second.reencoded_segments == 0
    assert second.frames == 38 == probe(out).frames
    assert list((tmp_path / "cache").iterdir()) == [segment]
    after = segment.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_crossfade_is_clamped_to_half_the_shorter_clip(tmp_path, clips):
    film = [FilmClip(clips[0], 10, "cut"), FilmClip(clips[3], 9, "crossfade")]
    out = tmp_path / "film.mp4"
    result = assemble_film(
        film, out, **film_dirs(tmp_path), fps=FPS, encode=ENCODE, crossfade_frames=20
    )
    assert result.frames == 10 + 9 - 4 == probe(out).frames


@pytest.mark.parametrize("transition", ["cut", "crossfade"])
def test_corrupt_clip_fails_with_ffmpegs_words(tmp_path, clips, transition):
    clips[2].write_bytes(b"garbage, not an mp4" * 200)
    film = [FilmClip(p, n, transition) for p, n in zip(clips, [10, 13, 12, 9])]
    out = tmp_path / "film.mp4"
    with pytest.raises(FFmpegError) as caught:
        assemble_film(film, out, **film_dirs(tmp_path), fps=FPS, encode=ENCODE, crossfade_frames=4)
    assert "Invalid data found when processing input" in str(caught.value)
    assert not out.exists()
