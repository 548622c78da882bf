"""Reading a prepared dataset from Python (what the training commands use).

    from cinema_cli.data.reader import Dataset
    data = Dataset("my-dataset")
    for sample in data.keyframes():          # kept shots, film order
        sample.image(), sample.caption, sample.characters, sample.start, sample.end
    for sample in data.multishot(target=15): # runs of consecutive shots
        sample.global_caption, sample.shot_captions, sample.cuts
        frames = data.clip(sample, width=832, height=480, fps=16)   # decoded on demand

Only published shards are read: a film still being prepared is not half-visible.
Clips are time ranges into the source film, decoded when asked at the size and rate a
trainer wants, with the shot's crop applied (nothing re-encoded at prepare time).
"""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cinema_cli.assemble.ffmpeg import _popen
from cinema_cli.data.shards import read_shard
from cinema_cli.errors import BadInput


@dataclass
class KeyframeSample:
    key: str
    film: str
    shot: int
    start_frame: int
    end_frame: int
    start: float
    end: float
    fps: float
    source: str
    crop: list[int]  # [left, top, right, bottom] in source pixels
    caption: str | None
    characters: list[str]
    filters: dict
    jpeg: bytes = field(repr=False)

    def image(self) -> Image.Image:
        return Image.open(io.BytesIO(self.jpeg)).convert("RGB")


@dataclass
class MultiShotSample:
    key: str
    film: str
    id: str
    target: float
    shots: list[int]
    start_frame: int
    end_frame: int
    start: float
    end: float
    fps: float
    source: str
    cuts: list[dict]  # {"frame" (from the sample's start), "type": cut|dissolve, ["transition": [a, b)]}
    global_caption: str | None
    shot_captions: list[str | None]
    characters: list[str]


class Dataset:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        if not (self.root / "manifest.json").is_file():
            raise BadInput(f"{self.root} is not a prepared dataset (no manifest.json); run `cinema data prepare`")

    def shards(self, kind: str) -> list[Path]:
        return sorted((self.root / "shards" / kind).glob("*.tar"))

    def keyframes(self, film: str | None = None) -> Iterator[KeyframeSample]:
        for shard in self.shards("keyframes"):
            for key, parts in read_shard(shard).items():
                record = json.loads(parts["json"])
                if film is None or record["film"] == film:
                    yield KeyframeSample(key=key, film=record["film"], shot=record["shot"],
                                         start_frame=record["start_frame"], end_frame=record["end_frame"],
                                         start=record["start"], end=record["end"], fps=record["fps"],
                                         source=record["source"], crop=record["crop"], caption=record["caption"],
                                         characters=record["characters"], filters=record["filters"],
                                         jpeg=parts["jpg"])

    def multishot(self, target: float | None = None, film: str | None = None) -> Iterator[MultiShotSample]:
        for shard in self.shards("multishot"):
            for key, parts in read_shard(shard).items():
                r = json.loads(parts["json"])
                if (target is None or r["target"] == target) and (film is None or r["film"] == film):
                    yield MultiShotSample(key=key, film=r["film"], id=r["id"], target=r["target"], shots=r["shots"],
                                          start_frame=r["start_frame"], end_frame=r["end_frame"], start=r["start"],
                                          end=r["end"], fps=r["fps"], source=r["source"], cuts=r["cuts"],
                                          global_caption=r["global_caption"], shot_captions=r["shot_captions"],
                                          characters=r["characters"])

    def clip(self, sample: KeyframeSample | MultiShotSample, width: int, height: int, fps: float | None = None,
             crop: list[int] | None = None) -> Iterator[np.ndarray]:
        """The sample's frames [start_frame, end_frame) from its source, cropped (a keyframe
        sample's own crop by default) and scaled to width x height, at `fps` (default: the
        source's), streamed one HxWx3 uint8 frame at a time."""
        crop = crop or getattr(sample, "crop", None)
        # Seek to a second before the range (fast, by keyframes), then trim exactly by frame.
        seek = max(0.0, sample.start - 1.0)
        first = round(seek * sample.fps)
        filters = [f"trim=start_frame={sample.start_frame - first}:end_frame={sample.end_frame - first}",
                   "setpts=PTS-STARTPTS"]
        if crop:
            left, top, right, bottom = crop
            filters.append(f"crop={right - left}:{bottom - top}:{left}:{top}")
        if fps:
            filters.append(f"fps={fps}")
        filters.append(f"scale={width}:{height}")
        proc = _popen(["-loglevel", "error", "-ss", f"{seek:.6f}", "-i", sample.source, "-map", "0:v:0",
                       "-vf", ",".join(filters), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        size = width * height * 3
        try:
            while len(chunk := proc.stdout.read(size)) == size:
                yield np.frombuffer(chunk, np.uint8).reshape(height, width, 3)
        finally:
            proc.stdout.close()
            if proc.poll() is None:
                proc.kill()
            proc.wait()
