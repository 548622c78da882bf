"""What a newcomer meets first: the README session, `cinema examples`, help pages,
`cinema shot` and `cinema status` output — each checked the way a person would read it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

from cinema_cli.cli.app import app
from cinema_cli.cli.helptext import cinema_command
from cinema_cli.project.schema import Scene
from cinema_cli.story.offline import compose_caption
from finishing_support import cinema, cinema_json, small_project

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
W, H, FPS = 128, 64, 8


@pytest.fixture(scope="module")
def heist(tmp_path_factory) -> Path:
    root = small_project(tmp_path_factory.mktemp("newcomer"), "heist", W, H, FPS)
    cinema("plan", cwd=root)
    return root


def session_edit() -> tuple[str, str]:
    """The shot id and caption of the README session's `cinema shot ID --caption ...`."""
    session = README.split("## A session", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    line = next(line for line in session.splitlines() if "--caption" in line)
    words = shlex.split(line.split("#", 1)[0])
    return words[2], words[words.index("--caption") + 1]


def test_readme_session_edit_is_true_to_the_example(tmp_path):
    cinema("new", "heist", "--example", "heist", cwd=tmp_path)  # as the README does: 1024x512
    heist = tmp_path / "heist"
    cinema("plan", cwd=heist)
    shot_id, caption = session_edit()
    assert not re.search(r"\b(\w+) <\1>", caption), f"the tag repeats the name: {caption}"
    script = yaml.safe_load((heist / "script.yaml").read_text(encoding="utf-8"))
    shots = {s["id"]: s for s in yaml.safe_load((heist / "storyboard.yaml").read_text(encoding="utf-8"))["shots"]}
    scene = next(s for s in script["scenes"] if s["id"] == shots[shot_id]["scene"])
    place = next(word for word in ("vault", "garage", "street", "rooftop") if word in caption.lower())
    assert place in scene["location"], f"{shot_id} is in {scene['location']!r}, the README says {place}"
    # What the README says the next render redoes: the shot and the keyframes drawn with it.
    before = cinema_json("status", cwd=heist)["shots"]
    drawn_with = [row["id"] for row in before if shot_id in [c["shot"] for c in row["context"]]]
    cinema("shot", shot_id, "--caption", caption, cwd=heist)
    rebuilt = cinema_json("plan", cwd=heist)["rebuilt"]["keyframes"]
    assert rebuilt == [shot_id] + drawn_with
    count = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven"}[len(rebuilt)]
    assert f"redoes {count} keyframes" in README
    for other in drawn_with:
        assert other in README.split("## A session", 1)[1].split("## The project folder")[0]


def test_examples_have_descriptions_and_json(tmp_path):
    data = cinema_json("examples", cwd=tmp_path)
    assert [e["name"] for e in data["examples"]] == ["heist", "lighthouse"]
    assert data["examples"][0]["title"] == "The Last Job" and "safecracker" in data["examples"][0]["logline"]
    text = cinema("examples", cwd=tmp_path).stdout
    assert "The Last Job" in text and "safecracker" in text


def commands(command: click.Command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, (*path, name))


def test_help_pages_show_words_not_types_or_eaten_markup(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    root = cinema_command(app)
    pages = {}
    for path, _ in commands(root):
        with pytest.raises(SystemExit) as done:
            root([*path, "--help"], prog_name="cinema")
        assert done.value.code == 0
        pages[" ".join(path)] = capsys.readouterr().out
    assert len(pages) > 15
    for name, page in pages.items():
        for noise in ("<bool>", "<str>", "<int", "<path>", "list[", "{"):
            assert noise not in page, f"cinema {name} --help shows {noise!r}"
    assert "[relevant earlier shot ids]" in pages["eval retrieval"]
    assert "Usage: cinema shot [OPTIONS] SHOT_ID" in pages["shot"]
    assert "The keyframes must be drawn" in pages["eval retrieval"]  # a paragraph, not broken lines


def test_shot_reads_like_a_person_wrote_it_and_edits_dialogue_cast_and_lock(heist):
    text = cinema("shot", "s02", cwd=heist).stdout
    assert "['" not in text and "False" not in text and "True" not in text
    assert re.search(r"characters\s+Dex, Theo", text)
    assert re.search(r"duration\s+3 s", text) and re.search(r"locked\s+no", text)
    assert re.search(r"context\s+s01 \(relevance \d\.\d\d, \d+x\d+ px\)", text), text
    data = cinema_json("shot", "s02", "--dialogue", "Ninety. Not a second more.", "--lock",
                       "--characters", "Dex, Theo, Mara", cwd=heist)
    assert data["shot"]["dialogue"] == "Ninety. Not a second more."
    assert data["shot"]["locked"] is True and data["shot"]["characters"] == ["Dex", "Theo", "Mara"]
    assert re.search(r"locked\s+yes", cinema("shot", "s02", cwd=heist).stdout)
    # A cast without a tagged name is refused, and nothing changes.
    before = (heist / "storyboard.yaml").read_bytes()
    result = cinema("shot", "s02", "--characters", "Mara", cwd=heist, rc=2)
    assert "<Dex>" in result.stderr
    assert (heist / "storyboard.yaml").read_bytes() == before
    cinema("shot", "s02", "--dialogue", "", "--unlock", cwd=heist)
    shot = cinema_json("shot", "s02", cwd=heist)["shot"]
    assert shot["dialogue"] is None and shot["locked"] is False


def test_status_shows_lengths_captions_and_explains_a_kept_storyboard(tmp_path):
    root = small_project(tmp_path, "kept", W, H, FPS)
    cinema("story", cwd=root)
    text = cinema("status", cwd=root).stdout
    assert "3.5 s" in text and "Mara steps out" in text and "<Mara>" not in text
    board = yaml.safe_load((root / "storyboard.yaml").read_text(encoding="utf-8"))["shots"]
    total = sum(s["duration"] for s in board)
    fades = sum(1 for s in board[1:] if s["transition"] == "crossfade")
    assert f"{len(board)} shots, {total:g} s of shots" in text
    assert f"the film {total - fades * 0.5:g} s" in text
    # Hand-edit the storyboard, then change the script: render keeps the edit, and
    # status says that this is expected and what to run.
    path = root / "storyboard.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("<Mara> steps out", "<Mara> slips out"), encoding="utf-8")
    script = root / "script.yaml"
    script.write_text(script.read_text(encoding="utf-8").replace("arms folded", "arms crossed"), encoding="utf-8")
    assert "kept" in cinema("story", cwd=root).stderr
    text = cinema("status", cwd=root).stdout
    assert "storyboard: stale (edited)" in text
    assert "expected" in text and "cinema story --force" in text


def test_caption_says_the_time_of_day_once():
    scene = Scene(id="roof", location="a wind-swept rooftop at dawn", time="dawn", beats=["x"])
    assert compose_caption("Theo stands alone", scene) == "Theo stands alone. A wind-swept rooftop at dawn."
    night = Scene(id="st", location="a city street", time="night", beats=["x"])
    assert compose_caption("A car passes", night) == "A car passes. A city street, night."


def test_unknown_tag_in_a_beat_is_reported_at_its_script_line(tmp_path):
    root = small_project(tmp_path, "bob", W, H, FPS)
    script = root / "script.yaml"
    text = script.read_text(encoding="utf-8").replace("<Dex> slaps the blueprint", "<Bob> slaps the blueprint")
    script.write_text(text, encoding="utf-8")
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "<Bob>" in row)
    result = cinema("render", cwd=root, rc=2)
    assert re.search(rf"script\.yaml:{line - 1}: scenes\.0\.beats\.1: <Bob> is not in `characters`", result.stderr)
    assert "storyboard.yaml" not in result.stderr
    assert not (root / "storyboard.yaml").exists()


def test_shots_lists_the_shot_list(heist):
    text = cinema("shots", cwd=heist).stdout
    board = yaml.safe_load((heist / "storyboard.yaml").read_text(encoding="utf-8"))["shots"]
    for shot in board:
        assert shot["id"] in text
    assert "Dex slaps the blueprint" in text and "<Dex>" not in text
    assert [s["id"] for s in cinema_json("shots", cwd=heist)["shots"]] == [s["id"] for s in board]


def test_play_opens_the_file_in_the_chosen_player(heist, tmp_path, monkeypatch):
    log = tmp_path / "played.txt"
    player = tmp_path / "player.sh"
    player.write_text(f'#!/bin/sh\necho "$@" >> {log}\n', encoding="utf-8")
    player.chmod(0o755)
    monkeypatch.setenv("CINEMA_PLAYER", f"{player} --loop")
    cinema("play", "s02", "--keyframe", cwd=heist)
    cinema("open", "s03", "--keyframe", cwd=heist)  # the same command under the word people try
    assert log.read_text().split("\n")[:2] == [f"--loop {heist / 'keyframes/s02.png'}",
                                             f"--loop {heist / 'keyframes/s03.png'}"]
    assert cinema("play", "s02", "--keyframe", "--print", cwd=heist).stdout.strip() == str(heist / "keyframes/s02.png")
    assert len(log.read_text().splitlines()) == 2  # --print opened nothing
    # Not rendered yet, or no such shot: exit 2, a hint, nothing played.
    assert "cinema render" in cinema("play", cwd=heist, rc=2).stderr
    assert "cinema render" in cinema("preview", "s02", cwd=heist, rc=2).stderr
    assert "s99" in cinema("play", "s99", cwd=heist, rc=2).stderr
    assert len(log.read_text().splitlines()) == 2


def test_player_command_without_a_gui():
    from cinema_cli.review.player import player_command

    path = Path("/films/heist/film.mp4")
    assert player_command(path, {"CINEMA_PLAYER": "mpv --fs"}, "linux") == ["mpv", "--fs", str(path)]
    assert player_command(path, {}, "darwin") == ["open", str(path)]
