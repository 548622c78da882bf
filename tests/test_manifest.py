"""The manifest for many writers: one record per artifact, written atomically, so
concurrent writers keep each other's records; old single-file manifests migrate."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from conftest import manifest_records, open_manifest
from finishing_support import cinema, cinema_json, small_project

from cinema_cli.project.manifest import Record


def _write_many(root: str, worker: int, count: int) -> None:
    manifest = open_manifest(Path(root))
    for i in range(count):
        manifest.put("shots", f"w{worker}-{i}", Record({"worker": worker, "i": i}, f"{worker}:{i}"))


def test_concurrent_writers_lose_no_record(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_write_many, args=(str(tmp_path), w, 40)) for w in range(3)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
        assert p.exitcode == 0
    records = manifest_records(tmp_path)["shots"]
    assert len(records) == 120
    assert records["w2-39"] == {"recipe": {"worker": 2, "i": 39}, "output": "2:39"}
    assert not list((tmp_path / ".cinema" / "tmp").iterdir())  # no temporary left behind


def test_unreadable_or_foreign_record_is_not_trusted(tmp_path):
    manifest = open_manifest(tmp_path)
    manifest.put("keyframes", "s01", Record({"caption": "a"}, "abc"))
    assert manifest.get("keyframes", "s01") == Record({"caption": "a"}, "abc")
    path = manifest.record_path("keyframes", "s01")
    path.write_text(path.read_text()[:-5])  # torn
    assert manifest.get("keyframes", "s01") is None
    manifest.record_path("keyframes", "s02").write_text(
        json.dumps({"version": 2, "stage": "keyframes", "key": "s01", "recipe": {}, "output": "x"}))
    assert manifest.get("keyframes", "s02") is None  # a record under another name
    assert manifest.record_path("film", "a/../b").parent == tmp_path / ".cinema" / "manifest" / "film"


def test_an_old_project_migrates_on_first_open_and_stays_current(tmp_path):
    root = small_project(tmp_path, "heist", 128, 64, 8)
    cinema("render", cwd=root)
    before = manifest_records(root)
    # The project as an earlier cinema left it: one manifest.json, no record files.
    legacy = {"version": 1, "artifacts": before}
    (root / ".cinema" / "manifest.json").write_text(json.dumps(legacy, indent=1))
    for record in (root / ".cinema" / "manifest").glob("*/*.json"):
        record.unlink()
    status = cinema_json("status", cwd=root)
    assert status["film"] == "done" and status["story"] == "done"
    assert all(s["keyframe"] == "done" and s["shot"] == "done" for s in status["shots"])
    assert not (root / ".cinema" / "manifest.json").exists()
    assert manifest_records(root) == before
    rebuilt = cinema_json("render", cwd=root)["rebuilt"]
    assert rebuilt == {"story": False, "keyframes": [], "shots": [], "film": False}
