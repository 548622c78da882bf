"""Atomic file writes and path safety.

Every artifact becomes visible only when complete: it is written under the project's
`.cinema/tmp/`, fsynced, then renamed into place (same filesystem, so the rename is
atomic). A run killed at any moment leaves at worst a stray file in `.cinema/tmp/`,
which the next writer removes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from cinema_cli.errors import CinemaError, UnsafePath
from cinema_cli.redaction import contains_secret


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path_for(target: Path, tmp_dir: Path) -> Path:
    """A unique temporary name in `tmp_dir` keeping `target`'s suffix (muxers need it)."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    return tmp_dir / f"{target.stem}.{os.getpid()}.{secrets.token_hex(4)}{target.suffix}"


# A worker rank of a distributed render (pipeline.distributed) makes outputs in its own
# scratch folder and must never write project state (manifest, storyboard, keyframes,
# film, caches): once `confine_writes` names that folder, publishing anywhere else fails.
_confined: Path | None = None


def confine_writes(folder: Path | None) -> None:
    """Refuse, in this process, every atomic write outside `folder` (None lifts it)."""
    global _confined
    _confined = folder.resolve() if folder is not None else None


def writes_confined() -> bool:
    return _confined is not None


def publish(temp: Path, target: Path) -> None:
    """fsync a finished temporary file and rename it onto `target`."""
    if _confined is not None and not target.resolve().is_relative_to(_confined):
        raise CinemaError(f"refusing to write {target}: this rank only makes outputs; rank 0 publishes "
                          "them and writes the project's state")
    fd = os.open(temp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(temp, target)
    fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_output(target: Path, tmp_dir: Path | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `target` atomically,
    on failure it is removed and `target` is untouched."""
    temp = temp_path_for(target, tmp_dir or target.parent)
    try:
        yield temp
        publish(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def atomic_write_bytes(target: Path, data: bytes, tmp_dir: Path | None = None) -> None:
    with atomic_output(target, tmp_dir) as temp:
        temp.write_bytes(data)


def atomic_write_text(target: Path, text: str, tmp_dir: Path | None = None) -> None:
    # Every text file the project writes passes here: an API key in one (echoed by a
    # server into model output that slipped past redaction) is refused, never written.
    if contains_secret(text):
        raise CinemaError(f"refusing to write {target.name}: it would contain an API key from the "
                          "environment; nothing was written")
    atomic_write_bytes(target, text.encode("utf-8"), tmp_dir)


def inside(root: Path, relative: str, what: str) -> Path:
    """Resolve a path written in a project file; refuse anything outside `root`
    (absolute paths elsewhere, `..` escapes, symlinks that lead out)."""
    root = root.resolve()
    candidate = (root / relative).resolve()
    if candidate != root and root not in candidate.parents:
        raise UnsafePath(
            f"{what}: path {relative!r} leads outside the project ({root}); "
            "keep project files inside the project folder"
        )
    return candidate


def check_folder_inside(root: Path, folder: Path, what: str) -> None:
    """Refuse a folder the project writes into (keyframes/, shots/, .cinema/...) when it
    leads outside the project through a symlink: cinema never writes through one. A
    file that is a symlink needs no check: the atomic rename replaces the link itself."""
    root = root.resolve()
    target = folder.resolve()
    if target != root and root not in target.parents:
        raise UnsafePath(
            f"{what} {folder} leads to {target} through a symlink, outside the project; cinema "
            "writes only inside the project folder. Replace the link with a real folder (`rm` the "
            "link, not what it points to) and run again"
        )
