"""`cinema direct`: the film grows shot by shot, forward in time.

Real sessions of the installed `cinema` console script on the previz path (sketch +
animatic), real ffmpeg, real signals (SIGINT to the process group as a terminal's
Ctrl-C sends it, SIGKILL), files checked by decoding them. The causal branch runs
in process with a test double of the `CausalShotBackend` contract (the real causal
model is tested with its backend).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from cinema_cli.assemble.probe import probe
from cinema_cli.cli.app import app
from cinema_cli.direct.session import DirectingSession
from cinema_cli.pipeline import Pipeline
from cinema_cli.pipeline.state import SilentReporter
from cinema_cli.project.create import create_project
from cinema_cli.project.project import Project
from cinema_cli.video.animatic import AnimaticShots
from cinema_cli.video.base import shot_backends
from cinema_cli.video.causal import RoutedFrame, Routing
from finishing_support import CINEMA

FPS = 8
SHORT = 0.5  # seconds: 4 frames a shot


# ---------------------------------------------------------------- helpers


def new_project(parent: Path, video: str | None = None) -> Path:
    root = create_project(parent / "film")
    config = root / "cinema.yaml"
    text = re.sub(r"(?m)^resolution:.*$", "resolution: {width: 128, height: 64}", config.read_text())
    text = re.sub(r"(?m)^fps:.*$", f"fps: {FPS}", text)
    if video:
        text = re.sub(r"(?m)^video:\n  backend: auto$", f"video:\n  backend: {video}", text)
    config.write_text(text)
    return root


def direct(root: Path, lines: list[str], *args: str, rc: int) -> list[dict]:
    """A scripted session (`--from FILE --json`); its events."""
    prompts = root.parent / f"prompts-{time.monotonic_ns()}.txt"
    prompts.write_text("\n".join(lines) + "\n")
    proc = subprocess.run([CINEMA, "direct", "--from", str(prompts), "--json", "--seconds", str(SHORT), *args],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == rc, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def start(root: Path, *args: str) -> subprocess.Popen:
    """A session reading its lines from a pipe, in its own process group."""
    return subprocess.Popen([CINEMA, "direct", "--json", *args], cwd=root, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def next_event(proc: subprocess.Popen, *kinds: str) -> dict:
    while True:
        line = proc.stdout.readline()
        assert line, f"the session ended early: {proc.stderr.read()}"
        event = json.loads(line)
        if event["event"] in kinds:
            return event


def say(proc: subprocess.Popen, line: str) -> dict:
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    return next_event(proc, "shot", "undo", "error", "discarded")


def board(root: Path) -> list[dict]:
    return yaml.safe_load((root / "storyboard.yaml").read_text())["shots"]


def frames(shot: dict) -> int:
    return max(1, round(shot["duration"] * FPS))


def playlist(root: Path) -> tuple[list[tuple[str, float]], bool]:
    """The (segment, seconds) stream/film.m3u8 lists, and whether it is ended."""
    entries, seconds, ended = [], None, False
    for line in (root / "stream" / "film.m3u8").read_text().splitlines():
        if line.startswith("#EXTINF:"):
            seconds = float(line.removeprefix("#EXTINF:").split(",")[0])
        elif line == "#EXT-X-ENDLIST":
            ended = True
        elif line and not line.startswith("#"):
            entries.append((line, seconds))
    return entries, ended


def check_film_and_stream(root: Path, ids: list[str]) -> None:
    """The stream lists one segment per shot, in order, each decoding to the shot's frames,
    the playlist as a whole decodes to the film, and film.mp4 is whole."""
    shots = board(root)
    assert [s["id"] for s in shots] == ids
    segments, _ = playlist(root)
    assert [name.split("-")[0] for name, _ in segments] == ids
    for (name, seconds), shot in zip(segments, shots):
        info = probe(root / "stream" / name)
        assert info.frames == frames(shot) and seconds == pytest.approx(frames(shot) / FPS), name
    total = sum(frames(s) for s in shots)
    # A player follows an open EVENT playlist as live; decode what it lists so far.
    closed = root / "stream" / "check.m3u8"
    text = (root / "stream" / "film.m3u8").read_text()
    closed.write_text(text if text.endswith("#EXT-X-ENDLIST\n") else text + "#EXT-X-ENDLIST\n")
    try:
        assert probe(closed).frames == total
    finally:
        closed.unlink()
    assert probe(root / "film.mp4").frames == total


def files_of(root: Path, shot_id: str) -> dict[str, str]:
    """sha256 of everything a shot put on disk: keyframe, sidecar, video, stream segment."""
    paths = [root / "keyframes" / f"{shot_id}.png", root / "keyframes" / f"{shot_id}.json",
             root / "shots" / f"{shot_id}.mp4", *(root / "stream").glob(f"{shot_id}-*.ts")]
    assert all(p.is_file() for p in paths) and len(paths) == 4, paths
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def gone(root: Path, shot_id: str) -> bool:
    leftovers = [*(root / "keyframes").glob(f"{shot_id}.*"), *(root / "shots").glob(f"{shot_id}.*"),
                 *(root / "stream").glob(f"{shot_id}-*"), *(root / ".cinema" / "manifest").glob(f"*/{shot_id}.json")]
    return not leftovers


# ---------------------------------------------------------------- a session


def test_a_directed_film_grows_shot_by_shot_and_a_later_session_continues_it(tmp_path):
    root = new_project(tmp_path)
    proc = start(root, "--seconds", str(SHORT))
    try:
        session = next_event(proc, "session")
        assert session["shots"] == 0 and session["causal"] is False

        first = say(proc, "<June> walks along the tideline, wide")
        assert (first["event"], first["id"], first["camera"]) == ("shot", "d001", "wide, static")
        check_film_and_stream(root, ["d001"])  # watchable while the session runs
        kept = files_of(root, "d001")

        # A second writer is refused, naming the session that holds the project.
        other = subprocess.run([CINEMA, "direct", "--json", "--from", "-"], cwd=root, input="<June> waits\n",
                               capture_output=True, text=True, timeout=60)
        assert other.returncode == 1
        assert f"pid {proc.pid}" in json.loads(other.stdout.splitlines()[-1])["error"]

        second = say(proc, "cut: close-up, <June> lifts a green bottle from the foam")
        assert (second["id"], second["camera"], second["transition"]) == ("d002", "close-up, static", "cut")
        assert [s["shot_id"] for s in second["memory"]["slots"]] == ["d001"]  # retrieved from the past
        check_film_and_stream(root, ["d001", "d002"])
        assert files_of(root, "d001") == kept
        kept.update(files_of(root, "d002"))

        third = say(proc, "continue: she unrolls the note")
        assert (third["id"], third["transition"], third["camera"]) == ("d003", "continuous", "close-up, static")
        check_film_and_stream(root, ["d001", "d002", "d003"])

        # Bad lines are reported, and the session goes on.
        for line, words in (("<Bob> waves", "<Bob> is not in the cast"), ("", "empty line"),
                            ("!!! ???", "no words"), ("cut:", "needs a prompt"), ("<June waves", "stray <")):
            error = say(proc, line)
            assert error["event"] == "error" and error["exit_code"] == 2 and words in error["error"], error
        assert [s["id"] for s in board(root)] == ["d001", "d002", "d003"]

        undo = say(proc, "undo")
        assert undo == {"event": "undo", "id": "d003", "shots": 2, "line": undo["line"]}
        assert gone(root, "d003")
        check_film_and_stream(root, ["d001", "d002"])
        again = say(proc, "undo")  # only the last shot, once: the past is fixed
        assert again["event"] == "error" and "only the last shot" in again["error"]

        proc.stdin.close()
        end = next_event(proc, "end")
        assert end["made"] == ["d001", "d002"]
        assert proc.wait(timeout=60) == 2  # some lines were bad input
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert playlist(root)[1] is True  # ended: the player knows the film is complete
    assert all(s["directed"] for s in board(root))

    # The next session continues from the last shot; the past stays byte-identical.
    events = direct(root, ["undo", "continue: <June> smiles at the sea"], rc=2)
    assert "made before this session" in next(e for e in events if e["event"] == "error")["error"]
    shot = next(e for e in events if e["event"] == "shot")
    assert (shot["id"], shot["transition"]) == ("d003", "continuous")
    check_film_and_stream(root, ["d001", "d002", "d003"])
    assert {**files_of(root, "d001"), **files_of(root, "d002")} == kept

    # `cinema shot` shows the memory the shot was made with.
    shown = json.loads(subprocess.run([CINEMA, "shot", "d003", "--json"], cwd=root, capture_output=True, text=True,
                                      check=True).stdout)
    assert shown["shot"]["directed"] is True
    assert shown["memory"]["policy"] == "retrieval" and shown["memory"]["slots"] == shot["memory"]["slots"]
    assert shown["memory"]["slots"] and {s["shot_id"] for s in shown["memory"]["slots"]} <= {"d001", "d002"}

    # The storyboarder never replaces directed shots; render finds nothing to redo.
    storyboard = (root / "storyboard.yaml").read_bytes()
    story = subprocess.run([CINEMA, "story", "--force"], cwd=root, capture_output=True, text=True)
    assert story.returncode == 2 and "made by `cinema direct`" in story.stderr
    assert (root / "storyboard.yaml").read_bytes() == storyboard
    render = subprocess.run([CINEMA, "render", "--json"], cwd=root, capture_output=True, text=True, check=True)
    assert json.loads(render.stdout)["rebuilt"] == {"story": False, "keyframes": [], "shots": [], "film": False}
    assert {**files_of(root, "d001"), **files_of(root, "d002")} == kept


# ---------------------------------------------------------------- interrupted


def _wait_mid_shot(proc: subprocess.Popen, root: Path, shot_id: str) -> None:
    """Until the shot's video is being encoded (its temporary file exists)."""
    deadline = time.monotonic() + 60
    while not list((root / ".cinema" / "tmp").glob(f"{shot_id}.*.mp4")):
        assert proc.poll() is None, f"the session ended before the signal: {proc.communicate()}"
        assert time.monotonic() < deadline, "the shot never started"
        time.sleep(0.002)


def test_ctrl_c_and_kill_9_mid_shot_leave_a_whole_film_and_the_next_session_resumes(tmp_path):
    root = new_project(tmp_path)
    direct(root, ["<June> walks along the tideline, wide"], rc=0)
    kept = files_of(root, "d001")
    storyboard = (root / "storyboard.yaml").read_bytes()
    long_shot = root.parent / "long.txt"
    long_shot.write_text("<June> runs along the shore, pan\n")

    # Ctrl-C, as a terminal sends it (to the whole foreground group, ffmpeg included).
    proc = subprocess.Popen([CINEMA, "direct", "--from", str(long_shot), "--json", "--seconds", "120"], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_mid_shot(proc, root, "d002")
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    events = [json.loads(line) for line in out.splitlines()]
    assert {"event": "discarded", "shot": "d002"}.items() <= next(e for e in events if e["event"] == "discarded").items()
    assert (root / "storyboard.yaml").read_bytes() == storyboard
    assert gone(root, "d002") and not (root / ".cinema" / "direct" / "pending.json").exists()
    check_film_and_stream(root, ["d001"])
    assert playlist(root)[1] is True

    # kill -9: nothing runs in the session; the next one repairs.
    proc = subprocess.Popen([CINEMA, "direct", "--from", str(long_shot), "--json", "--seconds", "120"], cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    _wait_mid_shot(proc, root, "d002")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    assert (root / "storyboard.yaml").read_bytes() == storyboard
    assert (root / "keyframes" / "d002.png").is_file()  # left by the killed session
    check_film_and_stream(root, ["d001"])

    events = direct(root, ["continue: <June> stops, close-up"], rc=0)
    assert {"event": "repaired", "dropped": "d002"} in events
    assert next(e for e in events if e["event"] == "shot")["id"] == "d002"
    check_film_and_stream(root, ["d001", "d002"])
    assert files_of(root, "d001") == kept


# ---------------------------------------------------------------- bad input


def test_bad_input_is_refused_before_anything_is_written(tmp_path):
    root = new_project(tmp_path)
    runner = CliRunner()

    def refused(*args: str, words: str) -> None:
        before = sorted(p.relative_to(root) for p in root.rglob("*"))
        result = runner.invoke(app, ["direct", "-p", str(root), "--json", *args], input="<June> waits\n")
        assert result.exit_code == 2, result.output
        assert words in result.output
        assert sorted(p.relative_to(root) for p in root.rglob("*")) == before

    refused("--scene", "moon", words="no such scene")
    refused("--from", str(tmp_path / "missing.txt"), words="no such file")
    refused("--seconds", "0.25", words="at least 3 frames")  # 2 frames: the next shot could not join it
    config = root / "cinema.yaml"
    text = config.read_text()
    config.write_text(re.sub(r"(?m)^video:\n  backend: auto$", "video:\n  backend: scene", text))
    refused(words="renders whole scenes")
    config.write_text(text)
    assert subprocess.run([CINEMA, "story"], cwd=root, capture_output=True).returncode == 0
    refused(words="run `cinema render` first")


# ---------------------------------------------------------------- the causal branch


class CausalAnimatic(AnimaticShots):
    """A TEST DOUBLE of the CausalShotBackend contract: it renders with the animatic and
    returns the keyframe, downsampled, as the shot's "latents", so the session's handling
    of the history, the cut flag and the routing log can be checked without a model."""

    name = "test-causal"
    # Declares it reads the next shot's keyframe into a continuous shot (as wan flf2v does):
    # a directed continuation must still leave the shot it continues current.
    uses_next_keyframe = True
    calls: list[tuple[str, bool, list[str]]] = []

    def render_next(self, request, cut, history, out, encode, progress):
        past = history.frames()
        self.calls.append((request.shot_id, cut, history.shots()))
        self.render(request, out, encode, progress)
        slots = () if cut or not past else (RoutedFrame(past[-1].shot_id, past[-1].index, 1.0),)
        return Routing("recency", len(past), slots), _latents(request.keyframe)


def _latents(keyframe: Path) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    with Image.open(keyframe) as image:
        picture = torch.from_numpy(np.asarray(image.convert("RGB").resize((8, 4)), dtype=np.float32))
    return picture.permute(2, 0, 1).unsqueeze(1).repeat(1, 2, 1, 1) / 255  # [C, T=2, H, W]


def test_a_causal_backend_continues_the_history_that_a_later_session_resumes(tmp_path):
    shot_backends.register(CausalAnimatic)
    CausalAnimatic.calls = []
    root = new_project(tmp_path, video="test-causal")
    events: list[dict] = []
    reporting = lambda: contextlib.nullcontext(SilentReporter())  # noqa: E731

    def session(lines: list[str]) -> DirectingSession:
        project = Project.open(root)
        directing = DirectingSession(project, seconds=SHORT)
        with project.lock():
            events.extend(directing.start())
            directing.drive(lines, events.append, reporting)
            events.append(directing.close())
        return directing

    first = session(["<June> walks along the tideline, wide", "continue: she turns", "cut: <Otto> at his counter",
                     "undo"])
    assert first.causal
    assert CausalAnimatic.calls == [("d001", True, []), ("d002", False, ["d001"]), ("d003", True, ["d001", "d002"])]
    assert first.history.shots() == ["d001", "d002"]  # the undone shot left the history
    for shot_id in ("d001", "d002"):
        assert torch.equal(first.history.load(shot_id), _latents(root / "keyframes" / f"{shot_id}.png"))
    memory = [json.loads(line) for line in (root / ".cinema" / "direct" / "memory.jsonl").read_text().splitlines()]
    assert memory == [{"shot": "d001", "policy": "recency", "candidates": 0, "slots": [], "notes": {}},
                      {"shot": "d002", "policy": "recency", "candidates": 2,
                       "slots": [{"shot_id": "d001", "index": 1, "score": 1.0}], "notes": {}}]
    latents = {p.name: p.read_bytes() for p in (root / ".cinema" / "direct" / "history").glob("*.pt")}
    assert sorted(latents) == ["d001.pt", "d002.pt"]
    status = Pipeline(Project.open(root)).status()
    assert [(r.id, r.keyframe.state, r.shot.state) for r in status.shots] == [
        ("d001", "done", "done"), ("d002", "done", "done")]  # nothing of the past is stale
    assert status.film.state == "done"

    # A session killed after its shot's latents joined the history, before the commit.
    first.history.append("d003", _latents(root / "keyframes" / "d001.png"))
    (root / ".cinema" / "direct" / "pending.json").write_text('{"shot": "d003", "action": "make"}')
    CausalAnimatic.calls = []
    second = session(["continue: <Otto> looks up"])
    assert {"event": "repaired", "dropped": "d003"} in events
    assert CausalAnimatic.calls == [("d003", False, ["d001", "d002"])]  # resumed, nothing recomputed
    assert second.history.shots() == ["d001", "d002", "d003"]
    assert {p.name: p.read_bytes() for p in (root / ".cinema" / "direct" / "history").glob("d00[12].pt")} == latents
    check_film_and_stream(root, ["d001", "d002", "d003"])

    # A shot with no latents in the history (as `cinema render` makes them) is one the
    # model cannot see: the session says so.
    second.history.drop("d001")
    events.clear()
    session([])
    notice = next(e["message"] for e in events if e["event"] == "notice")
    assert "shot(s) d001 were made by `cinema render`" in notice


def test_ctrl_c_at_an_interactive_prompt_drops_the_shot_and_asks_again(tmp_path):
    """On a terminal (a pseudo-terminal here), Ctrl-C during a shot returns to `> `."""
    import pty
    import select

    root = new_project(tmp_path)
    pid, terminal = pty.fork()
    if pid == 0:  # the child: a session on the terminal
        os.chdir(root)
        os.execv(CINEMA, [CINEMA, "direct", "--seconds", "120"])
    seen = b""

    def until(token: bytes) -> None:
        nonlocal seen
        deadline = time.monotonic() + 30
        while token not in seen:
            assert time.monotonic() < deadline, seen.decode(errors="replace")
            if select.select([terminal], [], [], 0.05)[0]:
                seen += os.read(terminal, 4096)

    try:
        until(b"> ")
        os.write(terminal, b"<June> runs along the shore\n")
        deadline = time.monotonic() + 60
        while not list((root / ".cinema" / "tmp").glob("d001.*.mp4")):
            assert time.monotonic() < deadline
            time.sleep(0.002)
        seen = b""
        os.write(terminal, b"\x03")  # Ctrl-C, typed
        until(b"d001 discarded")
        seen = seen.split(b"d001 discarded", 1)[1]
        until(b"> ")  # asked again
        os.write(terminal, b"quit\n")
        until(b"the stream is ended")
        _, status = os.waitpid(pid, 0)
    except BaseException:
        os.kill(pid, signal.SIGKILL)  # a failed check left it running
        os.waitpid(pid, 0)
        raise
    finally:
        os.close(terminal)
    assert os.waitstatus_to_exitcode(status) == 0
    assert gone(root, "d001") and not (root / "storyboard.yaml").exists()
