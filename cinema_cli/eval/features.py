"""The feature models the metrics look through, and their cache.

- CLIP (open_clip): text-image similarity, background consistency, the aesthetic
  predictor's input, inter-shot similarity. `--clip-model`/`--clip-weights` name it as
  cinema.yaml's `memory.model`/`memory.weights` do (a project's memory CLIP is the default).
- A DINO-class ViT (transformers `AutoModel`: DINOv2, DINO, any ViT): subject
  consistency, as VBench measures it, on the CLS feature. `--dino` is a Hub id or a local
  folder.
- Faces: OpenCV (opencv-python, already a dependency of PySceneDetect): its YuNet
  detector from a local .onnx file (`--faces`), else the Haar cascade OpenCV 4 wheels
  ship. When faces are found, inter-shot character similarity is measured on the largest
  face of each frame; otherwise on the whole frame, and the output says which.

Nothing is downloaded: a model that is not on this machine is bad input naming the
option and the command that fetches it (HF_HUB_OFFLINE or not). Vectors are kept in the
project's .cinema/cache/eval by model identity and frame content hash (the memory
library's embedding index), so a re-run embeds only the frames that changed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cinema_cli.errors import BackendError, BadInput
from cinema_cli.eval.sources import frame_digest
from cinema_cli.memory.embedders.openclip import OpenClip, resolve_device
from cinema_cli.memory.index import EmbeddingIndex
from cinema_cli.memory.weights import resolve_clip_weights
from cinema_cli.runtime.torch_compat import prepare_torch

DEFAULT_CLIP = ("ViT-L-14", "openai")  # what the LAION aesthetic predictor and HoloCine's CLIP scores use
DEFAULT_DINO = "facebook/dinov2-base"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
FACE_MARGIN = 0.2  # a face crop keeps this much of its size around it (hair, jaw)


class Cache:
    """Vectors by (model identity, content hash): on disk in a project, else for this run."""

    def __init__(self, folder: Path | None, tmp_dir: Path | None) -> None:
        self.index = EmbeddingIndex(folder, tmp_dir) if folder is not None else None
        self.memory: dict[tuple[str, str], np.ndarray] = {}
        self.computed = 0  # vectors computed this run (the rest came from the cache)

    def vectors(self, identity: str, keys: Sequence[str], compute) -> np.ndarray:
        def counted(missing: list[int]) -> np.ndarray:
            self.computed += len(missing)
            return compute(missing)

        if self.index is not None:
            return self.index.vectors(identity, keys, counted)
        missing = [i for i, k in enumerate(keys) if (identity, k) not in self.memory]
        if missing:
            for i, row in zip(missing, np.asarray(counted(missing), np.float32)):
                self.memory[(identity, keys[i])] = row
        return np.stack([self.memory[(identity, k)] for k in keys]) if keys else np.zeros((0, 0), np.float32)


@dataclass
class Clip:
    model: OpenClip
    identity: str
    cache: Cache

    def images(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        return self.cache.vectors(f"eval-clip-image:{self.identity}", [frame_digest(f) for f in frames],
                                  lambda missing: self.model.encode_images([Image.fromarray(frames[i])
                                                                            for i in missing]))

    def texts(self, texts: Sequence[str]) -> np.ndarray:
        import hashlib

        return self.cache.vectors(f"eval-clip-text:{self.identity}",
                                  [hashlib.sha256(t.encode()).hexdigest() for t in texts],
                                  lambda missing: self.model.encode_texts([texts[i] for i in missing]))


def load_clip(model: str | None, weights: str | None, root: Path, device: str, cache: Cache) -> Clip:
    if model is None:
        model, weights = (DEFAULT_CLIP[0], weights or DEFAULT_CLIP[1])
    try:
        resolved = resolve_clip_weights(model, weights, root)
    except BadInput as err:
        raise BadInput(f"--clip-model/--clip-weights: {err}") from None
    return Clip(OpenClip(resolved, device), resolved.identity, cache)


class Dino:
    """A transformers ViT's CLS feature per frame (DINO in VBench's subject consistency)."""

    def __init__(self, model: str, device: str, cache: Cache) -> None:
        self.folder = _model_folder(model, "--dino")
        stat = (self.folder / "config.json").stat()
        self.identity = f"{model}@{self.folder}:{stat.st_size}:{stat.st_mtime_ns}"
        self.device = device
        self.cache = cache
        self._loaded: tuple | None = None

    def _load(self) -> tuple:
        if self._loaded is None:
            prepare_torch()
            from transformers import AutoModel
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # progress is cinema's to show
            device = resolve_device(self.device)
            try:
                model = AutoModel.from_pretrained(self.folder, local_files_only=True).to(device).eval()
            except (OSError, ValueError) as err:
                raise BackendError(f"--dino: cannot load the model in {self.folder}: {err}") from err
            size = getattr(model.config, "image_size", 224)
            self._loaded = (model, device, size if isinstance(size, int) else size[0])
        return self._loaded

    def images(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        return self.cache.vectors(f"eval-dino:{self.identity}", [frame_digest(f) for f in frames],
                                  lambda missing: self._encode([frames[i] for i in missing]))

    def _encode(self, frames: list[np.ndarray]) -> np.ndarray:
        import torch

        model, device, size = self._load()
        batch = np.stack([(np.asarray(Image.fromarray(f).resize((size, size), Image.BICUBIC), np.float32) / 255.0
                           - IMAGENET_MEAN) / IMAGENET_STD for f in frames])
        pixels = torch.from_numpy(batch).permute(0, 3, 1, 2).to(device)
        with torch.inference_mode():
            cls = model(pixel_values=pixels).last_hidden_state[:, 0].float()
        return (cls / cls.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy()


def _model_folder(model: str, option: str) -> Path:
    """A local folder, or a Hub id's snapshot in the local cache; never a download."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BadInput(f"{option} {model}: the folder has no config.json (a transformers model folder)")
        return path.resolve()
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except (OSError, HFValidationError):
        raise BadInput(f"{option} {model}: the weights are not on this machine (cinema never downloads while "
                       f"measuring); fetch them once with `huggingface-cli download {model}`, or give "
                       f"{option} a local folder") from None


class Faces:
    """The largest face of a frame, found by OpenCV: its YuNet detector when `model` (an
    .onnx file of opencv_zoo's face_detection_yunet) is given, else the frontal-face Haar
    cascade that OpenCV 4 wheels ship. OpenCV 5 ships no cascade: without a YuNet file
    there is then no detector (`name` None), and the metrics use whole frames."""

    def __init__(self, model: str | None = None) -> None:
        import cv2

        self.cv2 = cv2
        self.yunet = None
        self.cascade = None
        self.name: str | None = None
        if model is not None:
            path = Path(model).expanduser()
            if not path.is_file():
                raise BadInput(f"--faces {model}: no such file; give opencv_zoo's face_detection_yunet .onnx "
                               "(https://github.com/opencv/opencv_zoo, models/face_detection_yunet)")
            try:
                self.yunet = cv2.FaceDetectorYN.create(str(path), "", (320, 320), 0.8)
            except cv2.error as err:
                raise BadInput(f"--faces {model}: OpenCV cannot load it as a YuNet face detector: {err}") from None
            self.name = f"opencv yunet {path.name}"
            return
        cascade_file = os.path.join(getattr(getattr(cv2, "data", None), "haarcascades", ""),
                                    "haarcascade_frontalface_default.xml")
        if hasattr(cv2, "CascadeClassifier") and os.path.isfile(cascade_file):
            self.cascade = cv2.CascadeClassifier(cascade_file)
            self.name = "opencv haarcascade_frontalface_default"

    def largest(self, frame: np.ndarray) -> np.ndarray | None:
        """The largest face in `frame`, cropped with a margin, or None."""
        if self.name is None:
            return None
        if self.yunet is not None:
            self.yunet.setInputSize((frame.shape[1], frame.shape[0]))
            _, found = self.yunet.detect(self.cv2.cvtColor(frame, self.cv2.COLOR_RGB2BGR))
            boxes = [] if found is None else [tuple(int(v) for v in row[:4]) for row in found]
        else:
            gray = self.cv2.cvtColor(frame, self.cv2.COLOR_RGB2GRAY)
            boxes = self.cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                                  minSize=(max(12, min(gray.shape) // 12),) * 2)
        if len(boxes) == 0:
            return None
        x, y, w, h = max(boxes, key=lambda f: f[2] * f[3])
        m = round(FACE_MARGIN * max(w, h))
        crop = frame[max(0, y - m):y + h + m, max(0, x - m):x + w + m]
        return np.ascontiguousarray(crop) if crop.size else None
