"""Running the ffmpeg binary: one-shot commands and a streaming frame writer.

Every H.264 file the project makes (shots, crossfade segments) is encoded with the
same `h264_args` and muxed with the same `mp4_args`, so that assembly can join them by
stream copy: identical SPS/PPS and an identical, frame-exact timescale.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

import imageio_ffmpeg
import numpy as np

from cinema_cli.errors import CinemaError, FFmpegError
from cinema_cli.video.base import EncodeSettings

_PR_SET_PDEATHSIG = 1
# Loaded once here: a preexec_fn runs between fork and exec, where loading a library
# is unsafe.
_libc = ctypes.CDLL(None) if sys.platform.startswith("linux") else None


def ffmpeg_exe() -> str:
    """The ffmpeg binary: $CINEMA_FFMPEG if set, else the one imageio-ffmpeg ships."""
    return os.environ.get("CINEMA_FFMPEG") or imageio_ffmpeg.get_ffmpeg_exe()


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    # The kernel SIGKILLs the child when the parent dies, so a SIGKILLed cinema never
    # leaves ffmpeg running. (It fires when the forking *thread* exits, so a child must
    # be waited for in the thread that started it.)
    def preexec() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec if _libc is not None else None


def _popen(args: list[str], **kwargs) -> subprocess.Popen:
    command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", *args]
    try:
        return subprocess.Popen(command, preexec_fn=_die_with_parent(os.getpid()), **kwargs)
    except OSError as err:
        raise CinemaError(
            f"cannot run ffmpeg ({command[0]}): {err}; set CINEMA_FFMPEG to an ffmpeg binary "
            "or reinstall imageio-ffmpeg"
        ) from err


def run_ffmpeg(args: list[str], what: str) -> str:
    """Run ffmpeg with `args` to completion; return its stderr, raise FFmpegError on failure."""
    proc = _popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    stderr = err.decode("utf-8", errors="replace")
    if proc.returncode != 0:
        raise FFmpegError(what, proc.returncode, stderr)
    return stderr


def video_timescale(fps: int) -> int:
    # fps*1000 ticks per second: a frame is exactly 1000 ticks, and the microsecond
    # offsets the concat demuxer and xfade compute in round back to whole frames.
    return fps * 1000


# The last filter of every encode: frames tagged BT.709 limited range, so every file's
# headers (SPS colour description) match and players need not guess per resolution.
# A filter, not encoder options: ffmpeg takes the colour tags from the frames.
TAG_BT709 = "setparams=range=tv:color_primaries=bt709:color_trc=bt709:colorspace=bt709"


def h264_args(encode: EncodeSettings, fps: int) -> list[str]:
    """The one set of H.264 encoder options every encode in the project uses."""
    return [
        "-c:v", "libx264",
        "-preset", encode.preset,
        "-crf", str(encode.crf),
        "-profile:v", "high",
        "-pix_fmt", "yuv420p",
        "-r", str(fps),
        "-g", str(2 * fps),
        "-bf", "2",
        # stitchable: headers do not depend on the content, so files concatenate.
        "-x264-params", "stitchable=1",
    ]


def mp4_args(fps: int) -> list[str]:
    """The MP4 muxer options every video file in the project is written with."""
    # The movie timescale too: edit lists are written in it, and concat reads durations
    # from them (the default 1/1000 s drifts a few ticks at every join).
    timescale = str(video_timescale(fps))
    return [
        "-video_track_timescale", timescale, "-movie_timescale", timescale,
        "-movflags", "+faststart",
    ]


class VideoWriter:
    """Stream RGB frames into an H.264 MP4, one frame in memory at a time.

    with VideoWriter(out, width, height, fps, encode) as writer:
        writer.write(frame)  # HxWx3 uint8
    """

    def __init__(self, out: Path, width: int, height: int, fps: int, encode: EncodeSettings):
        self.out = Path(out)
        self.width = width
        self.height = height
        self.fps = fps
        self.encode = encode
        self._proc: subprocess.Popen | None = None
        self._stderr = None

    def __enter__(self) -> VideoWriter:
        # stderr goes to a file, not a pipe: a chatty ffmpeg can never block on it.
        self._stderr = tempfile.TemporaryFile()
        args = [
            "-loglevel", "error",
            "-f", "rawvideo", "-pix_fmt", "rgb24",
            "-s", f"{self.width}x{self.height}", "-framerate", str(self.fps),
            "-i", "pipe:0",
            "-an",
            # Convert with the BT.709 matrix that h264_args tags the stream with.
            "-vf", f"scale=out_color_matrix=bt709:out_range=tv,{TAG_BT709}",
            *h264_args(self.encode, self.fps),
            *mp4_args(self.fps),
            str(self.out),
        ]
        try:
            self._proc = _popen(
                args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr
            )
        except BaseException:
            self._stderr.close()
            raise
        return self

    def write(self, frame: np.ndarray) -> None:
        expected = (self.height, self.width, 3)
        if frame.shape != expected or frame.dtype != np.uint8:
            raise ValueError(
                f"frame must be {expected} uint8 for {self.out.name}, "
                f"got {frame.shape} {frame.dtype}"
            )
        try:
            self._proc.stdin.write(memoryview(np.ascontiguousarray(frame)).cast("B"))
        except BrokenPipeError:
            # ffmpeg exited early; its stderr says why.
            self._proc.wait()
            raise FFmpegError(f"encoding {self.out.name}", self._proc.returncode, self._read_stderr())

    def _read_stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", errors="replace")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc = self._proc
        try:
            if exc_type is not None:
                proc.kill()  # a half-written shot is worthless; the caller discards it
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass  # ffmpeg already exited; its return code and stderr tell why
            if proc.wait() != 0 and exc_type is None:
                raise FFmpegError(f"encoding {self.out.name}", proc.returncode, self._read_stderr())
        finally:
            self._stderr.close()


def read_frames(path: Path, width: int, height: int) -> Iterator[np.ndarray]:
    """Decode a video's frames scaled to width x height, as HxWx3 uint8 RGB arrays, one at
    a time: ffmpeg streams them through a pipe, so memory does not grow with the video."""
    size = width * height * 3
    with tempfile.TemporaryFile() as stderr:
        proc = _popen(
            ["-loglevel", "error", "-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough",
             "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "pipe:1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
        )
        try:
            while len(chunk := proc.stdout.read(size)) == size:
                yield np.frombuffer(chunk, np.uint8).reshape(height, width, 3)
        finally:
            proc.stdout.close()
            if proc.poll() is None:
                proc.kill()  # the reader stopped early
            proc.wait()
        if proc.returncode != 0:
            stderr.seek(0)
            raise FFmpegError(f"decoding {Path(path).name}", proc.returncode,
                              stderr.read().decode("utf-8", errors="replace"))
