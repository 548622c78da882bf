"""Shards: WebDataset tar files, written atomically.

A shard is built under the dataset's .cinema/tmp/, fsynced and renamed into shards/,
so a reader never sees half a shard. Members are stored with fixed metadata (mtime 0,
uid 0, mode 0644), so the same samples make byte-identical shards. Samples are grouped
by key as WebDataset expects: KEY.jpg, KEY.json, KEY.txt next to each other.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Sequence
from pathlib import Path

from cinema_cli.project.files import atomic_output

Member = tuple[str, bytes]  # (name inside the tar, content)


def write_shard(target: Path, members: Sequence[Member], tmp_dir: Path) -> None:
    with atomic_output(target, tmp_dir) as temp:
        with tarfile.open(temp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))


def read_shard(path: Path) -> dict[str, dict[str, bytes]]:
    """{key: {extension: bytes}} of a shard, in file order."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for info in tar:
            if not info.isfile():
                continue
            key, _, extension = info.name.partition(".")
            samples.setdefault(key, {})[extension] = tar.extractfile(info).read()
    return samples


def write_shards(folder: Path, prefix: str, samples: Sequence[list[Member]], per_shard: int, tmp_dir: Path) -> list[str]:
    """Write `samples` (each a list of members) as PREFIX-00000.tar, ... in `folder`;
    remove this prefix's shards left from a bigger earlier run. Returns the names."""
    names = []
    for number, first in enumerate(range(0, len(samples), per_shard)):
        name = f"{prefix}-{number:05d}.tar"
        write_shard(folder / name, [m for sample in samples[first:first + per_shard] for m in sample], tmp_dir)
        names.append(name)
    for old in folder.glob(f"{prefix}-*.tar"):
        if old.name not in names and old.name[len(prefix) + 1:-4].isdigit():
            old.unlink()
    return names
