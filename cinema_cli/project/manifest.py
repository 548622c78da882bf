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
        self.reload()

    def reload(self) -> None:
        """Read the manifest as it is on disk now (a writer does, once it holds the lock,
        so that it never saves over records another run added meanwhile)."""
        self._data: dict[str, dict[str, dict]] = {}
        if self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
            except (ValueError, OSError):
                loaded = {}  # unreadable state is treated as empty: everything is rebuilt
            self._data = _artifacts(loaded)

    def get(self, stage: str, key: str) -> Record | None:
        raw = self._data.get(stage, {}).get(key)
        if not isinstance(raw, dict) or not isinstance(raw.get("recipe"), dict) \
                or not isinstance(raw.get("output"), str):
            return None  # a damaged record: the artifact is rebuilt
        return Record(raw["recipe"], raw["output"])

    def put(self, stage: str, key: str, record: Record) -> None:
        self._data.setdefault(stage, {})[key] = {"recipe": record.recipe, "output": record.output}
        self.save()

    def save(self) -> None:
        text = json.dumps({"version": MANIFEST_VERSION, "artifacts": self._data}, indent=1)
        atomic_write_text(self.path, text, self.tmp_dir)


def _artifacts(loaded: Any) -> dict[str, dict[str, dict]]:
    """The records of a loaded manifest, keeping only what has the right shape: valid
    JSON of another shape (a tool's rewrite, a bad merge) loses just the damaged parts,
    whose artifacts are then rebuilt, instead of failing every command."""
    if not isinstance(loaded, dict) or loaded.get("version") != MANIFEST_VERSION:
        return {}
    artifacts = loaded.get("artifacts")
    if not isinstance(artifacts, dict):
        return {}
    return {stage: {key: record for key, record in records.items() if isinstance(record, dict)}
            for stage, records in artifacts.items() if isinstance(records, dict)}
