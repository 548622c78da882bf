"""`cinema eval text | consistency | aesthetic | judge`: plumbing on tiny random-weight
feature models built offline, metrics that move the right way on constructed films, the
Gemini judge against a Gemini-shaped server on loopback, and bad inputs refused with
exit 2 and nothing written."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
import yaml
from eval_support import TINY_CLIP, fading, moving, noise, tiny_aesthetic, tiny_dino, write_captions, write_video
from test_gemini import KEY, FakeGemini, failure, reply
from typer.testing import CliRunner

from cinema_cli.cli.app import app
from cinema_cli.eval.consistency import vbench_consistency
from cinema_cli.eval.judge import ASPECTS
from cinema_cli.project.create import create_project

RED, GREEN = (220, 30, 30), (30, 200, 60)

SCRIPT = """\
title: Two Walkers
logline: Ana crosses the room, Ben waits in the hall.
style: flat colours
characters:
  - {name: Ana, description: a red figure}
  - {name: Ben, description: a green figure}
scenes:
  - {id: room, location: a blue room, beats: [<Ana> walks]}
  - {id: hall, location: a long hall, beats: [<Ben> waits]}
"""
BOARD = {"shots": [
    {"id": "s01", "scene": "room", "caption": "<Ana> walks across the blue room", "characters": ["Ana"]},
    {"id": "s02", "scene": "room", "caption": "<Ana> walks back", "characters": ["Ana"]},
    {"id": "s03", "scene": "hall", "caption": "<Ana> meets <Ben> in the hall", "characters": ["Ana", "Ben"]},
    {"id": "s04", "scene": "hall", "caption": "<Ben> waits alone", "characters": ["Ben"]},
]}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("models")
    return {"dino": str(tiny_dino(folder / "dino")), "aesthetic": str(tiny_aesthetic(folder / "aesthetic.pth"))}


def invoke(*args: str, rc: int = 0, cwd: Path | None = None):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == rc, f"exit {result.exit_code}\n{result.stdout}\n{result.stderr}\n{result.exception!r}"
    return result


def as_json(*args: str, rc: int = 0) -> dict:
    return json.loads(invoke(*args, "--json", rc=rc).stdout.strip().splitlines()[-1])


def film_project(root: Path, clips: dict[str, list]) -> Path:
    project = create_project(root)
    (project / "script.yaml").write_text(SCRIPT, encoding="utf-8")
    (project / "storyboard.yaml").write_text(yaml.safe_dump(BOARD, sort_keys=False), encoding="utf-8")
    (project / "shots").mkdir(exist_ok=True)
    for shot_id, frames in clips.items():
        write_video(project / "shots" / f"{shot_id}.mp4", frames)
    return project


def walkers() -> dict[str, list]:
    return {"s01": moving(RED), "s02": moving(RED, start=8), "s03": moving(RED, start=2),
            "s04": moving(GREEN, start=6)}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "lock"}


# ---------------------------------------------------------------- the metrics' direction


def test_vbench_consistency_of_identical_frames_is_one():
    import numpy as np

    rows = np.tile(np.array([[0.6, 0.8]], np.float32), (5, 1))
    assert vbench_consistency(rows) == pytest.approx(1.0)
    assert vbench_consistency(rows[:1]) is None


def test_identical_frames_give_consistency_one(tmp_path, models):
    still = moving(RED, count=1) * 6
    project = film_project(tmp_path / "film", {"s01": still, "s02": still, "s03": still, "s04": still})
    data = as_json("eval", "consistency", "-p", project, *TINY_CLIP, "--dino", models["dino"])
    for row in data["shots"]:
        assert row["intra_subject"] == pytest.approx(1.0, abs=1e-3)
        assert row["intra_background"] == pytest.approx(1.0, abs=1e-3)
        assert row["inter_character"] == pytest.approx(1.0, abs=1e-3)
        assert row["on"] == "frames"  # no face detector finds faces in blocks
    assert data["characters"]["Ana"] == pytest.approx(1.0, abs=1e-3)


def test_noise_in_one_shot_lowers_that_characters_consistency(tmp_path, models):
    clean = film_project(tmp_path / "clean", walkers())
    noisy = film_project(tmp_path / "noisy", {**walkers(), "s02": noise()})
    data = as_json("eval", "consistency", "-p", noisy, *TINY_CLIP, "--dino", models["dino"], "--against", clean)
    base = as_json("eval", "consistency", "-p", clean, *TINY_CLIP, "--dino", models["dino"])
    noisy_rows = {r["id"]: r for r in data["shots"]}
    clean_rows = {r["id"]: r for r in base["shots"]}
    assert noisy_rows["s02"]["inter_character"] < clean_rows["s02"]["inter_character"] - 0.01
    assert data["characters"]["Ana"] < base["characters"]["Ana"]
    # Ben's shots are untouched, and so is his score.
    assert data["characters"]["Ben"] == pytest.approx(base["characters"]["Ben"], abs=1e-4)
    deltas = {r["id"]: r for r in data["against"]["shots"]}
    assert deltas["s02"]["inter_character"] < 0
    assert data["against"]["summary"]["inter_character"]["delta"] < 0


def test_shuffled_frames_lower_intra_shot_consistency(tmp_path, models):
    frames = fading()
    shuffled = [frames[i] for i in (0, 7, 2, 5, 1, 6, 3, 4)]
    folder, other = tmp_path / "ordered", tmp_path / "shuffled"
    folder.mkdir(), other.mkdir()
    write_video(folder / "a.mp4", frames)
    write_video(other / "a.mp4", shuffled)
    ordered = as_json("eval", "consistency", "--folder", folder, *TINY_CLIP, "--dino", models["dino"],
                      "--against", other)
    [row] = ordered["against"]["shots"]
    assert row["intra_subject"] > 0 and row["intra_background"] > 0  # ordered - shuffled


# ---------------------------------------------------------------- plumbing, cache, report data


def test_text_and_aesthetic_on_a_project_are_saved_and_cached(tmp_path, models):
    project = film_project(tmp_path / "film", walkers())
    data = as_json("eval", "text", "-p", project, *TINY_CLIP)
    assert [r["id"] for r in data["shots"]] == ["s01", "s02", "s03", "s04"]
    for row in data["shots"]:
        for key in ("semantic_shot", "semantic_scene", "semantic_global"):
            assert -1.0 <= row[key] <= 1.0
    assert [s["scene"] for s in data["scenes"]] == ["room", "hall"]
    assert data["embedded"] == 4 * 8 + 4 + 2 + 1  # frames, captions, scene prompts, film prompt
    saved = json.loads((project / ".cinema" / "eval" / "text.json").read_text())
    assert saved["summary"] == data["summary"]
    again = as_json("eval", "text", "-p", project, *TINY_CLIP)
    assert again["embedded"] == 0 and again["summary"] == data["summary"]  # all from the cache
    write_video(project / "shots" / "s04.mp4", fading())
    assert as_json("eval", "text", "-p", project, *TINY_CLIP)["embedded"] == 8  # only what changed

    aesthetic = as_json("eval", "aesthetic", "-p", project, *TINY_CLIP, "--aesthetic", models["aesthetic"])
    assert aesthetic["embedded"] == 0  # the same CLIP features as text's
    assert len({r["aesthetic"] for r in aesthetic["shots"]}) > 1  # a broken predictor would be flat


def test_folder_with_captions_and_missing_shots_of_a_project(tmp_path):
    folder = tmp_path / "takes"
    folder.mkdir()
    write_video(folder / "a.mp4", moving(RED))
    write_video(folder / "b.mp4", moving(RED, start=9))
    captions = write_captions(tmp_path / "captions.yaml", [
        {"file": "a.mp4", "caption": "<Ana> walks", "scene": "room"},
        {"file": "b.mp4", "caption": "<Ana> walks back", "scene": "room"}])
    data = as_json("eval", "text", "--folder", folder, "--captions", captions, *TINY_CLIP)
    assert [r["id"] for r in data["shots"]] == ["a", "b"] and data["source"] == "folder"
    assert not (folder / ".cinema").exists()  # a folder of takes is only read

    project = film_project(tmp_path / "film", {"s01": moving(RED)})
    result = invoke("eval", "text", "-p", project, *TINY_CLIP)
    assert "not measured" in result.stderr and "s02, s03, s04" in result.stderr


# ---------------------------------------------------------------- bad input


def test_bad_inputs_exit_2_and_write_nothing(tmp_path, models):
    empty = create_project(tmp_path / "empty")
    (empty / "script.yaml").write_text(SCRIPT, encoding="utf-8")
    (empty / "storyboard.yaml").write_text(yaml.safe_dump(BOARD), encoding="utf-8")
    before = snapshot(empty)
    assert "no film to measure" in as_json("eval", "text", "-p", empty, *TINY_CLIP, rc=2)["error"]
    assert snapshot(empty) == before

    folder = tmp_path / "nothing"
    folder.mkdir()
    (folder / "notes.txt").write_text("hi")
    assert "no videos" in as_json("eval", "consistency", "--folder", folder, *TINY_CLIP, rc=2)["error"]

    takes = tmp_path / "takes"
    takes.mkdir()
    write_video(takes / "a.mp4", moving(RED))
    write_video(takes / "b.mp4", moving(RED))
    mismatched = write_captions(tmp_path / "bad.yaml", [{"file": "a.mp4", "caption": "x"},
                                                       {"file": "c.mp4", "caption": "y"}])
    error = as_json("eval", "text", "--folder", takes, "--captions", mismatched, *TINY_CLIP, rc=2)["error"]
    assert "'c.mp4' is not in the folder" in error and "no caption for b.mp4" in error

    (takes / "b.mp4").write_bytes(b"not a video at all")
    assert "b.mp4 is not a readable video" in as_json("eval", "text", "--folder", takes, *TINY_CLIP, rc=2)["error"]

    project = film_project(tmp_path / "film", walkers())
    (project / "shots" / "s03.mp4").write_bytes(b"broken")
    before = snapshot(project)
    assert "s03.mp4 is not a readable video" in as_json("eval", "consistency", "-p", project, *TINY_CLIP,
                                                         "--dino", models["dino"], rc=2)["error"]
    assert snapshot(project) == before  # no cache, no result
    shutil.copy(tmp_path / "takes" / "a.mp4", project / "shots" / "s03.mp4")
    before = snapshot(project)
    error = as_json("eval", "consistency", "-p", project, *TINY_CLIP, "--dino", "nobody/no-such-model", rc=2)["error"]
    assert "--dino nobody/no-such-model" in error and "huggingface-cli download" in error
    assert snapshot(project) == before
    error = as_json("eval", "aesthetic", "-p", project, *TINY_CLIP, rc=2)["error"]
    assert "--aesthetic" in error and "huggingface-cli download" in error
    error = as_json("eval", "text", "-p", project, "--clip-model", "ViT-B-32", "--clip-weights",
                    "no-such-tag", rc=2)["error"]
    assert "--clip-model/--clip-weights" in error


# ---------------------------------------------------------------- the judge


GOOD = {a: {"score": 4, "justification": f"The {a.replace('_', ' ')} holds."} for a in ASPECTS}


@pytest.fixture
def gemini(monkeypatch):
    server = FakeGemini()
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.url)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    yield server
    server.close()


@pytest.fixture
def keyframed(tmp_path) -> Path:
    project = film_project(tmp_path / "film", {})
    (project / "keyframes").mkdir(exist_ok=True)
    from PIL import Image

    for i, shot in enumerate(BOARD["shots"]):
        Image.fromarray(moving(RED if i < 3 else GREEN, count=1, start=4 + 8 * i)[0]).save(
            project / "keyframes" / f"{shot['id']}.png")
    return project


FAST = ("--retries", "2", "--backoff", "0.01", "--model", "gemini-test")


def test_judge_sends_keyframes_in_order_and_validates(gemini, keyframed):
    gemini.queue(reply(GOOD), reply({**GOOD, "diversity": {"score": 2, "justification": "Repeats."}}))
    data = as_json("eval", "judge", "-p", keyframed, *FAST, "--per-scene")
    assert data["summary"]["character_consistency"] == 4 and data["judged"] == ["s01", "s02", "s03", "s04"]
    assert data["summary"]["mean"] == 4.0
    assert data["scenes"][0]["diversity"] == 2  # the room, judged on its own
    first = gemini.requests[0].body["contents"][0]["parts"]
    assert "six aspects" in first[0]["text"] and "meets Ben" in first[0]["text"]
    images = [p["inlineData"] for p in first[1:]]
    assert len(images) == 4 and all(i.get("mimeType", i.get("mime_type")) == "image/png" for i in images)
    assert base64.b64decode(images[0]["data"]).startswith(b"\x89PNG")
    assert gemini.requests[0].body["generationConfig"]["responseSchema"]["required"] == list(ASPECTS)
    assert json.loads((keyframed / ".cinema" / "eval" / "judge.json").read_text())["summary"]["mean"] == 4.0


def test_judge_retries_garbage_and_server_errors_then_fails_clearly(gemini, keyframed):
    bad = {**GOOD, "aesthetics": {"score": 9, "justification": ""}}
    gemini.queue(failure(429, "RESOURCE_EXHAUSTED"), failure(503, "UNAVAILABLE"), reply("not json"),
                 reply(bad), reply(GOOD))
    data = as_json("eval", "judge", "-p", keyframed, *FAST)
    assert data["summary"]["aesthetics"] == 4
    repair = gemini.requests[-1].body["contents"][-1]["parts"][0]["text"]
    assert "aesthetics.score: 9 is not an integer from 0 to 5" in repair

    before = snapshot(keyframed)
    gemini.answers.clear()
    gemini.queue(reply("garbage"))
    error = as_json("eval", "judge", "-p", keyframed, *FAST, rc=1)["error"]
    assert "no valid judgement in 3 tries" in error and "not valid JSON" in error
    gemini.answers.clear()
    gemini.queue(failure(500, "INTERNAL"))
    error = as_json("eval", "judge", "-p", keyframed, *FAST, rc=1)["error"]
    assert "kept failing" in error and "500" in error
    assert snapshot(keyframed) == before and KEY not in error


def test_judge_without_a_key_is_bad_input(monkeypatch, keyframed):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    assert "GEMINI_API_KEY" in as_json("eval", "judge", "-p", keyframed, rc=2)["error"]


# ---------------------------------------------------------------- stress and the report


def stress_project(root: Path) -> Path:
    """The tiny FLUX.2 klein preset at 128x64; two keyframes drawn for it to remember."""
    from PIL import Image

    project = film_project(root, {})
    (project / "cinema.yaml").write_text(
        "resolution: {width: 128, height: 64}\nkeyframes: {backend: flux2, options: {model: tiny, steps: 1}}\n"
        "runtime: {device: cpu}\nmemory: {min_side: 2}\n", encoding="utf-8")
    (project / "keyframes").mkdir(exist_ok=True)
    for i, shot in enumerate(BOARD["shots"][:2]):
        Image.fromarray(fading(count=2, start=(200, 30 + 80 * i, 30))[1]).resize((128, 64)).save(
            project / "keyframes" / f"{shot['id']}.png")
    return project


def test_stress_on_tiny_flux2_goldenmem_bounded_naive_linear(tmp_path, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    project = stress_project(tmp_path / "stress")
    data = as_json("eval", "stress", "-p", project, *TINY_CLIP, "--frames", "1")
    assert data["backend"] == "flux2" and data["pairs"] == [8, 16, 32, 48] and not data["judged"]
    golden = [r for r in data["rows"] if r["memory"] == "goldenmem"]
    naive = [r for r in data["rows"] if r["memory"] == "naive"]
    assert all(r["token_ratio"] <= 1.62 for r in golden) and data["goldenmem_token_ratio_at_longest"] <= 1.62
    assert golden[-1]["context_frames"] >= 1 and golden[-1]["tokens"] > golden[-1]["tokens"] / golden[-1]["token_ratio"]
    assert [r["token_ratio"] for r in naive] == [9.0, 17.0, 33.0, 49.0]  # (pairs + 1) frames
    assert data["naive_linear"] and [r["context_frames"] for r in naive] == [8, 16, 32, 48]
    for row in data["rows"]:
        assert row["seconds_per_keyframe"] > 0 and row["peak_gpu_gib"] is None  # CPU
        assert -1.0 <= row["identity"] <= 1.0
    assert (project / ".cinema" / "eval" / "stress.json").is_file()

    (project / "cinema.yaml").write_text("keyframes: {backend: sketch}\n", encoding="utf-8")
    assert "sketch" in as_json("eval", "stress", "-p", project, *TINY_CLIP, rc=2)["error"]


def test_report_draws_every_metric_run_and_the_deltas(tmp_path, models):
    import re

    clean = film_project(tmp_path / "clean", walkers())
    noisy = film_project(tmp_path / "noisy", {**walkers(), "s02": noise()})
    assert "no eval results yet" in as_json("eval", "report", "-p", noisy, rc=2)["error"]
    assert not (noisy / "eval-report.html").exists()
    for project in (clean, noisy):
        as_json("eval", "consistency", "-p", project, *TINY_CLIP, "--dino", models["dino"])
    as_json("eval", "text", "-p", noisy, *TINY_CLIP)
    page = Path(as_json("eval", "report", "-p", noisy, "--against", clean)["report"])
    assert page == noisy / "eval-report.html"
    html = page.read_text(encoding="utf-8")
    assert "<h2 id=consistency>" in html and "<h2 id=text>" in html
    charts = re.findall(r"src='data:image/png;base64,([^']+)'", html)
    assert len(charts) == 4  # per shot and per scene, for each metric
    assert all(base64.b64decode(c).startswith(b"\x89PNG") for c in charts)
    assert "http" not in html.replace("http-equiv", "")  # self-contained
    delta = re.search(r"<td>inter_character<td>[^<]+<td>[^<]+<td class=(\w+)>", html)
    assert delta and delta[1] == "down"  # the noisy film is worse for Ana


def test_stress_asks_the_judge_when_a_key_is_set(gemini, tmp_path):
    project = stress_project(tmp_path / "stress")
    gemini.queue(reply(GOOD))
    data = as_json("eval", "stress", "-p", project, *TINY_CLIP, "--frames", "2", "--pairs", "8,16", *FAST[:4])
    assert data["judged"] and [r["judge"]["mean"] for r in data["rows"]] == [4.0] * 4
    assert len(gemini.requests) == 4  # one sequence per row
    images = [p for p in gemini.requests[0].body["contents"][0]["parts"] if "inlineData" in p]
    assert len(images) == 2

    for png in (project / "keyframes").glob("*.png"):
        png.unlink()
    assert "none is drawn yet" in as_json("eval", "stress", "-p", project, *TINY_CLIP, rc=2)["error"]
    assert "--pairs" in as_json("eval", "stress", "-p", project, "--pairs", "8,x", rc=2)["error"]
