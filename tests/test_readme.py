"""The README's promises about the repository itself: its two commands, the layout,
and the shipped examples (big enough to show a film: shots, cast, places, a flashback)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from cinema_cli.project.schema import CHARACTER_TAG, Script
from cinema_cli.project.yamlio import load_model

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if (p / "script.yaml").is_file())


def bash_blocks(markdown: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^```bash\n(.*?)^```", markdown, re.S | re.M)]


def steps(command: str) -> list[str]:
    return [part.strip() for part in command.split("&&")]


def test_readme_demo_command():
    demo = bash_blocks(README)[0]
    assert "\n" not in demo, "the demo is one command line"
    parts = steps(demo)
    assert re.match(r"python3? -m pip install\b", parts[0]), parts[0]
    assert "-e ." in parts[0]
    assert "cinema new heist --example heist" in parts
    assert "cinema render" in parts
    # Installed first, then the project, then into it, then rendered.
    assert parts.index("cinema new heist --example heist") < parts.index("cd heist") < parts.index("cinema render")


def test_readme_test_command_is_what_ci_runs():
    test_command = bash_blocks(README)[1]
    assert "\n" not in test_command
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    lines = [line.strip() for line in ci.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert lines[-1] == test_command
    parts = steps(test_command)
    assert re.match(r"python3? -m pip install\b", parts[0]) and ".[dev]" in parts[0]
    assert re.match(r"python3? -m pytest\b", parts[-1])


def test_top_level_layout():
    for name in ("pyproject.toml", "README.md", "cinema_cli", "templates", "tests", "examples", ".ci"):
        assert (ROOT / name).exists(), name
    assert (ROOT / ".ci" / "run").is_file()


def test_the_readme_examples_ship():
    assert [p.name for p in EXAMPLES] == ["heist", "lighthouse"]
    for example in EXAMPLES:
        assert (example / "cinema.yaml").is_file()


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_is_a_real_story(example):
    raw = yaml.safe_load((example / "script.yaml").read_text(encoding="utf-8"))
    script = load_model(example / "script.yaml", Script)  # valid against the schema

    beats = [beat for scene in raw["scenes"] for beat in scene["beats"]]
    assert len(beats) >= 10, f"{len(beats)} beats (= shots)"
    assert len(raw["characters"]) >= 3
    locations = [scene["location"] for scene in raw["scenes"]]
    assert len(set(locations)) >= 3

    flashbacks = [
        (earlier, later)
        for later in range(len(locations))
        for earlier in range(later - 1)  # earlier < later - 1: not the adjacent scene
        if locations[earlier] == locations[later]
    ]
    assert flashbacks, f"no scene returns to an earlier, non-adjacent location: {locations}"

    # Every tagged name is in the cast, and every character appears somewhere.
    cast = {c.name for c in script.characters}
    tagged = {name for scene in script.scenes for beat in scene.beats for name in CHARACTER_TAG.findall(beat.text)}
    assert tagged <= cast
    assert tagged == cast
