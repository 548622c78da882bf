"""The embedding index: vectors remembered by (embedder identity, content sha256).

Embedding a keyframe is the costly part of retrieval (an image through CLIP), and a
keyframe only changes when it is redrawn, so each vector is computed once per content:
a later plan embeds only new or changed keyframes. One file per embedder identity
(model and weights included, so vectors of two models never mix), written atomically;
an unreadable file is treated as empty, which only costs a re-embedding.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cinema_cli.project.files import atomic_write_bytes, writes_confined

# Rows kept per identity; the oldest go first. Old rows are of keyframes since redrawn.
CAPACITY = 4096

# Computes the vectors for the keys at these positions, as rows of a float32 array.
Compute = Callable[[list[int]], np.ndarray]


class EmbeddingIndex:
    def __init__(self, folder: Path, tmp_dir: Path) -> None:
        self.folder = folder
        self.tmp_dir = tmp_dir
        self._tables: dict[str, dict[str, np.ndarray]] = {}

    def vectors(self, identity: str, keys: Sequence[str], compute: Compute) -> np.ndarray:
        """One row per key: remembered ones from the index, the rest from `compute`."""
        table = self._table(identity)
        missing = [i for i, key in enumerate(keys) if key not in table]
        if missing:
            rows = np.asarray(compute(missing), dtype=np.float32)
            if table and next(iter(table.values())).shape != rows.shape[1:]:
                table.clear()  # remembered vectors of another size: not this embedder's
            for i, row in zip(missing, rows):
                table.pop(keys[i], None)
                table[keys[i]] = row
            while len(table) > CAPACITY:
                del table[next(iter(table))]
            self._save(identity, table)
        if not keys:
            return np.zeros((0, 0), np.float32)
        return np.stack([table[key] for key in keys])

    def _path(self, identity: str) -> Path:
        return self.folder / f"{hashlib.sha256(identity.encode()).hexdigest()[:20]}.npz"

    def _table(self, identity: str) -> dict[str, np.ndarray]:
        if identity not in self._tables:
            self._tables[identity] = self._load(identity)
        return self._tables[identity]

    def _load(self, identity: str) -> dict[str, np.ndarray]:
        """The remembered vectors; a missing, truncated or garbage file (or one of another
        shape) is treated as empty, which costs only a re-embedding."""
        path = self._path(identity)
        if not path.is_file():
            return {}
        try:
            with np.load(path, allow_pickle=False) as data:
                if not isinstance(data, np.lib.npyio.NpzFile) or str(data["identity"]) != identity:
                    return {}
                keys, vectors = data["keys"], data["vectors"]
                if keys.ndim != 1 or vectors.ndim != 2 or len(keys) != len(vectors) \
                        or not np.issubdtype(vectors.dtype, np.floating):
                    return {}
                return dict(zip(keys.tolist(), vectors.astype(np.float32)))
        except Exception:  # noqa: BLE001 - numpy and zipfile raise many kinds for a damaged file
            return {}

    def _save(self, identity: str, table: dict[str, np.ndarray]) -> None:
        if writes_confined():
            return  # a worker rank keeps its vectors in memory; rank 0 keeps the index on disk
        buffer = io.BytesIO()
        np.savez(buffer, identity=np.array(identity), keys=np.array(list(table), dtype=str),
                 vectors=np.stack(list(table.values())))
        atomic_write_bytes(self._path(identity), buffer.getvalue(), self.tmp_dir)
