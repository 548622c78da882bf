"""Helpers of the eval tests: constructed films (videos written with the bundled ffmpeg
from frames drawn here), and tiny random-weight feature models built offline."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import yaml

from cinema_cli.assemble.ffmpeg import ffmpeg_exe

W, H = 64, 48


def write_video(path: Path, frames: list[np.ndarray], fps: int = 8) -> Path:
    """A lossless-enough MP4 (yuv444, crf 0) of `frames`."""
    data = b"".join(np.ascontiguousarray(f, np.uint8).tobytes() for f in frames)
    h, w = frames[0].shape[:2]
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo",
                    "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "pipe:0",
                    "-c:v", "libx264", "-crf", "0", "-pix_fmt", "yuv444p", str(path)],
                   input=data, check=True)
    return path


def figure(color: tuple[int, int, int], x: int, y: int = 14, background=(30, 60, 120)) -> np.ndarray:
    """A coloured block on a plain background, its left edge at x: a 'character'."""
    frame = np.empty((H, W, 3), np.uint8)
    frame[:] = background
    frame[:, :, 1] = np.linspace(40, 90, W, dtype=np.uint8)[None, :]  # a gentle horizon gradient
    frame[y:y + 20, x:x + 14] = color
    return frame


def moving(color, count: int = 8, start: int = 4, step: int = 5, **kw) -> list[np.ndarray]:
    """The figure walking right: neighbouring frames are more alike than distant ones."""
    return [figure(color, start + i * step, **kw) for i in range(count)]


def noise(count: int = 8, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(count)]


def write_captions(path: Path, shots: list[dict], film: str = "a red figure crosses a blue room") -> Path:
    path.write_text(yaml.safe_dump({"film": film, "shots": shots}, sort_keys=False), encoding="utf-8")
    return path


def tiny_dino(folder: Path) -> Path:
    """A two-layer DINOv2 with random weights from a fixed seed, saved as a local folder."""
    from cinema_cli.runtime.tiny import seeded
    from cinema_cli.runtime.torch_compat import prepare_torch

    prepare_torch()
    from transformers import Dinov2Config, Dinov2Model

    if not (folder / "config.json").is_file():
        config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                              image_size=32, patch_size=8)
        with seeded(0):
            Dinov2Model(config).save_pretrained(folder)
    return folder


def tiny_aesthetic(path: Path, width: int = 32) -> Path:
    """The improved aesthetic predictor's layer layout (layers.0/2/4/6/7), narrowed to the
    tiny CLIP's width, random weights; a .pth of tensors (loads with weights_only)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    sizes = [(16, width), (8, 16), (4, 8), (2, 4), (1, 2)]
    state = {}
    for index, (out, inp) in zip((0, 2, 4, 6, 7), sizes):
        state[f"layers.{index}.weight"] = torch.randn(out, inp, generator=generator)
        state[f"layers.{index}.bias"] = torch.randn(out, generator=generator)
    torch.save(state, path)
    return path


TINY_CLIP = ("--clip-model", "cinema-tiny-clip", "--clip-weights", "random")


def fading(count: int = 8, start=(200, 30, 30), end=(30, 30, 200)) -> list[np.ndarray]:
    """The light turns from `start` to `end` while a white figure walks right: each frame
    is closest to its neighbours (tiny random-weight models barely see a block move, but
    they do see the light change)."""
    out = []
    for i in range(count):
        t = i / max(1, count - 1)
        frame = np.empty((H, W, 3), np.uint8)
        frame[:] = (np.array(start) * (1 - t) + np.array(end) * t).astype(np.uint8)
        frame[10:40, 4 + 6 * i:18 + 6 * i] = (240, 240, 240)
        out.append(frame)
    return out
