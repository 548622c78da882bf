"""End to end: the real `cinema` console script renders real projects with the real
ffmpeg; the outputs are checked by decoding them (`probe` counts decoded frames).

One full-size run of the shipped heist example, exactly as the README demo does it;
everything else at 256x128 @ 12 fps. Edit tests start from a copy of one rendered
small project (a rendered project is plain files: a copy is a valid, current project).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import manifest_records

from cinema_cli.assemble.ffmpeg import ffmpeg_exe
from cinema_cli.assemble.probe import probe
from cinema_cli.project.manifest import canonical_hash

SMALL_W, SMALL_H, SMALL_FPS = 256, 128, 12
NOTHING = {"story": False, "keyframes": [], "shots": [], "film": False}


# ---------------------------------------------------------------- running cinema


def _console_script() -> str:
    """The installed `cinema` console script of this Python environment."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / "cinema"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("cinema")
    if found is None:  # pragma: no cover - an install problem, not a test result
        pytest.fail("the `cinema` console script is not installed (pip install -e .)")
    return found


CINEMA = _console_script()


def cinema(*args: str, cwd: Path, rc: int | None = 0, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `cinema ARGS` in `cwd`; check its exit code unless rc is None."""
    env = {**os.environ, "COLUMNS": "200"}
    result = subprocess.run(
        [CINEMA, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )
    if rc is not None:
        assert result.returncode == rc, (
            f"cinema {' '.join(args)} exited {result.returncode}, expected {rc}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def cinema_json(*args: str, cwd: Path, rc: int | None = 0) -> dict:
    result = cinema(*args, "--json", cwd=cwd, rc=rc)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line, got:\n{result.stdout}\nstderr:\n{result.stderr}"
    return json.loads(lines[0])


def render_json(project: Path) -> dict:
    data = cinema_json("render", cwd=project)
    assert data["ok"] is True, data
    return data


# ---------------------------------------------------------------- project files


def load(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def dump(path: Path, data) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000), encoding="utf-8")


def set_config(project: Path, **fields) -> None:
    """Change top-level cinema.yaml fields like a text editor would (comments kept)."""
    path = project / "cinema.yaml"
    text = path.read_text(encoding="utf-8")
    for key, value in fields.items():
        text, count = re.subn(rf"(?m)^{key}:.*$", f"{key}: {value}", text)
        assert count == 1, f"{key} not found once in cinema.yaml"
    path.write_text(text, encoding="utf-8")


def make_small(project: Path, fps: int = SMALL_FPS) -> None:
    set_config(project, resolution=f"{{width: {SMALL_W}, height: {SMALL_H}}}", fps=fps)


def new_project(parent: Path, name: str, example: str | None, small: bool = True) -> Path:
    args = ["new", name] + (["--example", example] if example else [])
    cinema(*args, cwd=parent)
    project = parent / name
    if small:
        make_small(project)
    return project


def board(project: Path) -> list[dict]:
    return load(project / "storyboard.yaml")["shots"]


def ids(project: Path) -> list[str]:
    return [s["id"] for s in board(project)]


def sidecar_of(project: Path, shot_id: str) -> dict:
    return json.loads((project / "keyframes" / f"{shot_id}.json").read_text())


def retrievers(project: Path, shot_id: str) -> list[str]:
    """The shots whose keyframe was drawn with `shot_id`'s keyframe in its context. They
    are redone when it changes; the sketch ignores its context, so they come out
    byte-identical and nothing after them is redone."""
    return [i for i in ids(project) if any(c["shot"] == shot_id for c in sidecar_of(project, i)["context"])]


def stale_after(project: Path, shot_id: str) -> list[str]:
    """What status calls stale when `shot_id`'s keyframe is to be redrawn: every keyframe
    whose context leads back to it (status cannot know the redraws will be identical)."""
    reached = {shot_id}
    for i in ids(project):  # a context holds only earlier shots, so one pass in order
        if any(c["shot"] in reached for c in sidecar_of(project, i)["context"]):
            reached.add(i)
    return [i for i in ids(project) if i in reached - {shot_id}]


def frames_of(shot: dict, fps: int) -> int:
    return max(1, round(shot["duration"] * fps))


def expected_film_frames(shots: list[dict], fps: int, crossfade_seconds: float = 0.5) -> int:
    """Σ frames minus each crossfade's overlap: round(crossfade_seconds × fps), clamped
    to half the shorter of the two clips it joins (a clamp to 0 is a cut)."""
    fade = max(1, round(crossfade_seconds * fps))
    total = 0
    previous = None
    for shot in shots:
        frames = frames_of(shot, fps)
        total += frames
        if previous is not None and shot["transition"] == "crossfade":
            total -= min(fade, previous // 2, frames // 2)
        previous = frames
    return total


def artifact_files(project: Path) -> dict[str, tuple[int, int, str]]:
    """(inode, mtime, sha256) of every keyframe, sidecar, shot and the film: a rebuilt
    file is published by rename, so it gets a new inode."""
    files = {}
    for path in [*sorted((project / "keyframes").glob("*")), *sorted((project / "shots").glob("*")),
                 project / "film.mp4"]:
        if path.is_file():
            st = path.stat()
            files[str(path.relative_to(project))] = (
                st.st_ino, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return files


def rewritten(before: dict, after: dict) -> set[str]:
    return {name for name in after if before.get(name, (None, None))[:2] != after[name][:2]}


def expected_rewrites(rebuilt: dict) -> set[str]:
    names = {f"keyframes/{i}.png" for i in rebuilt["keyframes"]}
    names |= {f"keyframes/{i}.json" for i in rebuilt["keyframes"]}
    names |= {f"shots/{i}.mp4" for i in rebuilt["shots"]}
    if rebuilt["film"]:
        names.add("film.mp4")
    return names


def top_level_boxes(path: Path) -> list[str]:
    """The types of an MP4 file's top-level boxes, in file order."""
    types = []
    size_total = path.stat().st_size
    with open(path, "rb") as f:
        offset = 0
        while offset < size_total:
            f.seek(offset)
            header = f.read(8)
            assert len(header) == 8, f"truncated box header at {offset}"
            size = int.from_bytes(header[:4], "big")
            kind = header[4:].decode("latin-1")
            if size == 1:
                size = int.from_bytes(f.read(8), "big")
            elif size == 0:
                size = size_total - offset
            assert size >= 8, f"bad box size {size} for {kind!r} at {offset}"
            types.append(kind)
            offset += size
        assert offset == size_total, "boxes do not tile the file"
    return types


def decode(path: Path, width: int, height: int, frames: int | None = None) -> np.ndarray:
    """Decoded RGB frames, (N, H, W, 3) as float32."""
    limit = ["-frames:v", str(frames)] if frames else []
    raw = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(path), *limit,
         "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3).astype(np.float32)


def first_frame_rgb(path: Path, width: int, height: int) -> np.ndarray:
    return decode(path, width, height, 1)[0]


def check_outputs(project: Path, width: int, height: int, fps: int) -> None:
    """Every shot's keyframe, sidecar and video, and the film, match the storyboard."""
    shots = board(project)
    config = load(project / "cinema.yaml")
    crossfade = (config.get("assemble") or {}).get("crossfade_seconds", 0.5)
    manifest = manifest_records(project)

    film = probe(project / "film.mp4")
    assert (film.codec, film.pix_fmt) == ("h264", "yuv420p")
    assert (film.width, film.height) == (width, height)
    assert film.fps == fps
    assert film.frames == expected_film_frames(shots, fps, crossfade)
    assert not film.has_audio
    boxes = top_level_boxes(project / "film.mp4")
    assert "moov" in boxes and "mdat" in boxes, boxes
    assert boxes.index("moov") < boxes.index("mdat"), f"not faststart: {boxes}"

    assert sorted(p.name for p in (project / "shots").iterdir()) == sorted(f"{s['id']}.mp4" for s in shots)
    assert sorted(p.name for p in (project / "keyframes").iterdir()) == sorted(
        f"{s['id']}.{ext}" for s in shots for ext in ("json", "png"))
    for shot in shots:
        clip = probe(project / "shots" / f"{shot['id']}.mp4")
        assert (clip.codec, clip.pix_fmt, clip.width, clip.height, clip.fps) == (
            "h264", "yuv420p", width, height, fps), shot["id"]
        assert clip.frames == frames_of(shot, fps), shot["id"]

        with Image.open(project / "keyframes" / f"{shot['id']}.png") as image:
            assert image.format == "PNG"
            assert image.size == (width, height), shot["id"]
        sidecar = json.loads((project / "keyframes" / f"{shot['id']}.json").read_text())
        assert sidecar["backend"] == "sketch"
        assert sidecar["seed"] == shot["seed"]
        # Its context: earlier keyframes only, as the manifest recorded them (less the hashes).
        recorded = manifest["keyframes"][shot["id"]]["recipe"]["context"]
        assert sidecar["context"] == [{k: v for k, v in e.items() if k != "output"} for e in recorded]
        earlier = [s["id"] for s in shots[: shots.index(shot)]]
        assert all(c["shot"] in earlier and c["tokens"] > 0 for c in sidecar["context"]), sidecar["context"]
        assert re.fullmatch(r"[0-9a-f]{64}", sidecar["input_hash"])
        # The input hash is the hash of the recipe the manifest recorded for it.
        assert sidecar["input_hash"] == canonical_hash(manifest["keyframes"][shot["id"]]["recipe"])


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def rendered_heist(tmp_path_factory) -> Path:
    """The heist example, small, rendered once per test worker. Do not modify: copy."""
    parent = tmp_path_factory.mktemp("base")
    project = new_project(parent, "heist", "heist")
    data = render_json(project)
    assert data["rebuilt"]["film"] is True
    return project


@pytest.fixture
def heist(rendered_heist, tmp_path) -> Path:
    project = tmp_path / "heist"
    shutil.copytree(rendered_heist, project, symlinks=True)
    return project


# ---------------------------------------------------------------- full renders


def test_readme_demo_full_size_heist(tmp_path):
    """`cinema new heist --example heist && cd heist && cinema render`, at full size."""
    cinema("new", "heist", "--example", "heist", cwd=tmp_path)
    project = tmp_path / "heist"
    result = cinema("render", cwd=project)
    # It says which previz backends `auto` picked.
    assert "sketch" in result.stderr and "animatic" in result.stderr, result.stderr
    assert "film" in result.stdout

    shots = board(project)
    assert len(shots) == 14
    assert [s["transition"] for s in shots].count("crossfade") == 2
    check_outputs(project, 1024, 512, 24)
    # The documented arithmetic, spelled out for the shipped storyboard.
    total = sum(round(s["duration"] * 24) for s in shots)
    assert probe(project / "film.mp4").frames == total - 2 * round(0.5 * 24)

    # A second render finds everything current.
    assert render_json(project)["rebuilt"] == NOTHING


def test_lighthouse_renders_small(tmp_path):
    project = new_project(tmp_path, "lighthouse", "lighthouse")
    data = render_json(project)
    shot_ids = ids(project)
    assert len(shot_ids) == 12
    assert data["rebuilt"] == {"story": True, "keyframes": shot_ids, "shots": shot_ids, "film": True}
    assert data["film"] == str(project / "film.mp4")
    check_outputs(project, SMALL_W, SMALL_H, SMALL_FPS)


def test_copied_project_is_current(heist, rendered_heist):
    """A rendered project moved elsewhere needs nothing redone (nothing is path-keyed)."""
    assert render_json(heist)["rebuilt"] == NOTHING
    check_outputs(heist, SMALL_W, SMALL_H, SMALL_FPS)


# ---------------------------------------------------------------- what an edit redoes


def test_caption_edit_redoes_that_shot_then_nothing(heist):
    """s03's keyframe, the keyframes that remembered it (redrawn byte-identical by the
    sketch, so their videos stay), s03's video and the film."""
    before = artifact_files(heist)
    dependents = retrievers(heist, "s03")
    assert dependents, "nothing retrieved s03: the cascade is not exercised"
    cinema("shot", "s03", "--caption", "Mara <Mara> cracks the vault, close-up, sweat on her brow", cwd=heist)
    edited = next(s for s in board(heist) if s["id"] == "s03")
    assert edited["caption"] == "Mara <Mara> cracks the vault, close-up, sweat on her brow"
    assert edited["characters"] == ["Mara"]

    data = render_json(heist)
    assert data["rebuilt"] == {"story": False, "keyframes": ["s03", *dependents], "shots": ["s03"], "film": True}
    after = artifact_files(heist)
    assert rewritten(before, after) == expected_rewrites(data["rebuilt"])
    assert after["keyframes/s03.png"][2] != before["keyframes/s03.png"][2]  # the caption is drawn
    assert all(after[f"keyframes/{i}.png"][2] == before[f"keyframes/{i}.png"][2] for i in dependents)

    assert render_json(heist)["rebuilt"] == NOTHING
    assert artifact_files(heist) == after
    check_outputs(heist, SMALL_W, SMALL_H, SMALL_FPS)


RETRIEVERS = object()  # stands for the shots that retrieved the edited one, in order


@pytest.mark.parametrize(
    "shot_id, option, value, expect",
    [
        ("s05", "--duration", "3", {"keyframes": [], "shots": ["s05"], "film": True}),
        ("s04", "--transition", "crossfade", {"keyframes": [], "shots": [], "film": True}),
        # s02 has people in it: the seed moves them, so the panel and the shot change,
        # and the keyframes that remembered s02 (RETRIEVERS) are redrawn.
        ("s02", "--seed", "12345", {"keyframes": ["s02", RETRIEVERS], "shots": ["s02"], "film": True}),
        # s06 has nobody in it: the sketch's seed only places figures, so the keyframe
        # and shot are redrawn byte-identical and the film (keyed by content) stays.
        ("s06", "--seed", "12345", {"keyframes": ["s06"], "shots": ["s06"], "film": False}),
        ("s07", "--camera", "wide, static", {"keyframes": ["s07", RETRIEVERS], "shots": ["s07"], "film": True}),
    ],
    ids=["duration", "transition", "seed", "seed-empty-panel", "camera"],
)
def test_field_edit_redoes_exactly(heist, shot_id, option, value, expect):
    before = artifact_files(heist)
    frames_before = probe(heist / "film.mp4").frames
    keyframes = [k for i in expect["keyframes"] for k in (retrievers(heist, shot_id) if i is RETRIEVERS else [i])]
    shown = cinema_json("shot", shot_id, option, value, cwd=heist)
    assert shown["edited"] == [option.removeprefix("--")]

    data = render_json(heist)
    assert data["rebuilt"] == {"story": False, **expect, "keyframes": keyframes}
    assert rewritten(before, artifact_files(heist)) == expected_rewrites(data["rebuilt"])
    assert render_json(heist)["rebuilt"] == NOTHING
    check_outputs(heist, SMALL_W, SMALL_H, SMALL_FPS)

    frames_after = probe(heist / "film.mp4").frames
    if option == "--duration":  # 2.5 s -> 3 s at 12 fps
        assert frames_after == frames_before + 6
    elif option == "--transition":  # a new crossfade overlaps 0.5 s
        assert frames_after == frames_before - 6
    else:
        assert frames_after == frames_before


def test_hand_edit_of_storyboard_is_like_the_cli_edit(heist):
    before = artifact_files(heist)
    keyframes = ["s03", *retrievers(heist, "s03")]
    data = load(heist / "storyboard.yaml")
    data["shots"][2]["caption"] = "Mara <Mara> cracks the vault, close-up, sweat on her brow"
    dump(heist / "storyboard.yaml", data)

    status = cinema_json("status", cwd=heist)
    assert status["story"] == "done"
    rendered = render_json(heist)
    assert rendered["rebuilt"] == {"story": False, "keyframes": keyframes, "shots": ["s03"], "film": True}
    assert rewritten(before, artifact_files(heist)) == expected_rewrites(rendered["rebuilt"])
    assert render_json(heist)["rebuilt"] == NOTHING


def test_regen_redoes_that_shot_and_the_film_when_it_changed(heist):
    """`--regen` forces s05's keyframe and video. The film is keyed by the shots'
    content, so it is redone exactly when the regenerated video differs; the previz
    backends are reproducible, so here they come out byte-identical."""
    before = artifact_files(heist)
    shown = cinema_json("shot", "s05", "--regen", cwd=heist)
    after = artifact_files(heist)
    shot_changed = after["shots/s05.mp4"][2] != before["shots/s05.mp4"][2]
    assert shown["rebuilt"] == {"story": False, "keyframes": ["s05"], "shots": ["s05"], "film": shot_changed}
    assert rewritten(before, after) == expected_rewrites(shown["rebuilt"])
    assert after["keyframes/s05.png"][2] == before["keyframes/s05.png"][2]  # sketch is reproducible
    assert shown["status"]["keyframe"] == shown["status"]["shot"] == "done"
    status = cinema_json("status", cwd=heist)
    assert status["film"] == "done"
    assert render_json(heist)["rebuilt"] == NOTHING
    check_outputs(heist, SMALL_W, SMALL_H, SMALL_FPS)


def test_fps_edit_redoes_every_shot_and_the_film_but_no_keyframe(heist):
    all_ids = ids(heist)
    set_config(heist, fps=8)
    status = cinema_json("status", cwd=heist)
    assert {(r["keyframe"], r["shot"]) for r in status["shots"]} == {("done", "stale")}
    assert status["film"] == "stale"

    data = render_json(heist)
    assert data["rebuilt"] == {"story": False, "keyframes": [], "shots": all_ids, "film": True}
    check_outputs(heist, SMALL_W, SMALL_H, 8)
    assert render_json(heist)["rebuilt"] == NOTHING


def test_scene_time_edit_regenerates_story_and_redoes_that_scene(heist):
    """Keyframe recipes include the scene's location and time of day (and the offline
    storyboarder writes both into the captions), so exactly that scene's shots redo."""
    old_board = board(heist)
    script = load(heist / "script.yaml")
    street = next(s for s in script["scenes"] if s["id"] == "street")
    assert street["time"] == "night"
    street["time"] = "dusk"
    dump(heist / "script.yaml", script)
    street_ids = [s["id"] for s in old_board if s["scene"] == "street"]
    assert street_ids == ["s04", "s05"]

    before = artifact_files(heist)
    remembered = {i for street_id in street_ids for i in retrievers(heist, street_id)}
    keyframes = [i for i in ids(heist) if i in street_ids or i in remembered]  # in storyboard order
    data = render_json(heist)
    assert data["rebuilt"] == {"story": True, "keyframes": keyframes, "shots": street_ids, "film": True}
    assert rewritten(before, artifact_files(heist)) == expected_rewrites(data["rebuilt"])

    new_board = board(heist)
    for old, new in zip(old_board, new_board, strict=True):
        if old["scene"] == "street":
            assert "dusk" in new["caption"], new["caption"]
            assert {**new, "caption": old["caption"]} == old
        else:
            assert new == old
    assert render_json(heist)["rebuilt"] == NOTHING


# ---------------------------------------------------------------- status


STATUS_ROW_KEYS = {"id", "scene", "keyframe", "shot", "stale_because", "context", "edited"}


def test_status_before_and_after_render_and_after_an_edit(tmp_path, heist):
    fresh = new_project(tmp_path, "fresh", "heist")
    status = cinema_json("status", cwd=fresh)
    assert {"story", "shots", "film"} <= set(status)
    assert (status["story"], status["shots"], status["film"]) == ("missing", [], "missing")

    assert cinema_json("story", cwd=fresh)["rebuilt"]["story"] is True
    status = cinema_json("status", cwd=fresh)
    assert status["story"] == "done"
    assert [r["id"] for r in status["shots"]] == ids(fresh)
    assert [r["scene"] for r in status["shots"]] == [s["scene"] for s in board(fresh)]
    for row in status["shots"]:
        assert set(row) >= STATUS_ROW_KEYS
        assert (row["keyframe"], row["shot"]) == ("missing", "missing")
    assert status["film"] == "missing"

    status = cinema_json("status", cwd=heist)
    assert status["story"] == status["film"] == "done"
    for row in status["shots"]:
        assert set(row) >= STATUS_ROW_KEYS
        assert (row["keyframe"], row["shot"], row["stale_because"], row["edited"]) == ("done", "done", [], [])
        assert row["context"] == sidecar_of(heist, row["id"])["context"]
    dependents = stale_after(heist, "s03")
    assert set(retrievers(heist, "s03")) < set(dependents), "no transitive dependent: a weak test"

    cinema("shot", "s03", "--caption", "Mara <Mara> cracks the vault, close-up, sweat on her brow", cwd=heist)
    status = cinema_json("status", cwd=heist)
    rows = {r["id"]: r for r in status["shots"]}
    assert rows["s03"]["keyframe"] == "stale"
    assert "caption changed" in rows["s03"]["stale_because"]
    assert rows["s03"]["shot"] == "stale"
    assert rows["s03"]["edited"] == []
    assert status["film"] == "stale"
    for shot_id, row in rows.items():
        if shot_id in dependents:  # it remembered s03 (or a keyframe that did), to be redrawn
            assert (row["keyframe"], row["shot"]) == ("stale", "stale"), row
            assert any(re.fullmatch(r"context keyframe s\d+ is stale", r) for r in row["stale_because"]), row
        elif shot_id != "s03":
            assert (row["keyframe"], row["shot"], row["stale_because"]) == ("done", "done", []), row

    table = cinema("status", cwd=heist).stdout
    for shot_id in ids(heist):
        assert re.search(rf"\b{shot_id}\b", table), f"{shot_id} missing from:\n{table}"
    assert "stale" in table and "caption changed" in table


def test_hand_replaced_keyframe_is_kept_and_its_shot_redone(heist):
    colour = (200, 40, 90)
    Image.new("RGB", (SMALL_W, SMALL_H), colour).save(heist / "keyframes" / "s03.png")
    mine = (heist / "keyframes" / "s03.png").read_bytes()
    before = artifact_files(heist)
    dependents = retrievers(heist, "s03")  # they remembered the old s03: redrawn, byte-identical

    status = cinema_json("status", cwd=heist)
    rows = {r["id"]: r for r in status["shots"]}
    assert rows["s03"]["keyframe"] == "done"
    assert "keyframe" in rows["s03"]["edited"]
    assert rows["s03"]["shot"] == "stale"
    assert status["film"] == "stale"
    assert all("context keyframe s03 changed" in rows[i]["stale_because"] for i in dependents)
    assert all(rows[i]["keyframe"] == "stale" for i in stale_after(heist, "s03"))
    assert all((r["keyframe"], r["shot"]) == ("done", "done")
               for i, r in rows.items() if i not in ("s03", *stale_after(heist, "s03")))

    data = render_json(heist)
    assert data["rebuilt"] == {"story": False, "keyframes": dependents, "shots": ["s03"], "film": True}
    assert rewritten(before, artifact_files(heist)) == {"shots/s03.mp4", "film.mp4"} | expected_rewrites(
        {"keyframes": dependents, "shots": [], "film": False})
    assert (heist / "keyframes" / "s03.png").read_bytes() == mine
    # The shot was moved from the hand-made picture (a flat colour stays flat).
    frame = first_frame_rgb(heist / "shots" / "s03.mp4", SMALL_W, SMALL_H).reshape(-1, 3).mean(axis=0)
    assert np.abs(frame - colour).max() < 12, frame

    status = cinema_json("status", cwd=heist)
    row = next(r for r in status["shots"] if r["id"] == "s03")
    assert (row["keyframe"], row["shot"], row["edited"]) == ("done", "done", ["keyframe"])
    assert status["film"] == "done"
    table = cinema("status", cwd=heist).stdout
    assert re.search(r"s03 .*done \(edited\)", table), table
    assert render_json(heist)["rebuilt"] == NOTHING


# ---------------------------------------------------------------- the storyboard is the user's


def test_hand_edited_storyboard_survives_a_script_change_until_forced(heist):
    data = load(heist / "storyboard.yaml")
    locked = data["shots"][1]  # s02
    locked["caption"] = "<Dex> jabs a greasy finger at the blueprint. The garage, night."
    locked["characters"] = ["Dex"]
    locked["locked"] = True
    data["shots"][3]["caption"] = "A hand-written caption nobody locked. The street, night."  # s04
    dump(heist / "storyboard.yaml", data)
    hand_text = (heist / "storyboard.yaml").read_text()

    script = load(heist / "script.yaml")
    beats = [b for scene in script["scenes"] for b in scene["beats"]]
    beats[1]["text"] = "<Dex> rolls up the blueprint while <Theo> watches"
    beats[3]["text"] = "a battered green sedan crawls through the rain past a marble bank facade"
    dump(heist / "script.yaml", script)

    result = cinema("render", cwd=heist)
    assert "cinema story --force" in result.stderr, result.stderr
    assert (heist / "storyboard.yaml").read_text() == hand_text
    data_json = render_json(heist)
    assert data_json["rebuilt"]["story"] is False
    assert any("cinema story --force" in n for n in data_json["notices"])

    forced = cinema_json("story", "--force", cwd=heist)
    assert forced["rebuilt"]["story"] is True
    shots = {s["id"]: s for s in board(heist)}
    assert shots["s02"] == locked  # unchanged, lock and all
    assert "battered green sedan" in shots["s04"]["caption"]
    assert not shots["s04"].get("locked")
    assert len(shots) == 14

    # Regenerated and current again: no notice, nothing protected any more.
    data_json = render_json(heist)
    assert not any("story --force" in n for n in data_json["notices"])
    assert data_json["rebuilt"]["story"] is False
    assert "s04" in data_json["rebuilt"]["keyframes"]
    check_outputs(heist, SMALL_W, SMALL_H, SMALL_FPS)


# ---------------------------------------------------------------- assembly


def test_crossfades_shorten_the_film_by_their_overlap(heist):
    data = load(heist / "storyboard.yaml")
    shots = {s["id"]: s for s in data["shots"]}
    for shot in data["shots"]:
        shot["transition"] = "cut"
    shots["s05"]["transition"] = "crossfade"  # a lone crossfade: 6 frames overlap
    shots["s08"]["duration"] = 0.5            # 6 frames: the fade is clamped to 3
    shots["s08"]["transition"] = "crossfade"
    shots["s09"]["transition"] = "continuous"  # a cut at assembly
    shots["s10"]["transition"] = "crossfade"  # a chain: s09 -> s10 -> s11
    shots["s11"]["transition"] = "crossfade"
    dump(heist / "storyboard.yaml", data)

    render_json(heist)
    total = sum(frames_of(s, SMALL_FPS) for s in data["shots"])
    assert frames_of(shots["s08"], SMALL_FPS) == 6
    overlap = 6 + 3 + 6 + 6
    assert expected_film_frames(data["shots"], SMALL_FPS) == total - overlap
    assert probe(heist / "film.mp4").frames == total - overlap
    check_outputs(heist, SMALL_W, SMALL_H, SMALL_FPS)

    # The pictures line up: where each shot starts in the film, and the blend.
    film = decode(heist / "film.mp4", SMALL_W, SMALL_H)
    clips = {i: decode(heist / "shots" / f"{i}.mp4", SMALL_W, SMALL_H) for i in shots}
    start, starts, previous = 0, {}, None
    for shot in data["shots"]:
        n = frames_of(shot, SMALL_FPS)
        if previous is not None and shot["transition"] == "crossfade":
            start -= min(6, previous // 2, n // 2)
        starts[shot["id"]] = start
        start += n
        previous = n

    def diff(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a - b).mean())

    order = data["shots"]
    for index, shot in enumerate(order):
        clip = clips[shot["id"]]
        assert len(clip) == frames_of(shot, SMALL_FPS)
        if shot["transition"] != "crossfade":  # its first frame is shown as is
            assert diff(film[starts[shot["id"]]], clip[0]) < 3, shot["id"]
        if index + 1 == len(order) or order[index + 1]["transition"] != "crossfade":  # and its last
            assert diff(film[starts[shot["id"]] + len(clip) - 1], clip[-1]) < 3, shot["id"]
    # Halfway through the s04 -> s05 crossfade the picture is a mix of both shots.
    middle = starts["s05"] + 3
    a, b = clips["s04"][len(clips["s04"]) - 3], clips["s05"][3]
    assert diff(a, b) > 10
    assert diff(film[middle], (a + b) / 2) < min(diff(film[middle], a), diff(film[middle], b)) / 3


def test_all_cuts_film_is_the_sum_of_its_shots(heist):
    data = load(heist / "storyboard.yaml")
    for shot in data["shots"]:
        shot["transition"] = "cut"
    dump(heist / "storyboard.yaml", data)
    assert render_json(heist)["rebuilt"] == {"story": False, "keyframes": [], "shots": [], "film": True}
    assert probe(heist / "film.mp4").frames == sum(frames_of(s, SMALL_FPS) for s in data["shots"])


# ---------------------------------------------------------------- scripted use


def test_render_several_projects_keeps_going_past_a_broken_one(tmp_path):
    a = new_project(tmp_path, "a", "heist")
    b = new_project(tmp_path, "b", "lighthouse")
    c = new_project(tmp_path, "c", None)
    (b / "script.yaml").write_text("title: Broken\nscenes: [\n  - id: x\n    beats: [oops\n", encoding="utf-8")
    b_before = sorted(str(p.relative_to(b)) for p in b.rglob("*"))

    result = cinema("render", "-p", str(a), "-p", str(b), "-p", str(c), "--json", cwd=tmp_path, rc=None)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert [line["project"] for line in lines] == [str(a), str(b), str(c)], result.stdout
    for ok in (lines[0], lines[2]):
        assert ok["ok"] is True
        assert {"project", "ok", "seconds", "rebuilt"} <= set(ok)
        assert {"keyframes", "shots", "film"} <= set(ok["rebuilt"])
        assert isinstance(ok["seconds"], (int, float)) and ok["seconds"] >= 0
        assert ok["rebuilt"]["film"] is True and ok["rebuilt"]["keyframes"]
    bad = lines[1]
    assert bad["ok"] is False
    assert "script.yaml" in bad["error"]
    assert bad["exit_code"] == 2
    assert result.returncode == 2

    for project in (a, c):
        assert (project / "film.mp4").is_file()
        check_outputs(project, SMALL_W, SMALL_H, SMALL_FPS)
    # Bad input changes nothing on disk.
    assert sorted(str(p.relative_to(b)) for p in b.rglob("*")) == b_before


# ---------------------------------------------------------------- entry points


def test_python_dash_m_help():
    result = subprocess.run([sys.executable, "-m", "cinema_cli", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout and "render" in result.stdout


def test_cinema_help_lists_the_commands(tmp_path):
    out = cinema("--help", cwd=tmp_path).stdout
    for command in ("new", "examples", "story", "plan", "render", "assemble", "status", "shot", "bench"):
        assert re.search(rf"^\W*{command}\b", out, re.MULTILINE), f"{command} not listed:\n{out}"
    listed = [line.split()[0] for line in cinema("examples", cwd=tmp_path).stdout.splitlines()
              if line.strip() and not line.startswith((" ", "start one"))]
    assert listed == ["heist", "lighthouse"]  # each with its title and logline (test_newcomer)
