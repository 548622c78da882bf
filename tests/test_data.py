"""`cinema data`: generated films with known shots through the real pipeline (ffmpeg,
TransNetV2 on CPU, the subtitle detector), asserting exact boundaries, crops and filter
reasons, the shards a trainer reads, content-hash re-runs, the lock, kill-and-resume
and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from cinema_cli.cli.app import app
from cinema_cli.data.prepare import prepare
from cinema_cli.data.reader import Dataset
from cinema_cli.data.config import SampleSettings
from cinema_cli.data.samples import group
from cinema_cli.data.shards import read_shard
from cinema_cli.data.state import DatasetDir
from data_support import FPS, SHOTS, make_film, make_letterboxed

# Every shot of SHOTS as [start, end) frames: hard cuts between, and the one-second
# crossfade into shot 3 belongs to neither shot (frames 61..71; frame 60 is still shot 2).
EXPECTED_SPANS = [(0, 24), (24, 48), (48, 61), (72, 84), (84, 108), (108, 132), (132, 156), (156, 180),
                  (180, 186), (186, 210)]
SMALL = {"keyframes": {"short_side": 64}}


def cinema(*args: str, rc: int = 0):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == rc, f"exit {result.exit_code}\n{result.stdout}\n{result.stderr}\n{result.exception!r}"
    return result


def cinema_json(*args: str, rc: int = 0) -> dict:
    return json.loads(cinema(*args, "--json", rc=rc).stdout.strip().splitlines()[-1])


def write_config(root: Path, **sections: dict) -> None:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "dataset.yaml"
    data = yaml.safe_load(path.read_text()) if path.is_file() else {}
    for section, fields in sections.items():
        data.setdefault(section, {}).update(fields)
    path.write_text(yaml.safe_dump(data))


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("films")
    return {"film": make_film(folder / "film.mp4"), "lb": make_letterboxed(folder / "lb.mp4")}


@pytest.fixture(scope="module")
def prepared(films, tmp_path_factory) -> tuple[Path, dict]:
    """Both films with TransNetV2, prepared once for the tests that only read."""
    root = tmp_path_factory.mktemp("ds") / "dataset"
    write_config(root, boundaries={"detector": "transnetv2"}, **SMALL)  # auto is scenedetect on a CPU
    data = cinema_json("data", "prepare", str(films["film"]), str(films["lb"]), "-o", str(root))
    return root, data


def steps(root: Path, film: str, step: str):
    return json.loads((root / "films" / film / f"{step}.json").read_text())["data"]


# ---------------------------------------------------------------- what one film becomes


def test_boundaries_crops_and_filter_reasons_are_exact(prepared):
    root, data = prepared
    assert data["ok"] and set(data["films"]) == {"film", "lb"}
    frames = steps(root, "film", "frames")
    assert [(s["start_frame"], s["end_frame"]) for s in frames] == EXPECTED_SPANS
    assert [s["after"] for s in frames] == ["cut", "cut", "dissolve"] + ["cut"] * 6 + ["end"]
    assert frames[1]["start"] == pytest.approx(24 / FPS) and frames[9]["end"] == pytest.approx(210 / FPS)
    judged = steps(root, "film", "filters")
    assert [j["reasons"] for j in judged] == [reasons for *_, reasons in SHOTS]
    assert judged[6]["duplicate_of"] == 0  # the repeated shot is a duplicate of the first
    assert judged[7]["subtitles"] and not any(j["subtitles"] for i, j in enumerate(judged) if i != 7)
    # Subtitles are looked for on every frame the bars were judged on: found on each of shot 7's.
    checked = steps(root, "film", "subtitles")["7"]["checked"]
    assert len(checked) == 6 and sorted(map(int, judged[7]["subtitles"])) == checked
    # 2:1 already: the crop is the whole frame, the keyframe 128x64.
    assert all(s["crop"] == [0, 0, 160, 80] and s["picture"] == [0, 0, 160, 80] for s in frames)
    with Image.open(root / "films" / "film" / frames[0]["keyframe"]) as image:
        assert image.size == (128, 64)
    # The 2.39:1 film in a 16:9 frame: bars of 14 rows found on both shots, the crop 2:1 inside.
    for shot in steps(root, "lb", "frames"):
        assert shot["picture"] == [0, 14, 192, 94] and shot["crop"] == [16, 14, 176, 94]


def test_shards_hold_the_kept_shots_with_their_records(prepared, films):
    root, _ = prepared
    data = Dataset(root)
    samples = list(data.keyframes(film="film"))
    assert [s.shot for s in samples] == [0, 1, 2, 3, 9]
    first = samples[0]
    assert (first.start_frame, first.end_frame, first.start, first.end) == (0, 24, 0.0, 2.0)
    assert first.source == str(films["film"]) and first.caption is None and first.characters == []
    assert first.filters["reasons"] == [] and first.filters["luma"] > 100
    assert first.image().size == (128, 64)
    # The clip of a sample decodes from the source: 24 frames, cropped and scaled.
    clip = list(data.clip(first, 32, 16))
    assert len(clip) == 24 and clip[0].shape == (16, 16 * 2, 3)
    # Its first frame is the film's frame 0 (testsrc), not the next shot's smptebars.
    keyframe = np.asarray(first.image().resize((32, 16)), np.float32)
    assert np.abs(clip[12].astype(np.float32) - keyframe).mean() < 25
    lb = list(data.keyframes(film="lb"))
    assert [s.crop for s in lb] == [[16, 14, 176, 94]] * 2
    multishot = list(data.multishot(film="lb"))
    assert [(m.shots, m.cuts) for m in multishot] == [([0, 1], [{"frame": 24, "type": "cut"}])]


def test_multishot_groups_consecutive_usable_shots_with_their_dissolve(prepared):
    root, _ = prepared
    rows = [{**s, "video_ok": j["video_ok"]} for s, j in zip(steps(root, "film", "frames"), steps(root, "film", "filters"))]
    samples = group(rows, SampleSettings(targets=[3.0, 5.0], tolerance=0.35, max_shots=13))
    by_target = {t: [s["shots"] for s in samples if s["target"] == t] for t in (3.0, 5.0)}
    # Shots 0-3 form one run (4 is too dark); a 2 s shot alone is within 3 s ± 35 %; shot 2 (1.08 s)
    # needs shot 3; 6 (a duplicate keyframe) is still fine for video.
    assert by_target == {3.0: [[0], [1], [2, 3], [6], [9]], 5.0: [[0, 1]]}
    dissolve = next(s for s in samples if s["shots"] == [2, 3])
    assert dissolve["cuts"] == [{"frame": 24, "type": "dissolve", "transition": [13, 24]}]
    assert (dissolve["start_frame"], dissolve["end_frame"]) == (48, 84)
    short = group(rows, SampleSettings(targets=[4.0], tolerance=0.0, max_shots=1))
    assert short == []  # no single shot is 4 s long


def test_status_and_show(prepared):
    root, _ = prepared
    data = cinema_json("data", "status", str(root))
    assert data["done"] == ["film", "lb"] and data["pending"] == data["failed"] == []
    assert data["shots"] == 12 and data["kept"] == 7
    assert data["dropped"] == {"flat": 1, "near_duplicate": 1, "subtitles": 1, "too_dark": 1, "too_short": 1}
    assert data["detectors"] == {"transnetv2": 2}
    assert data["hours"] == pytest.approx((17.5 + 4) / 3600, abs=1e-4)
    shown = cinema_json("data", "show", str(root), "--film", "film")
    page = Path(shown["html"]).read_text()
    assert "dropped: subtitles" in page and "dissolve" in page and "films/film/keyframes/000000.jpg" in page
    with Image.open(shown["sheets"][0]) as sheet:
        assert sheet.width > 4 * 240
    assert "no such film" in cinema("data", "show", str(root), "--film", "nope", rc=2).stderr


# ---------------------------------------------------------------- re-runs do exactly what changed


def test_same_settings_do_no_work_and_a_change_redoes_what_it_affects(films, tmp_path):
    root = tmp_path / "ds"
    write_config(root, boundaries={"detector": "scenedetect"}, **SMALL)

    def run() -> list[str]:
        return cinema_json("data", "prepare", str(films["lb"]), "-o", str(root))["films"]["lb"]["worked"]

    assert run() == ["source", "boundaries", "frames", "subtitles", "filters", "samples", "shards"]
    shards = snapshot(root / "shards")
    assert run() == []
    write_config(root, filters={"dark_luma": 110})  # the smptebars shot (luma 96) is now too dark
    assert run() == ["filters", "samples", "shards"]
    assert [s.shot for s in Dataset(root).keyframes()] == [0]
    write_config(root, filters={"dark_luma": 20})
    assert run() == ["filters", "samples", "shards"]
    assert snapshot(root / "shards") == shards  # the same samples make the same bytes
    write_config(root, keyframes={"short_side": 32})
    assert run() == ["frames", "subtitles", "filters", "samples", "shards"]
    write_config(root, samples={"targets": [4.0]})
    assert run() == ["samples", "shards"]
    write_config(root, filters={"subtitles": False})
    assert run() == ["filters", "samples", "shards"]
    (root / "films" / "lb" / "subtitles.json").unlink()  # found again: the film is decoded once more
    write_config(root, filters={"subtitles": True})
    assert run() == ["subtitles", "filters", "samples", "shards"]
    assert all(len(s["checked"]) == 6 and not s["found"] for s in steps(root, "lb", "subtitles").values())


# ---------------------------------------------------------------- one writer, kill and resume


def test_a_second_prepare_is_refused_naming_the_holder(films, tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    with DatasetDir(root).lock():
        result = cinema("data", "prepare", str(films["lb"]), "-o", str(root), rc=1)
    assert f"pid {os.getpid()}" in result.stderr and "being written by another" in result.stderr
    assert not (root / "manifest.json").exists()


def test_killed_prepare_resumes_to_what_an_uninterrupted_parallel_run_wrote(films, tmp_path):
    reference, root = tmp_path / "reference", tmp_path / "killed"
    for folder in (reference, root):
        write_config(folder, boundaries={"detector": "scenedetect"}, filters={"subtitles": False}, **SMALL)
    args = [str(films["lb"]), str(films["film"])]
    events: list[tuple] = []  # films in two processes, their progress sent back per shot
    done = prepare(reference, [Path(a) for a in args], workers=2, on_progress=lambda *event: events.append(event))
    for name, entry in done.films.items():
        shots = [e[2:] for e in events if e[:2] == (name, "keyframes")]
        assert shots == [(i, entry["shots"]) for i in range(1, entry["shots"] + 1)]
    proc = subprocess.Popen([sys.executable, "-m", "cinema_cli", "data", "prepare", *args, "-o", str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (root / "films" / "film" / "boundaries.json").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for shard in (root / "shards").rglob("*"):  # every visible shard is whole
        if shard.is_file():
            assert shard.suffix == ".tar"
            read_shard(shard)
    resumed = cinema_json("data", "prepare", *args, "-o", str(root))["films"]
    assert resumed["lb"]["worked"] == []  # finished before the kill
    assert "boundaries" not in resumed["film"]["worked"]
    assert snapshot(root / "shards") == snapshot(reference / "shards")
    assert not list((root / ".cinema" / "tmp").iterdir())


# ---------------------------------------------------------------- bad input: exit 2, nothing changed


@pytest.fixture
def existing(films, tmp_path) -> Path:
    root = tmp_path / "ds"
    write_config(root, boundaries={"detector": "scenedetect"}, filters={"subtitles": False}, **SMALL)
    cinema("data", "prepare", str(films["lb"]), "-o", str(root))
    return root


def _bad(tmp_path: Path, kind: str) -> tuple[list[str], str]:
    if kind == "missing":
        return [str(tmp_path / "nope.mp4")], "no such file"
    if kind == "not a video":
        path = tmp_path / "notes.mp4"
        path.write_text("this is not a film\n" * 50)
        return [str(path)], "not a video"
    if kind == "empty":
        path = tmp_path / "empty.mp4"
        path.write_bytes(b"")
        return [str(path)], "empty"
    if kind == "no frames":
        path = tmp_path / "noframes.mp4"
        from data_support import ffmpeg
        ffmpeg("-f", "lavfi", "-i", "testsrc=s=64x32:r=12:d=1", "-frames:v", "0", "-c:v", "libx264", str(path))
        return [str(path)], "has no video"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing", "not a video", "empty", "no frames"])
def test_bad_films_exit_2_and_change_nothing(existing, films, tmp_path, kind):
    bad, message = _bad(tmp_path, kind)
    before = snapshot(existing)
    result = cinema("data", "prepare", str(films["lb"]), *bad, "-o", str(existing), rc=2)
    assert message in result.stderr
    assert snapshot(existing) == before


@pytest.mark.parametrize("content, message", [
    (b"characters:\n  - name: Ana\n  - name: [unclosed\n", "malformed YAML"),
    (b"\xff\xfe not text", "not UTF-8"),
    (b"characters:\n  - name: Ana\n    role: lead\n", "cast.yaml:3: characters.0.role: unknown field"),
])
def test_unreadable_cast_exits_2_and_changes_nothing(existing, films, tmp_path, content, message):
    cast = tmp_path / "cast.yaml"
    cast.write_bytes(content)
    before = snapshot(existing)
    result = cinema("data", "prepare", str(films["lb"]), "-o", str(existing), "--cast", str(cast), rc=2)
    assert message in result.stderr
    assert snapshot(existing) == before


def test_dataset_path_that_is_a_file_exits_2(films, tmp_path):
    target = tmp_path / "dataset"
    target.write_text("keep me")
    result = cinema("data", "prepare", str(films["lb"]), "-o", str(target), rc=2)
    assert "is a file, not a folder" in result.stderr and target.read_text() == "keep me"
    assert "not a prepared dataset" in cinema("data", "status", str(tmp_path), rc=2).stderr


def test_bad_setting_in_dataset_yaml_names_file_line_and_field(existing, films):
    (existing / "dataset.yaml").write_text((existing / "dataset.yaml").read_text().replace(
        "dark_luma: 20.0", "dark_luma: bright"))
    before = snapshot(existing)
    result = cinema("data", "prepare", str(films["lb"]), "-o", str(existing), rc=2)
    assert "dataset.yaml" in result.stderr and "filters.dark_luma" in result.stderr
    assert snapshot(existing) == before
