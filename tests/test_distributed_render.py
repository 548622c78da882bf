"""`cinema render --gpus N`: the stage graph over torchrun ranks (gloo, CPU processes).

One project is rendered in one process, and twice on 2 ranks. A fresh twin ends
byte-identical to the single-process render, having handed out no keyframe before the
keyframes it may be conditioned on and no shot before its own keyframe, but shots
before the last keyframe was recorded (the stages run as one graph). Another twin,
where rank 1 is really killed (SIGKILL) after its second job, fails cleanly, keeps what
was finished, and the next `render --gpus 2` resumes and ends byte-identical too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import manifest_records

from cinema_cli.bench.render import make_project
from cinema_cli.errors import BadInput, CinemaError
from cinema_cli.pipeline import Pipeline
from cinema_cli.pipeline.distributed import KILL_ENV, DistributedExecutor, LocalRank, distributable_stages, rank_tmp
from cinema_cli.project.files import confine_writes
from cinema_cli.project.manifest import Manifest, Record
from cinema_cli.project.project import Project
from cinema_cli.runtime.distributed import processes_for

SHOTS = 5


def small_project(folder: Path, **keyframe_options) -> Path:
    root = make_project(folder, SHOTS)
    configure(root, resolution={"width": 192, "height": 96}, fps=8,
              keyframes={"backend": "sketch", "options": keyframe_options})
    return root


def configure(root: Path, **settings) -> None:
    config = root / "cinema.yaml"
    data = yaml.safe_load(config.read_text())
    data.update(settings)
    config.write_text(yaml.safe_dump(data, sort_keys=False))


def render(root: Path, *args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    result = subprocess.run([sys.executable, "-m", "cinema_cli", "render", "-p", str(root), "--json", *args],
                            capture_output=True, text=True, timeout=240, env={**os.environ, **(env or {})})
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result, json.loads(lines[0])


def artifacts(root: Path) -> dict[str, bytes]:
    files = [*root.glob("keyframes/*"), *root.glob("shots/*.mp4"), root / "film.mp4"]
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in files if p.is_file()}


def test_two_ranks_survive_a_killed_worker_and_equal_one_process(tmp_path):
    single = small_project(tmp_path / "single")
    _, alone = render(single)
    assert alone["ok"] and "ranks" not in alone  # one process: as before

    fresh = small_project(tmp_path / "fresh")
    done, report = render(fresh, "--gpus", "2")
    assert done.returncode == 0 and report["ok"], done.stderr
    assert artifacts(fresh) == artifacts(single)
    assert manifest_records(fresh) == manifest_records(single)
    builds = report["builds"]
    assert report["ranks"] == 2 and {b["rank"] for b in builds if b["stage"] == "shots"} == {0, 1}
    assert_schedule_kept_dependencies(fresh, builds)
    # One graph, not stage after stage: a shot went out while keyframes were still drawn.
    last_keyframe = max(b["recorded"] for b in builds if b["stage"] == "keyframes")
    assert any(b["handed_out"] < last_keyframe for b in builds if b["stage"] == "shots"), builds

    twin = small_project(tmp_path / "twin")
    killed, failed = render(twin, "--gpus", "2", env={KILL_ENV: "1:2"})
    assert killed.returncode == 1, killed.stderr
    assert failed["ok"] is False and "another rank died" in failed["error"]
    assert "cinema render --gpus 2` again to resume" in killed.stderr
    kept = manifest_records(twin)
    kept_keyframes, kept_shots = kept.get("keyframes", {}), kept.get("shots", {})
    # what was finished is recorded, not everything
    assert kept_keyframes and len(kept_keyframes) + len(kept_shots) < 2 * SHOTS
    for stage, records in (("keyframes", kept_keyframes), ("shots", kept_shots)):
        for key, record in records.items():  # and it is exactly what one process made
            path = f"keyframes/{key}.png" if stage == "keyframes" else f"shots/{key}.mp4"
            assert (twin / path).read_bytes() == (single / path).read_bytes()
            assert record == manifest_records(single)[stage][key]
    assert sorted(p.stem for p in (twin / "shots").glob("*.mp4")) == sorted(kept_shots)
    assert not (twin / ".cinema" / "lock").read_text().strip()  # rank 0 let go of the lock
    assert not (twin / "film.mp4").exists()

    resumed, report = render(twin, "--gpus", "2")
    assert resumed.returncode == 0 and report["ok"], resumed.stderr
    everything = {f"s{i:02d}" for i in range(1, SHOTS + 1)}
    assert set(report["rebuilt"]["keyframes"]) == everything - set(kept_keyframes)
    assert set(report["rebuilt"]["shots"]) == everything - set(kept_shots)
    assert artifacts(twin) == artifacts(single)
    assert manifest_records(twin) == manifest_records(single)
    assert_schedule_kept_dependencies(twin, report["builds"])


def assert_schedule_kept_dependencies(root: Path, builds: list[dict]) -> None:
    assert all(b["seconds"] > 0 and b["handed_out"] <= b["recorded"] for b in builds)
    recorded = {(b["stage"], b["key"]): b["recorded"] for b in builds}
    for build in builds:
        if build["stage"] == "keyframes":
            # handed out only after every keyframe it may be conditioned on was recorded
            sidecar = json.loads((root / f"keyframes/{build['key']}.json").read_text())
            waits = [c["shot"] for c in sidecar["context"] if not c["shot"].startswith("@")]
            waits += [k for s, k in recorded if s == "keyframes" and k < build["key"]]
            assert all(recorded.get(("keyframes", k), -1) <= build["handed_out"] for k in waits), build
        elif build["stage"] == "shots":  # after its own keyframe
            assert recorded.get(("keyframes", build["key"]), -1) <= build["handed_out"], build
        elif build["stage"] == "story":  # by rank 0, before anything else
            assert build["rank"] == 0
            assert all(b["handed_out"] >= build["recorded"] for b in builds if b is not build)
        else:  # the film, by rank 0, after every shot
            assert build["stage"] == "film" and build["rank"] == 0
            assert all(build["handed_out"] >= t for (s, _), t in recorded.items() if s == "shots")


def test_keyframes_that_read_no_context_wait_for_none(tmp_path):
    """`sketch` with `preview_memory: false` reads no context (it never draws from it):
    its keyframes wait for no other, so two ranks draw two at once; their recipes hold no
    memory, so an edit redraws no other keyframe; and the pictures are the same."""
    previewed = small_project(tmp_path / "previewed")  # the default: the memory's context planned
    Pipeline(Project.open(previewed)).run(until="keyframes")
    root = small_project(tmp_path / "alone", preview_memory=False)
    pipeline = Pipeline(Project.open(root))
    stages = distributable_stages(pipeline)
    ranks = [LocalRank(stages, rank_tmp(pipeline.project.tmp_dir, 0)),
             LocalRank(stages, rank_tmp(pipeline.project.tmp_dir, 1))]
    ranks[1].index = 1  # two of rank 0's own builders: the scheduler of `render --gpus 2`, in one process
    executor = DistributedExecutor(pipeline.reporter, ranks)
    try:
        assert pipeline.run(until="keyframes", executor=executor).rebuilt.keyframes
    finally:
        for rank in ranks:
            rank.close()
    built = {b["key"]: b for b in executor.log if b["stage"] == "keyframes"}
    assert len(built) == SHOTS
    assert built["s02"]["handed_out"] < built["s01"]["recorded"]  # no chain: in flight together

    ids = [f"s{i:02d}" for i in range(1, SHOTS + 1)]
    records = manifest_records(root)["keyframes"]
    for i in ids:
        assert (root / f"keyframes/{i}.png").read_bytes() == (previewed / f"keyframes/{i}.png").read_bytes()
        assert json.loads((root / f"keyframes/{i}.json").read_text())["context"] == []
        assert "memory" not in records[i]["recipe"] and records[i]["recipe"]["context"] == []
    previewed_context = {i: [c["shot"] for c in json.loads((previewed / f"keyframes/{i}.json").read_text())
                             ["context"]] for i in ids}
    readers = [i for i in ids if "s01" in previewed_context[i]]
    assert readers  # with the memory previewed, later keyframes were drawn "with" s01...

    for project in (root, previewed):
        board = project / "storyboard.yaml"
        data = yaml.safe_load(board.read_text())
        data["shots"][0]["caption"] += " The rain starts."
        board.write_text(yaml.safe_dump(data, sort_keys=False))
    # ...so an edit to s01 redraws them there; here, only s01.
    assert Pipeline(Project.open(previewed)).run(until="keyframes").rebuilt.keyframes == ["s01", *readers]
    assert Pipeline(Project.open(root)).run(until="keyframes").rebuilt.keyframes == ["s01"]

    # Turning the preview off redraws every keyframe once (their recipes lose the memory),
    # to the same pictures.
    pictures = {i: (previewed / f"keyframes/{i}.png").read_bytes() for i in ids}
    configure(previewed, keyframes={"backend": "sketch", "options": {"preview_memory": False}})
    status = Pipeline(Project.open(previewed)).status()
    assert all(row.keyframe.reasons == ["memory changed"] for row in status.shots)
    assert Pipeline(Project.open(previewed)).run(until="keyframes").rebuilt.keyframes == ids
    assert {i: (previewed / f"keyframes/{i}.png").read_bytes() for i in ids} == pictures


def test_a_worker_cannot_write_project_state(tmp_path):
    manifest = Manifest(tmp_path / "manifest", tmp_path / "tmp")
    confine_writes(tmp_path / "tmp" / "rank-1")
    try:
        with pytest.raises(CinemaError, match="rank 0 publishes"):
            manifest.put("keyframes", "s01", Record({"a": 1}, "x"))
    finally:
        confine_writes(None)
    assert not (tmp_path / "manifest").exists() or not list((tmp_path / "manifest").rglob("*.json"))


def test_gpus_means_devices_or_cpu_processes():
    assert processes_for("all", cuda=4, cores=2) == (4, None)
    assert processes_for("2", cuda=4, cores=2) == (2, None)
    assert processes_for("2", cuda=0, cores=2)[0] == 2  # CPU processes, for previz and tests
    for spec, cuda, cores in (("3", 2, 16), ("0", 2, 16), ("-1", 0, 2), ("all", 0, 16), ("two", 0, 2), ("3", 0, 2)):
        with pytest.raises(BadInput, match="--gpus"):
            processes_for(spec, cuda=cuda, cores=cores)


def test_bad_gpus_exit_2_and_write_nothing(tmp_path):
    root = small_project(tmp_path / "p")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    for gpus in ("0", "999"):  # none; more than this machine has (GPUs, or CPU cores without one)
        result = subprocess.run([sys.executable, "-m", "cinema_cli", "render", "-p", str(root), "--gpus", gpus],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert f"--gpus {gpus}" in result.stderr
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
