"""An open_clip model, loaded on first use, that turns images and texts into unit vectors."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from cinema_cli.errors import BackendError
from cinema_cli.memory.weights import ClipWeights, open_clip_module
from cinema_cli.runtime.tiny import seeded

BATCH = 16


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    from cinema_cli.runtime.profiles import cuda_available

    return "cuda" if cuda_available() else "cpu"


class OpenClip:
    def __init__(self, weights: ClipWeights, device: str) -> None:
        self.weights = weights
        self.device = device
        self._loaded: tuple | None = None

    def _load(self) -> tuple:
        if self._loaded is None:
            open_clip = open_clip_module()
            device = resolve_device(self.device)
            # Random weights are drawn from a fixed seed, so every process builds the
            # same model and remembered vectors stay valid; open_clip's warning that no
            # weights were loaded is then expected, not news.
            random = self.weights.random
            with seeded(0) if random else contextlib.nullcontext(), _warnings_off(random):
                try:
                    model, _, preprocess = open_clip.create_model_and_transforms(
                        self.weights.model, pretrained=self.weights.checkpoint, device=device,
                        force_quick_gelu=self.weights.quick_gelu,
                        **{f"image_{k}": v for k, v in self.weights.preprocess},
                    )
                except (OSError, RuntimeError, ValueError) as err:
                    raise BackendError(f"memory: cannot load open_clip {self.weights.identity}: {err}") from err
            self._loaded = (model.eval(), preprocess, open_clip.get_tokenizer(self.weights.model), device)
        return self._loaded

    def encode_images(self, images: Sequence[Path | Image.Image]) -> np.ndarray:
        """Unit vectors of image files, or of pictures already in memory."""
        import torch

        model, preprocess, _, device = self._load()
        rows = []
        for start in range(0, len(images), BATCH):
            batch = []
            for item in images[start:start + BATCH]:
                if isinstance(item, Image.Image):
                    batch.append(preprocess(item.convert("RGB")))
                    continue
                with Image.open(item) as image:
                    batch.append(preprocess(image.convert("RGB")))
            with torch.inference_mode():
                rows.append(_unit(model.encode_image(torch.stack(batch).to(device))))
        return np.concatenate(rows)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        model, _, tokenizer, device = self._load()
        rows = []
        for start in range(0, len(texts), BATCH):
            with torch.inference_mode():
                rows.append(_unit(model.encode_text(tokenizer(list(texts[start:start + BATCH])).to(device))))
        return np.concatenate(rows)


def _unit(features) -> np.ndarray:
    features = features.float()
    return (features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy()


@contextlib.contextmanager
def _warnings_off(off: bool):
    if not off:
        yield
        return
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
