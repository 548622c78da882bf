"""The manifest: for every artifact, the recipe that produced it and the hash of the
file it produced (like make/DVC). An artifact is rebuilt only when its recipe changed.

The manifest is rewritten atomically after each artifact is published, so a killed run
loses at most the record of the artifact in flight, which is then simply rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cinema_cli.project.files import atomic_write_text

MANIFEST_VERSION = 1


def canonical_hash(data: Any) -> str:
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class FileHasher:
    """sha256 of files, remembered by (inode, size, mtime) so a status over a long film
    does not read every video twice."""

    def __init__(self) -> None:
        self._memo: dict[tuple, str] = {}

    def __call__(self, path: Path) -> str | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        if key not in self._memo:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            self._memo[key] = digest.hexdigest()
        return self._memo[key]


@dataclass
class Record:
    recipe: dict[str, Any]
    output: str  # sha256 of the artifact file as written

    @property
    def recipe_hash(self) -> str:
        return canonical_hash(self.recipe)


class Manifest:
    def __init__(self, path: Path, tmp_dir: Path):
        self.path = path
        self.tmp_dir = tmp_dir
        self._data: dict[str, dict[str, dict]] = {}
        if path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, OSError):
                loaded = {}  # unreadable state is treated as empty: everything is rebuilt
            if loaded.get("version") == MANIFEST_VERSION:
                self._data = loaded.get("artifacts", {})

    def get(self, stage: str, key: str) -> Record | None:
        raw = self._data.get(stage, {}).get(key)
        if not isinstance(raw, dict) or "recipe" not in raw or "output" not in raw:
            return None
        return Record(raw["recipe"], raw["output"])

    def put(self, stage: str, key: str, record: Record) -> None:
        self._data.setdefault(stage, {})[key] = {"recipe": record.recipe, "output": record.output}
        self.save()

    def save(self) -> None:
        text = json.dumps({"version": MANIFEST_VERSION, "artifacts": self._data}, indent=1)
        atomic_write_text(self.path, text, self.tmp_dir)
