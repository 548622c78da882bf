"""Safety of the project on disk: one writer at a time, a killed render resumes, a
failed render leaves what it finished valid and recorded.

Real processes (the installed `cinema` console script, a second Python process holding
the lock, SIGKILL), real ffmpeg, real files; nothing is mocked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from cinema_cli.assemble.probe import probe
from cinema_cli.project.manifest import Manifest, Record
from conftest import manifest_records

SHOT_IDS = [f"s{i:02d}" for i in range(1, 15)]  # the heist example has 14 shots
TEMP_NAME = re.compile(r"\.\d+\.[0-9a-f]{8}\.")  # files.temp_path_for: STEM.PID.HEX.SUFFIX


# ---------------------------------------------------------------- helpers


def cinema_command() -> list[str]:
    script = Path(sys.executable).parent / "cinema"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "cinema_cli"]


def cinema(args: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*cinema_command(), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(root: Path) -> dict[str, tuple]:
    entries: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            st = path.lstat()
            rel = str(path.relative_to(root))
            if path.is_dir():
                entries[rel] = ("dir", st.st_mtime_ns)
            else:
                entries[rel] = ("file", st.st_size, st.st_mtime_ns, sha256(path))
    return entries


def changed(before: dict, after: dict) -> list[str]:
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def new_project(parent: Path, width: int, height: int, fps: int, name: str = "heist") -> Path:
    proc = cinema(["new", name, "--example", "heist"], parent)
    assert proc.returncode == 0, proc.stderr
    root = parent / name
    config = root / "cinema.yaml"
    text = config.read_text()
    text = re.sub(r"(?m)^resolution:.*$", f"resolution: {{width: {width}, height: {height}}}", text)
    text = re.sub(r"(?m)^fps:.*$", f"fps: {fps}", text)
    config.write_text(text)
    return root


def no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def manifest(root: Path) -> dict:
    return manifest_records(root)


def rot(root: Path, stage: str, key: str, path: Path, data: bytes) -> None:
    """Damage a recorded artifact as bit rot would: its bytes change after the manifest
    recorded them, and the record matches. (A changed file the manifest does not match is
    a hand edit, or, when it no longer decodes, damaged and simply redone: test_probe.py.)"""
    path.write_bytes(data)
    records = Manifest(root / ".cinema" / "manifest", root / ".cinema" / "tmp")
    record = records.get(stage, key)
    records.put(stage, key, Record(record.recipe, hashlib.sha256(data).hexdigest()))


def recorded(root: Path, stage: str, path_of) -> set[str]:
    """Artifacts the manifest records as complete whose file on disk is that output."""
    done = set()
    for key, record in manifest(root).get(stage, {}).items():
        path = path_of(key)
        if path.is_file() and sha256(path) == record["output"]:
            done.add(key)
    return done


def board(root: Path) -> list[dict]:
    return yaml.safe_load((root / "storyboard.yaml").read_text())["shots"]


def settings(root: Path) -> dict:
    return yaml.safe_load((root / "cinema.yaml").read_text())


def expected_frames(root: Path) -> dict[str, int]:
    fps = settings(root)["fps"]
    return {s["id"]: max(1, round(s["duration"] * fps)) for s in board(root)}


def expected_film_frames(root: Path) -> int:
    """Sum of the shots' frames minus each crossfade's overlap: the configured crossfade
    length, clamped to half of each of the two clips it joins (0 = a cut)."""
    config = settings(root)
    fps = config["fps"]
    crossfade = max(1, round(config.get("assemble", {}).get("crossfade_seconds", 0.5) * fps))
    shots = board(root)
    frames = [max(1, round(s["duration"] * fps)) for s in shots]
    total = sum(frames)
    for i in range(1, len(shots)):
        if shots[i]["transition"] == "crossfade":
            total -= max(0, min(crossfade, frames[i - 1] // 2, frames[i] // 2))
    return total


def assert_visible_files_complete(root: Path, *, film_may_exist: bool = True) -> None:
    """Every file the user can see is whole, and nothing half-written lies outside
    .cinema/tmp/: keyframes load, shots probe with their exact frame count, the film
    probes with the film's, JSON and YAML parse."""
    frames = expected_frames(root)
    config = settings(root)
    size = (config["resolution"]["width"], config["resolution"]["height"])
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_dir() or rel.parts[0] == ".cinema":
            continue
        assert not TEMP_NAME.search(path.name), f"stray temporary file {rel}"
        if rel.parts[0] in ("keyframes", "shots"):
            assert len(rel.parts) == 2 and path.stem in frames, f"unexpected file {rel}"
            expected = (".png", ".json") if rel.parts[0] == "keyframes" else (".mp4",)
            assert path.suffix in expected, f"unexpected file {rel}"
        if path.suffix == ".png":
            with Image.open(path) as image:
                image.load()
                if rel.parts[0] == "keyframes":
                    assert image.size == size, rel
        elif path.suffix == ".json":
            data = json.loads(path.read_text())
            if rel.parts[0] == "keyframes":
                assert data["shot"] == path.stem
        elif path.suffix in (".yaml", ".yml"):
            yaml.safe_load(path.read_text())
        elif path.suffix == ".mp4":
            info = probe(path)
            if rel.parts[0] == "shots":
                assert info.frames == frames[path.stem], (rel, info.frames, frames[path.stem])
                assert (info.width, info.height) == size
            elif rel == Path("film.mp4"):
                assert film_may_exist, "film.mp4 exists"
                assert info.frames == expected_film_frames(root)
    # the machine state stays valid JSON whatever happened
    for record in (root / ".cinema" / "manifest").glob("*/*.json"):
        json.loads(record.read_text())


def start_render(root: Path, log: Path) -> subprocess.Popen:
    # its own session: what it leaves running (an ffmpeg child) can be cleaned up by group
    return subprocess.Popen([*cinema_command(), "render"], cwd=root, stdin=subprocess.DEVNULL,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def kill_when(proc: subprocess.Popen, ready, log: Path, timeout: float = 60) -> None:
    """Poll until `ready()`, then SIGKILL the render (the Python process only)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the render ended before it could be killed:\n{log.read_text()}"
        assert time.monotonic() < deadline, "timed out waiting for the render"
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def reap_group(proc: subprocess.Popen) -> None:
    """Stop what the killed render left running (an orphaned ffmpeg) in its own group."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def render_json(root: Path) -> dict:
    proc = cinema(["render", "--json"], root)
    no_traceback(proc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["ok"] is True, data
    return data


def assert_all_done(root: Path) -> None:
    proc = cinema(["status", "--json"], root)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["story"] == "done" and status["film"] == "done", status
    for row in status["shots"]:
        assert (row["keyframe"], row["shot"]) == ("done", "done"), row
        assert row["edited"] == [], row


# ---------------------------------------------------------------- two writers

HOLDER = """
import sys, time
from pathlib import Path
from cinema_cli.project.project import Project
lock = Project.open(Path(sys.argv[1])).lock()
lock.acquire()
print("locked", flush=True)
time.sleep(600)
"""


@pytest.fixture
def lock_holder():
    procs: list[subprocess.Popen] = []

    def start(root: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(root)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        line = proc.stdout.readline()  # blocks until the lock is held (or the holder died)
        if line.strip() != "locked":
            proc.kill()
            pytest.fail(f"the lock holder did not start: {line!r} {proc.communicate()[1]}")
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_second_writer_is_refused_until_the_holder_dies(tmp_path, lock_holder):
    root = new_project(tmp_path, 128, 64, 8)
    assert cinema(["story"], root).returncode == 0
    holder = lock_holder(root)
    lock_path = root / ".cinema" / "lock"
    before = snapshot(root)

    for args in (["render"], ["shot", "s01", "--caption", "<Mara> waits by the door"]):
        proc = cinema(args, root)
        no_traceback(proc)
        assert proc.returncode == 1, (args, proc.returncode, proc.stderr)
        assert str(lock_path) in proc.stderr, proc.stderr
        assert f"pid {holder.pid}" in proc.stderr, proc.stderr
        assert changed(before, snapshot(root)) == [], args

    proc = cinema(["render", "--json"], root)
    assert proc.returncode == 1
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["ok"] is False and data["exit_code"] == 1 and f"pid {holder.pid}" in data["error"]

    # reading is not writing: status works while another process writes
    status = cinema(["status", "--json"], root)
    assert status.returncode == 0, status.stderr
    assert changed(before, snapshot(root)) == []

    # SIGKILL: no cleanup runs in the holder; the kernel drops its flock
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    data = render_json(root)
    assert data["rebuilt"]["film"] is True
    assert sorted(data["rebuilt"]["shots"]) == SHOT_IDS
    assert probe(root / "film.mp4").frames == expected_film_frames(root)


def test_two_renders_at_once_one_wins(tmp_path):
    """Two real `cinema render` processes started together on one project: at most one
    builds, a refused one exits 1 naming the lock, and the project ends up complete."""
    root = new_project(tmp_path, 128, 64, 8)
    procs = [subprocess.Popen([*cinema_command(), "render", "--json"], cwd=root, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=180), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes in ([0, 0], [0, 1]), results
    for code, out, err in results:
        assert "Traceback" not in out + err
        if code == 1:
            data = json.loads(out.strip().splitlines()[-1])
            assert data["exit_code"] == 1 and str(root / ".cinema" / "lock") in data["error"], data
    assert_visible_files_complete(root)
    assert_all_done(root)


# ---------------------------------------------------------------- kill and resume


@pytest.fixture
def render_proc():
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reap_group(proc)


def test_killed_during_shots_resumes_where_it_stopped(tmp_path, render_proc):
    root = new_project(tmp_path, 256, 128, 12)
    shots = root / "shots"
    proc = start_render(root, tmp_path / "render.log")
    render_proc.append(proc)
    kill_when(proc, lambda: len(list(shots.glob("s*.mp4"))) >= 3, tmp_path / "render.log")
    reap_group(proc)

    # right after the kill: what is recorded, what is visible
    done_shots = recorded(root, "shots", lambda k: root / "shots" / f"{k}.mp4")
    done_keyframes = recorded(root, "keyframes", lambda k: root / "keyframes" / f"{k}.png")
    visible = sorted(p.stem for p in shots.glob("*.mp4"))
    assert done_keyframes == set(SHOT_IDS), "the shot stage starts after every keyframe is recorded"
    assert 0 < len(done_shots) < len(SHOT_IDS), (done_shots, "kill landed outside the shot stage")
    assert done_shots <= set(visible)
    assert not (root / "film.mp4").exists()
    assert_visible_files_complete(root, film_may_exist=False)

    data = render_json(root)
    rebuilt = data["rebuilt"]
    assert rebuilt["story"] is False
    assert rebuilt["keyframes"] == []
    assert not set(rebuilt["shots"]) & done_shots, f"redid recorded shots {set(rebuilt['shots']) & done_shots}"
    assert sorted(rebuilt["shots"]) == sorted(set(SHOT_IDS) - done_shots)
    assert rebuilt["film"] is True

    info = probe(root / "film.mp4")
    assert info.frames == expected_film_frames(root)
    assert (info.width, info.height) == (256, 128)
    for key in rebuilt["shots"]:
        assert probe(shots / f"{key}.mp4").frames == expected_frames(root)[key]
    assert_all_done(root)
    assert list((root / ".cinema" / "tmp").iterdir()) == []


def test_killed_during_keyframes_resumes_where_it_stopped(tmp_path, render_proc):
    root = new_project(tmp_path, 256, 128, 12)
    keyframes = root / "keyframes"
    proc = start_render(root, tmp_path / "render.log")
    render_proc.append(proc)
    kill_when(proc, lambda: len(list(keyframes.glob("s*.png"))) >= 3, tmp_path / "render.log")
    reap_group(proc)

    done_keyframes = recorded(root, "keyframes", lambda k: root / "keyframes" / f"{k}.png")
    assert 0 < len(done_keyframes) < len(SHOT_IDS), (done_keyframes, "kill landed outside the keyframe stage")
    assert list((root / "shots").glob("*.mp4")) == []
    assert_visible_files_complete(root, film_may_exist=False)
    # a recorded keyframe's sidecar is there and describes it
    for key in done_keyframes:
        sidecar = json.loads((keyframes / f"{key}.json").read_text())
        assert sidecar["shot"] == key and sidecar["size"] == [128, 256]

    data = render_json(root)
    rebuilt = data["rebuilt"]
    assert rebuilt["story"] is False
    assert not set(rebuilt["keyframes"]) & done_keyframes
    assert sorted(rebuilt["keyframes"]) == sorted(set(SHOT_IDS) - done_keyframes)
    assert sorted(rebuilt["shots"]) == SHOT_IDS and rebuilt["film"] is True
    assert probe(root / "film.mp4").frames == expected_film_frames(root)
    for key in rebuilt["keyframes"]:
        with Image.open(keyframes / f"{key}.png") as image:
            image.load()
    assert_all_done(root)


def test_kill_resume_gives_the_same_film_as_an_uninterrupted_render(tmp_path, render_proc):
    """Resuming is not just 'some film': every artifact is byte-identical to a clean run."""
    clean = new_project(tmp_path, 128, 64, 8, name="clean")
    assert cinema(["render"], clean).returncode == 0
    root = new_project(tmp_path, 128, 64, 8, name="killed")
    proc = start_render(root, tmp_path / "render.log")
    render_proc.append(proc)
    kill_when(proc, lambda: len(list((root / "shots").glob("s*.mp4"))) >= 2, tmp_path / "render.log")
    reap_group(proc)
    render_json(root)
    for rel in ["storyboard.yaml", "film.mp4", *(f"keyframes/{s}.png" for s in SHOT_IDS),
                *(f"shots/{s}.mp4" for s in SHOT_IDS)]:
        assert sha256(root / rel) == sha256(clean / rel), rel


# ---------------------------------------------------------------- a render that fails part-way


def test_unreadable_keyframe_fails_the_shot_stage_cleanly(tmp_path):
    root = new_project(tmp_path, 128, 64, 8)
    assert cinema(["plan"], root).returncode == 0
    broken = root / "keyframes" / "s05.png"
    rot(root, "keyframes", "s05", broken, b"this is not a PNG\n" * 20)

    proc = cinema(["render"], root)
    no_traceback(proc)
    assert proc.returncode == 1, proc.stderr
    message = proc.stderr[proc.stderr.index("error: "):]
    assert "s05.png" in message and "keyframe" in message, message

    # the shots before it were built, are whole, and recorded; nothing after it exists
    done = recorded(root, "shots", lambda k: root / "shots" / f"{k}.mp4")
    assert done == {"s01", "s02", "s03", "s04"}
    assert sorted(p.stem for p in (root / "shots").glob("*")) == ["s01", "s02", "s03", "s04"]
    assert not (root / "film.mp4").exists()
    broken.unlink()  # the one file we damaged ourselves; everything else must be whole
    assert_visible_files_complete(root, film_may_exist=False)
    assert list((root / ".cinema" / "tmp").iterdir()) == []

    # redraw the keyframe: the render finishes without redoing s01-s04
    data = render_json(root)
    assert data["rebuilt"]["keyframes"] == ["s05"]
    assert sorted(data["rebuilt"]["shots"]) == SHOT_IDS[4:]
    assert probe(root / "film.mp4").frames == expected_film_frames(root)


@pytest.mark.parametrize("shot,had_film,what", [
    ("s14", True, "concatenating"),   # joined by a cut: the concat step fails
    ("s12", False, "crossfading"),    # inside a crossfade run: the xfade encode fails
])
def test_corrupt_shot_fails_assembly_cleanly(tmp_path, shot, had_film, what):
    root = new_project(tmp_path, 128, 64, 8)
    first = render_json(root)
    assert first["rebuilt"]["film"] is True
    film = root / "film.mp4"
    film_hash = sha256(film)
    if not had_film:
        film.unlink()
    rot(root, "shots", shot, root / "shots" / f"{shot}.mp4", os.urandom(3000))
    records_before = manifest(root)

    proc = cinema(["render"], root)
    no_traceback(proc)
    assert proc.returncode == 1, proc.stderr
    message = proc.stderr[proc.stderr.index("error: "):]
    assert f"ffmpeg failed while {what}" in message, message
    assert f"{shot}.mp4" in message, message
    assert "Invalid data" in message or "moov atom not found" in message, "ffmpeg's stderr tail is missing"

    # no partial film: the old one untouched, or none
    if had_film:
        assert sha256(film) == film_hash
    else:
        assert not film.exists()
    # everything else still whole and recorded as it was
    after = manifest(root)
    assert after == records_before
    for key in SHOT_IDS:
        if key != shot:
            assert sha256(root / "shots" / f"{key}.mp4") == after["shots"][key]["output"]
    (root / "shots" / f"{shot}.mp4").unlink()
    assert_visible_files_complete(root, film_may_exist=had_film)
    assert list((root / ".cinema" / "tmp").iterdir()) == []

    # the shot redone (the same bytes as before: it is deterministic), so the film is
    # redone only when there was none
    data = render_json(root)
    assert data["rebuilt"]["shots"] == [shot]
    assert data["rebuilt"]["film"] is (not had_film)
    assert sha256(film) == film_hash
    assert probe(film).frames == expected_film_frames(root)
