"""`text`: caption-to-caption relevance with a text encoder: CLIP's text tower (the
open_clip weights of `memory.model`/`memory.weights`), or a local transformers model
when `memory.weights` is a folder holding one (mean-pooled last hidden states)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cinema_cli.errors import BackendError
from cinema_cli.memory.candidates import Candidate, Query
from cinema_cli.memory.embedders.base import candidate_text, embedders
from cinema_cli.memory.embedders.openclip import OpenClip, resolve_device
from cinema_cli.memory.index import EmbeddingIndex
from cinema_cli.memory.weights import resolve_clip_weights, transformers_folder
from cinema_cli.project.schema import MemorySettings, plain_text
from cinema_cli.runtime.torch_compat import prepare_torch


@embedders.register
class TextEmbedder:
    name = "text"
    version = "1"
    floor = 0.0  # cosines: no calibrated "unrelated" level, so only negative ones are out

    def __init__(self, settings: MemorySettings, root: Path, device: str) -> None:
        folder = transformers_folder(settings.weights, root)
        if folder is not None:
            self.encoder: OpenClip | TransformersText = TransformersText(folder, device)
            identity = f"transformers:{folder}:{(folder / 'config.json').stat().st_mtime_ns}"
        else:
            weights = resolve_clip_weights(settings.model, settings.weights, root)
            self.encoder = OpenClip(weights, device)
            identity = weights.identity
        self.identity = f"{self.name}-{self.version}:{identity}"

    def scores(self, query: Query, candidates: Sequence[Candidate], index: EmbeddingIndex) -> np.ndarray:
        if not candidates:
            return np.zeros(0, np.float32)
        # Keyed by the text's hash: a caption is embedded again only when it changes.
        texts = [candidate_text(c) for c in candidates]
        keys = index.vectors(
            self.identity, [hashlib.sha256(t.encode()).hexdigest() for t in texts],
            lambda missing: self.encoder.encode_texts([texts[i] for i in missing]),
        )
        return keys @ self.encoder.encode_texts([plain_text(query.caption)])[0]


class TransformersText:
    """A local transformers encoder; a sentence is the mean of its tokens' last states."""

    def __init__(self, folder: Path, device: str) -> None:
        self.folder = folder
        self.device = device
        self._loaded: tuple | None = None

    def _load(self) -> tuple:
        if self._loaded is None:
            prepare_torch()
            from transformers import AutoModel, AutoTokenizer

            device = resolve_device(self.device)
            try:
                tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
                model = AutoModel.from_pretrained(self.folder, local_files_only=True).to(device).eval()
            except (OSError, ValueError) as err:
                raise BackendError(f"memory: cannot load the text encoder in {self.folder}: {err}") from err
            self._loaded = (tokenizer, model, device)
        return self._loaded

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        tokenizer, model, device = self._load()
        batch = tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt").to(device)
        with torch.inference_mode():
            states = model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (states * mask).sum(1) / mask.sum(1).clamp_min(1)
        return (pooled / pooled.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy()
