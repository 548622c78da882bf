"""The manifest: for every artifact, the recipe that produced it and the hash of the
file it produced (like make/DVC). An artifact is rebuilt only when its recipe changed.

One small JSON file per artifact, `.cinema/manifest/<stage>/<key>.json`, each written
atomically (temporary file, fsync, rename) after its artifact is published. Several
writers — a coordinator and its workers, one per GPU — record completions without
rewriting or losing each other's, readers always see whole records, and a killed run
loses at most the record of the artifact in flight, which is then simply rebuilt.
(Files rather than SQLite in WAL mode: WAL needs shared memory, which network and
container filesystems often lack, while rename is atomic everywhere; a record stays a
file a person can read; and there is nothing to query that a directory does not give.)

Projects made before this layout kept one `.cinema/manifest.json`; it is split into
records the first time the project's manifest is opened, then removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cinema_cli.project.files import atomic_write_text

LEGACY_VERSION = 1  # the single manifest.json
RECORD_VERSION = 2
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def canonical_hash(data: Any) -> str:
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
            self._memo[key] = file_sha256(path)
        return self._memo[key]


@dataclass
class Record:
    recipe: dict[str, Any]
    output: str  # sha256 of the artifact file as written

    @property
    def recipe_hash(self) -> str:
        return canonical_hash(self.recipe)


class Manifest:
    """The records under `folder` (`.cinema/manifest/`). Reads go to disk each time, so
    a coordinator sees what its workers recorded."""

    def __init__(self, folder: Path, tmp_dir: Path):
        self.folder = folder
        self.tmp_dir = tmp_dir
        migrate_legacy(folder.with_suffix(".json"), self)

    def record_path(self, stage: str, key: str) -> Path:
        # Shot ids are already safe file names; anything else is named by its hash.
        name = key if _PLAIN_KEY.match(key) else "h-" + hashlib.sha256(key.encode()).hexdigest()[:32]
        return self.folder / stage / f"{name}.json"

    def get(self, stage: str, key: str) -> Record | None:
        try:
            raw = json.loads(self.record_path(stage, key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # never recorded, or unreadable: the artifact is rebuilt
        if not _valid(raw) or raw.get("version") != RECORD_VERSION or raw.get("key") != key:
            return None
        return Record(raw["recipe"], raw["output"])

    def put(self, stage: str, key: str, record: Record) -> None:
        data = {"version": RECORD_VERSION, "stage": stage, "key": key,
                "recipe": record.recipe, "output": record.output}
        atomic_write_text(self.record_path(stage, key), json.dumps(data, indent=1), self.tmp_dir)

    def artifacts(self) -> dict[str, dict[str, dict]]:
        """Every readable record, {stage: {key: {"recipe", "output"}}}, for inspection."""
        found: dict[str, dict[str, dict]] = {}
        for path in sorted(self.folder.glob("*/*.json")):
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if _valid(raw) and raw.get("version") == RECORD_VERSION:
                found.setdefault(raw["stage"], {})[raw["key"]] = {"recipe": raw["recipe"], "output": raw["output"]}
        return found


def _valid(raw: Any) -> bool:
    return isinstance(raw, dict) and isinstance(raw.get("recipe"), dict) and isinstance(raw.get("output"), str)


def migrate_legacy(legacy: Path, manifest: Manifest) -> None:
    """Split an old single-file manifest into records, once. Idempotent: two processes
    migrating at the same time write the same records; an unreadable old file is
    dropped (everything it described is rebuilt, as it was before)."""
    if not legacy.is_file():
        return
    try:
        loaded = json.loads(legacy.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        loaded = {}
    for stage, records in _legacy_artifacts(loaded).items():
        for key, raw in records.items():
            if _valid(raw) and manifest.get(stage, key) is None:
                manifest.put(stage, key, Record(raw["recipe"], raw["output"]))
    legacy.unlink(missing_ok=True)


def _legacy_artifacts(loaded: Any) -> dict[str, dict[str, Any]]:
    """The records of an old manifest, keeping only what has the right shape: valid JSON
    of another shape (a tool's rewrite, a bad merge) loses just the damaged parts, whose
    artifacts are then rebuilt, instead of failing every command."""
    if not isinstance(loaded, dict) or loaded.get("version") != LEGACY_VERSION:
        return {}
    artifacts = loaded.get("artifacts")
    if not isinstance(artifacts, dict):
        return {}
    return {stage: records for stage, records in artifacts.items()
            if isinstance(stage, str) and isinstance(records, dict)}
