"""`cinema direct` with the real causal backend: `video: helios` (the tiny preset, CAMR)
behind the previz keyframes (sketch), driven as a user drives it — the installed console
script, `--from FILE --json`, real ffmpeg, a real SIGKILL.

The two halves (the session, the helios backend) are each tested on their own with a
test double of the other side; this is them together: the film's latent history on
disk, the routing the backend reports in the memory log and `cinema shot ID`, the cut /
continue flags reaching the model, and a resumed session that recomputes nothing.
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

from cinema_cli.assemble.probe import probe
from cinema_cli.project.create import create_project
from finishing_support import CINEMA

pytestmark = pytest.mark.usefixtures("offline")

FPS = 8
SECONDS = 0.5  # 4 frames asked, snapped to one chunk of helios: 2 latent frames = 5 video frames
CHUNK_FRAMES = 5
LATENT_FRAMES = 2
# The tiny preset; a history budget of 2+1+1 = 4 slots, so a film of a few shots has more
# past frames than slots and CAMR has to choose.
HELIOS = {"model": "tiny", "steps": 2, "guidance": 1.0, "history": [2, 1, 1], "chunk": 2, "memory": "camr"}


def helios_project(parent: Path) -> Path:
    root = create_project(parent / "film")
    config = root / "cinema.yaml"
    text = re.sub(r"(?m)^resolution:.*$", "resolution: {width: 64, height: 64}", config.read_text())
    text = re.sub(r"(?m)^fps:.*$", f"fps: {FPS}", text)
    text = re.sub(r"(?m)^keyframes:\n  backend: auto$", "keyframes:\n  backend: sketch", text)
    text = re.sub(r"(?m)^video:\n  backend: auto$",
                  "video:\n  backend: helios\n  options: " + json.dumps(HELIOS), text)
    text = re.sub(r"(?m)^  device: auto", "  device: cpu", text)
    config.write_text(text)
    return root


def direct(root: Path, lines: list[str], rc: int = 0) -> list[dict]:
    prompts = root.parent / f"prompts-{time.monotonic_ns()}.txt"
    prompts.write_text("\n".join(lines) + "\n")
    proc = subprocess.run([CINEMA, "direct", "--from", str(prompts), "--json", "--seconds", str(SECONDS)],
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == rc, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def shots_of(events: list[dict]) -> dict[str, dict]:
    return {e["id"]: e for e in events if e["event"] == "shot"}


def history_dir(root: Path) -> Path:
    return root / ".cinema" / "direct" / "history"


def history_index(root: Path) -> list[dict]:
    return json.loads((history_dir(root) / "index.json").read_text())["shots"]


def fingerprint(root: Path, shot_id: str) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of everything a causal directed shot keeps: keyframe, sidecar,
    video, stream segment and its latents in the history."""
    paths = [root / "keyframes" / f"{shot_id}.png", root / "keyframes" / f"{shot_id}.json",
             root / "shots" / f"{shot_id}.mp4", *(root / "stream").glob(f"{shot_id}-*.ts"),
             history_dir(root) / f"{shot_id}.pt"]
    assert all(p.is_file() for p in paths) and len(paths) == 5, paths
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in paths}


def check_film(root: Path, ids: list[str]) -> None:
    """storyboard, history, shot videos and film.mp4 agree: one history entry per shot,
    in film order, with the latent frames of the shot's video."""
    board = yaml.safe_load((root / "storyboard.yaml").read_text())["shots"]
    assert [s["id"] for s in board] == ids
    assert history_index(root) == [{"id": i, "frames": LATENT_FRAMES} for i in ids]
    assert sorted(p.stem for p in history_dir(root).glob("*.pt")) == ids
    for shot_id in ids:
        latents = torch.load(history_dir(root) / f"{shot_id}.pt", weights_only=True)
        assert latents.shape[1] == LATENT_FRAMES and latents.abs().sum() > 0, shot_id
        assert probe(root / "shots" / f"{shot_id}.mp4").frames == (LATENT_FRAMES - 1) * 4 + 1 == CHUNK_FRAMES
    assert probe(root / "film.mp4").frames == CHUNK_FRAMES * len(ids)


def past_forced(memory: dict, shot_id: str) -> list[list]:
    """The frames of earlier shots a routing forced into the history (a continue's newest)."""
    return [f for f in memory["notes"]["forced"] if f[0] != shot_id]


def test_a_helios_film_is_directed_killed_and_resumed(tmp_path):
    root = helios_project(tmp_path)

    # Session 1: a place, an unrelated cut, a continue, a shot undone, the return to the
    # place; then the next shot is killed (SIGKILL) while its video is being written.
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join([
        "<June> stands at the door of the old bank, wide",
        "cut: close-up, <Otto> counts coins at his counter",
        "continue: he looks up at the clock",
        "cut: <Otto> sweeps the floor",
        "undo",
        "cut: <June> back at the door of the old bank, wide",
        "continue: <June> pushes the door open",
    ]) + "\n")
    proc = subprocess.Popen([CINEMA, "direct", "--from", str(prompts), "--json", "--seconds", str(SECONDS)],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not list((root / ".cinema" / "tmp").glob("d005.*.mp4")):
            assert proc.poll() is None, f"the session ended before it was killed: {proc.communicate()}"
            assert time.monotonic() < deadline, "the last shot never started"
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert "Traceback" not in err, err
    events = [json.loads(line) for line in out.splitlines()]
    session = next(e for e in events if e["event"] == "session")
    assert session["causal"] is True and session["backends"]["video"] == "helios", session
    made = shots_of(events)
    assert [(i, made[i]["transition"]) for i in made] == [
        ("d001", "cut"), ("d002", "cut"), ("d003", "continuous"), ("d004", "cut")]
    assert made["d004"]["caption"].startswith("<June> back at the door")  # the undone d004 was replaced
    assert next(e for e in events if e["event"] == "undo")["id"] == "d004"
    assert (root / "keyframes" / "d005.png").is_file()  # left by the killed session
    ids = ["d001", "d002", "d003", "d004"]
    check_film(root, ids)  # the undone shot left the history; the killed one never joined it

    # The memory log is the backend's routing: CAMR, past latent frames scored by the
    # attention mass the new chunk puts on them; index -1 is the shot's keyframe latent.
    log = {e["shot"]: e for e in map(json.loads, (root / ".cinema" / "direct" / "memory.jsonl").read_text()
                                                   .splitlines())}
    assert list(log) == ids
    budget = sum(HELIOS["history"])
    for shot_id, entry in log.items():
        assert {k: v for k, v in entry.items() if k != "shot"} == made[shot_id]["memory"]
        assert entry["policy"] == "camr" and entry["notes"]["budget"] == budget
        assert entry["candidates"] == LATENT_FRAMES * (int(shot_id[1:]) - 1) + 1  # the past + its keyframe
        assert 0 < len(entry["slots"]) <= budget and (shot_id, -1) in {(s["shot_id"], s["index"])
                                                                      for s in entry["slots"]}
        for slot in entry["slots"]:
            assert 0.0 < slot["score"] < 1.0, entry  # a share of the attention mass
    assert [(s["shot_id"], s["index"]) for s in log["d001"]["slots"]] == [("d001", -1)]  # no past yet
    # More past frames (6) than slots (3 after the keyframe): CAMR chose among them.
    past = [(s["shot_id"], s["index"]) for s in log["d004"]["slots"] if s["shot_id"] != "d004"]
    assert len(past) == budget - 1 and {s for s, _ in past} <= {"d001", "d002", "d003"}, log["d004"]
    # `continue` forced the film's newest frame into the history; a cut forced none.
    assert log["d003"]["notes"]["cut"] is False
    assert past_forced(log["d003"], "d003") == [["d002", LATENT_FRAMES - 1]]
    assert ("d002", LATENT_FRAMES - 1) in {(s["shot_id"], s["index"]) for s in log["d003"]["slots"]}
    for cut in ("d002", "d004"):
        assert log[cut]["notes"]["cut"] is True and past_forced(log[cut], cut) == [], log[cut]

    # `cinema shot ID` shows it.
    shown = subprocess.run([CINEMA, "shot", "d003", "--json"], cwd=root, capture_output=True, text=True, check=True)
    assert json.loads(shown.stdout)["memory"] == log["d003"]
    human = subprocess.run([CINEMA, "shot", "d003"], cwd=root, capture_output=True, text=True, check=True).stdout
    assert "camr: " in human and "d002 frame 1" in human and "d003 keyframe" in human, human

    # Session 2 repairs what the kill left, then continues the film from d004's newest
    # frame; the past is neither recomputed nor rewritten.
    kept = {i: fingerprint(root, i) for i in ids}
    index = history_index(root)
    events = direct(root, ["continue: <June> pushes the door open"])
    assert {"event": "repaired", "dropped": "d005"} in events
    assert list(shots_of(events)) == ["d005"]  # the one shot made
    resumed = shots_of(events)["d005"]["memory"]
    assert resumed["notes"]["cut"] is False and past_forced(resumed, "d005") == [["d004", LATENT_FRAMES - 1]]
    check_film(root, [*ids, "d005"])
    assert {i: fingerprint(root, i) for i in ids} == kept  # byte-identical, never rewritten (same mtimes)
    assert history_index(root)[:4] == index
    # ...and `render` agrees: nothing of the directed film is stale.
    status = json.loads(subprocess.run([CINEMA, "status", "--json"], cwd=root, capture_output=True, text=True,
                                       check=True).stdout)
    assert [(s["id"], s["keyframe"], s["shot"]) for s in status["shots"]] == [(i, "done", "done") for i in
                                                                             [*ids, "d005"]]
    assert status["film"] == "done"
