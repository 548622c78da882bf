"""The film as an HLS stream a player follows while a directing session makes it.

`stream/film.m3u8` is an EVENT playlist (players reload it and play on as it grows) of
one MPEG-TS segment per shot, remuxed from the shot's MP4 by stream copy (no encode),
each shifted to where the shot starts in the film, so the stream is one continuous
timeline. `#EXT-X-ENDLIST` closes it when the session ends; the next session reopens it.

Why HLS and not a growing fragmented MP4: every segment is a whole file published
atomically and never rewritten (its name carries its content's hash), and the playlist
is replaced by rename, so a player never reads a half-written byte; a growing MP4 can
only be appended in place, which a kill leaves torn and an `undo` would have to truncate
under a reading player. The shots are H.264 already, so a segment costs a remux.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from cinema_cli.assemble.ffmpeg import run_ffmpeg
from cinema_cli.project.files import atomic_output, atomic_write_text

PLAYLIST = "film.m3u8"


@dataclass(frozen=True)
class Clip:
    shot_id: str
    path: Path
    sha256: str  # of the shot's MP4: a changed shot gets a new segment name
    frames: int


@dataclass(frozen=True)
class Segment:
    shot_id: str
    name: str
    seconds: float


class HlsStream:
    def __init__(self, folder: Path, tmp_dir: Path, fps: int) -> None:
        self.folder = folder
        self.tmp_dir = tmp_dir
        self.fps = fps

    @property
    def playlist(self) -> Path:
        return self.folder / PLAYLIST

    def sync(self, clips: list[Clip], *, ended: bool) -> list[Segment]:
        """Make the stream the film of `clips`: a segment for each one that has none,
        then the playlist, then drop segments no longer listed (an undone shot)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        segments, start = [], 0
        for clip in clips:
            segments.append(self._segment(clip, start))
            start += clip.frames
        self._write_playlist(segments, ended)
        listed = {s.name for s in segments}
        for stray in self.folder.glob("*.ts"):
            if stray.name not in listed:
                stray.unlink(missing_ok=True)
        return segments

    def _segment(self, clip: Clip, start_frame: int) -> Segment:
        key = f"{clip.sha256}:{start_frame}:{self.fps}"
        name = f"{clip.shot_id}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.ts"
        target = self.folder / name
        if not target.is_file():
            with atomic_output(target, self.tmp_dir) as temp:
                run_ffmpeg(["-loglevel", "error", "-i", str(clip.path), "-map", "0:v:0", "-c", "copy",
                            "-bsf:v", "h264_mp4toannexb", "-output_ts_offset", f"{start_frame / self.fps:.6f}",
                            "-f", "mpegts", str(temp)], f"streaming {clip.path.name}")
        return Segment(clip.shot_id, name, clip.frames / self.fps)

    def _write_playlist(self, segments: list[Segment], ended: bool) -> None:
        target = max((math.ceil(s.seconds) for s in segments), default=1)
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-PLAYLIST-TYPE:EVENT", f"#EXT-X-TARGETDURATION:{target}",
                 "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-INDEPENDENT-SEGMENTS"]
        for segment in segments:
            lines += [f"#EXTINF:{segment.seconds:.6f},{segment.shot_id}", segment.name]
        if ended:
            lines.append("#EXT-X-ENDLIST")
        atomic_write_text(self.playlist, "\n".join(lines) + "\n", self.tmp_dir)

