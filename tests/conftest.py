"""What the test files share: reading and tampering with a project's manifest (one
record per artifact under .cinema/manifest/), so no test depends on its layout."""

from __future__ import annotations

from pathlib import Path

from cinema_cli.project.manifest import Manifest, Record


def open_manifest(root: Path) -> Manifest:
    return Manifest(Path(root) / ".cinema" / "manifest", Path(root) / ".cinema" / "tmp")


def manifest_records(root: Path) -> dict[str, dict[str, dict]]:
    """Every record of a project: {stage: {key: {"recipe": ..., "output": sha256}}}."""
    return open_manifest(root).artifacts()


def put_record(root: Path, stage: str, key: str, recipe: dict, output: str) -> None:
    """Write one record as cinema does."""
    open_manifest(root).put(stage, key, Record(recipe, output))
