"""A dataset folder on disk: its paths, its lock, its manifest and the per-film step files.

Every step of a film writes one JSON file, films/ID/STEP.json = {"recipe": HASH, "data":
...}, atomically. HASH is the content hash of everything the step's output depends on
(the source file's sha256, the settings of that step, the hashes of the steps before
it), so a step is done exactly when its file's recipe equals the one computed now: the
same settings do no work, a changed setting redoes that step and the ones after it.
The manifest (manifest.json) is the summary `status` reads: per film its source and
content hash, its state (done / pending / failed, and why) and counts.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from cinema_cli.errors import BadInput, LockHeld
from cinema_cli.project.files import atomic_write_text
from cinema_cli.project.lock import ProjectLock

MANIFEST_VERSION = 1
DONE, PENDING, FAILED = "done", "pending", "failed"


class DatasetDir:
    def __init__(self, root: Path):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise BadInput(f"dataset {self.root}: is a file, not a folder; give a new or existing dataset folder")

    @property
    def state_dir(self) -> Path:
        return self.root / ".cinema"

    @property
    def tmp_dir(self) -> Path:
        return self.state_dir / "tmp"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def film_dir(self, film: str) -> Path:
        return self.root / "films" / film

    def shard_dir(self, kind: str) -> Path:
        return self.root / "shards" / kind

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    # ------------------------------------------------------------ lock

    def lock(self) -> ProjectLock:
        return DatasetLock(self.state_dir / "lock", self.root)

    # ------------------------------------------------------------ manifest

    def read_manifest(self) -> dict[str, Any]:
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"version": MANIFEST_VERSION, "films": {}}
        except (OSError, ValueError) as err:
            raise BadInput(f"{self.manifest_path}: unreadable ({err}); it is written by `cinema data "
                           "prepare` only — restore it or prepare into a new folder") from None
        if data.get("version") != MANIFEST_VERSION:
            raise BadInput(f"{self.manifest_path}: manifest version {data.get('version')!r}, this cinema "
                           f"reads version {MANIFEST_VERSION}")
        return data

    def write_manifest(self, data: dict[str, Any]) -> None:
        atomic_write_text(self.manifest_path, json.dumps(data, indent=1, sort_keys=True) + "\n", self.tmp_dir)

    # ------------------------------------------------------------ step files

    def step_path(self, film: str, step: str) -> Path:
        return self.film_dir(film) / f"{step}.json"

    def read_step(self, film: str, step: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.step_path(film, step).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # missing or unreadable: the step is redone

    def done_step(self, film: str, step: str, recipe: str) -> Any | None:
        """The step's data if it was made from `recipe`, else None."""
        stored = self.read_step(film, step)
        return stored["data"] if stored and stored.get("recipe") == recipe else None

    def write_step(self, film: str, step: str, recipe: str, data: Any) -> None:
        atomic_write_text(self.step_path(film, step),
                          json.dumps({"recipe": recipe, "data": data}, sort_keys=True) + "\n", self.tmp_dir)


class DatasetLock(ProjectLock):
    """The project lock's flock, with a refusal that names the dataset and the holder."""

    def __init__(self, path: Path, root: Path):
        super().__init__(path)
        self.root = root

    def acquire(self) -> None:
        try:
            super().acquire()
        except LockHeld:
            try:
                holder = self.path.read_text().strip() or "unknown"
            except OSError:
                holder = "unknown"
            raise LockHeld(f"dataset {self.root} is being written by another `cinema data` process "
                           f"(pid {holder}); lock: {self.path}. Wait for it to finish, or stop it.") from None


def film_id(path: Path, taken: set[str]) -> str:
    """A film's id in the dataset: its file name made safe, made unique with a short
    hash of its absolute path when another film already has that name."""
    import hashlib

    base = re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem).strip("_")[:48] or "film"
    if base not in taken:
        return base
    return f"{base}-{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]}"


def remove_tmp(dataset: DatasetDir) -> None:
    """Half-written files a killed run left in .cinema/tmp/ (only the lock holder calls this)."""
    if dataset.tmp_dir.is_dir():
        for stray in dataset.tmp_dir.iterdir():
            if stray.is_file():
                os.unlink(stray)
