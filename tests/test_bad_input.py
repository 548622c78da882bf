"""Bad input: every case exits 2 with one clear `file:line: field: message` paragraph on
stderr, never a traceback, and changes nothing on disk (the whole project tree,
`.cinema/` included, is snapshotted before and after).

Real files, the real CLI (typer's CliRunner in-process for speed, the installed
`cinema` console script via subprocess for a few end-to-end checks), real ffmpeg for
the project the cases start from.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cinema_cli.cli.app import app

RUNNER = CliRunner()
FILES = ("cinema.yaml", "script.yaml", "storyboard.yaml")


# ---------------------------------------------------------------- helpers


def cinema_command() -> list[str]:
    """The installed console script beside this interpreter, else `python -m cinema_cli`."""
    script = Path(sys.executable).parent / "cinema"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "cinema_cli"]


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under `root` (hidden ones too): kind, size, mtime_ns and the sha256 of
    files, the target of symlinks. Equal snapshots: nothing on disk changed."""
    entries: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = Path(folder, name)
            st_ = path.lstat()
            rel = str(path.relative_to(root))
            if path.is_symlink():
                entries[rel] = ("link", os.readlink(path), st_.st_mtime_ns)
            elif path.is_dir():
                entries[rel] = ("dir", st_.st_mtime_ns)
            else:
                entries[rel] = ("file", st_.st_size, st_.st_mtime_ns,
                                hashlib.sha256(path.read_bytes()).hexdigest())
    return entries


def snapshot_diff(before: dict, after: dict) -> list[str]:
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def set_tiny(project: Path, width: int = 128, height: int = 64, fps: int = 8) -> None:
    config = project / "cinema.yaml"
    text = config.read_text()
    text = re.sub(r"(?m)^resolution:.*$", f"resolution: {{width: {width}, height: {height}}}", text)
    text = re.sub(r"(?m)^fps:.*$", f"fps: {fps}", text)
    config.write_text(text)


def error_text(stderr: str) -> str:
    """The error paragraph: from the first `error:` line to the end of stderr."""
    index = stderr.find("error: ")
    assert index >= 0, f"no 'error:' line on stderr:\n{stderr}"
    return stderr[index + len("error: "):].strip()


def invoke(args: list[str]):
    result = RUNNER.invoke(app, args)
    # Everything the library raises must be turned into a message and an exit code.
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {type(result.exception).__name__}: {result.exception!r}\n{result.output}"
    )
    return result


def json_error(stdout: str) -> str:
    """`render --json` reports a failed project as a JSON line on stdout, not on stderr."""
    data = json.loads(stdout.strip().splitlines()[-1])
    assert data["ok"] is False and data["exit_code"] == 2, data
    return data["error"]


def assert_bad_input(result, before: dict, root: Path, *, json_mode: bool = False) -> str:
    """Exit 2, one paragraph on stderr (or in the JSON), no traceback, nothing on disk
    changed. Returns the error message."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.exit_code == 2, f"exit {result.exit_code}, expected 2 (bad input)\n{output}"
    message = json_error(result.stdout) if json_mode else error_text(result.stderr)
    assert message, "empty error message"
    assert "\n\n" not in message, f"not one paragraph:\n{message}"
    assert len(message.splitlines()) <= 5, f"too long for one paragraph:\n{message}"
    changed = snapshot_diff(before, snapshot(root))
    assert not changed, f"bad input changed files on disk: {changed}\nerror was: {message}"
    return message


def line_of_text(text: str, needle: str) -> int:
    """1-based number of the line containing `needle` (which must be unique)."""
    hits = [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


def shot_block(text: str, shot_id: str) -> tuple[int, int]:
    """(first, end) 0-based line indexes of the shot `shot_id` in storyboard.yaml."""
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line == f"- id: {shot_id}")
    end = next((i for i in range(first + 1, len(lines)) if lines[i].startswith("- ")), len(lines))
    return first, end


def set_shot_field(text: str, shot_id: str, field: str, value: str) -> tuple[str, int]:
    """Replace `field:` of one shot; returns the new text and the field's line."""
    lines = text.splitlines()
    first, end = shot_block(text, shot_id)
    index = next(i for i in range(first, end) if lines[i].startswith(f"  {field}:"))
    lines[index] = f"  {field}: {value}"
    # a caption continues on indented lines, a list on `  - ` lines: drop them too
    while index + 1 < end and lines[index + 1].startswith(("    ", "  - ")):
        del lines[index + 1]
        end -= 1
    return "\n".join(lines) + "\n", index + 1


def add_shot_line(text: str, shot_id: str, line: str) -> tuple[str, int]:
    """Insert `line` at the end of one shot; returns the new text and its line."""
    lines = text.splitlines()
    _, end = shot_block(text, shot_id)
    lines.insert(end, line)
    return "\n".join(lines) + "\n", end + 1


def set_top(text: str, key: str, line: str) -> tuple[str, int]:
    """Replace the top-level `key:` line of a YAML file; returns text and line."""
    lines = text.splitlines()
    index = next(i for i, text_line in enumerate(lines) if text_line.startswith(f"{key}:"))
    lines[index] = line
    # drop the old block's indented children
    while index + 1 < len(lines) and lines[index + 1].startswith("  "):
        del lines[index + 1]
    return "\n".join(lines) + "\n", index + 1


def append(text: str, line: str) -> tuple[str, int]:
    text = text if text.endswith("\n") else text + "\n"
    return text + line + "\n", len(text.splitlines()) + 1


def copy_project(base: Path, dest: Path) -> Path:
    shutil.copytree(base, dest, symlinks=True)
    return dest


# ---------------------------------------------------------------- the project


@pytest.fixture(scope="session")
def rendered(tmp_path_factory) -> Path:
    """The heist example at 128x64, 8 fps, fully rendered (storyboard, keyframes, shots,
    film): a project with everything on disk that bad input must not touch."""
    root = tmp_path_factory.mktemp("base") / "heist"
    result = invoke(["new", str(root), "--example", "heist"])
    assert result.exit_code == 0, result.output
    set_tiny(root)
    result = invoke(["render", "-p", str(root)])
    assert result.exit_code == 0, result.output
    assert (root / "film.mp4").is_file() and (root / "storyboard.yaml").is_file()
    return root


@pytest.fixture
def project(rendered, tmp_path) -> Path:
    return copy_project(rendered, tmp_path / "heist")


# ---------------------------------------------------------------- project file cases

# A case edits one project file in place and returns what the error must name:
# (file, line or None for "some line", field path or None, a substring of the message).
Expect = tuple[str, "int | None", "str | None", str]


def edit_file(root: Path, file: str, change: Callable[[str], tuple[str, int]]) -> int:
    path = root / file
    text, line = change(path.read_text())
    path.write_text(text)
    return line


def replace_once(old: str, new: str, marker: str | None = None) -> Callable[[str], tuple[str, int]]:
    """Replace `old` by `new`; the line is that of `marker` (default: `new`'s first line)."""
    def change(text: str) -> tuple[str, int]:
        assert old in text, old
        text = text.replace(old, new, 1)
        return text, line_of_text(text, marker or new.splitlines()[0].strip())
    return change


def with_reference(ref: str) -> Callable[[str], tuple[str, int]]:
    return replace_once("  - name: Mara\n", f"  - name: Mara\n    references: [{ref}]\n", f"references: [{ref}]")


def shot_start_line(root: Path, shot_id: str) -> int:
    return shot_block((root / "storyboard.yaml").read_text(), shot_id)[0] + 1


def case(file: str, change, field: str | None, words: str, line_shift: int = 0):
    def apply(root: Path) -> Expect:
        line = edit_file(root, file, change)
        return file, line + line_shift, field, words
    return apply


def case_duplicate_shot_id(root: Path) -> Expect:
    edit_file(root, "storyboard.yaml", replace_once("- id: s02\n", "- id: s01\n", "shots:"))
    return "storyboard.yaml", None, None, "duplicate shots id: s01"


def case_untagged_nobody(root: Path) -> Expect:
    edit_file(root, "storyboard.yaml", lambda t: set_shot_field(t, "s02", "caption", "<Nobody> slaps the blueprint"))
    # the check is on the whole shot: its line is where the shot starts
    return "storyboard.yaml", shot_start_line(root, "s02"), "shots.1", "<Nobody>"


def case_cast_nobody(root: Path) -> Expect:
    edit_file(root, "storyboard.yaml", lambda t: set_shot_field(t, "s02", "caption", "<Nobody> slaps the blueprint"))
    line = edit_file(root, "storyboard.yaml", lambda t: set_shot_field(t, "s02", "characters", "[Dex, Theo, Nobody]"))
    return "storyboard.yaml", line, "shots.1.characters.2", "'Nobody' is not in script.yaml"


def case_reference_dotdot(root: Path) -> Expect:
    # the file exists outside the project: the refusal is about where it is
    (root.parent / "outside.png").write_bytes((root / "keyframes" / "s01.png").read_bytes())
    line = edit_file(root, "script.yaml", with_reference("../outside.png"))
    return "script.yaml", line, "characters.0.references.0", "outside the project"


CASES: dict[str, Callable[[Path], Expect]] = {
    # malformed YAML syntax: the line is where the syntax breaks
    "cinema.yaml-malformed": case("cinema.yaml", lambda t: set_top(t, "fps", "fps: 8: 9"), None, "malformed YAML"),
    "script.yaml-malformed": case("script.yaml", lambda t: set_top(t, "title", "title: The Last: Job"),
                                  None, "malformed YAML"),
    "storyboard.yaml-malformed": case("storyboard.yaml", lambda t: set_shot_field(t, "s03", "seed", "12: 34"),
                                      None, "malformed YAML"),
    "script.yaml-tab": case("script.yaml", lambda t: set_top(t, "style", "style: noir\n\tmood: grim"),
                            None, "malformed YAML", line_shift=1),
    "script.yaml-bad-indent": case("script.yaml", replace_once(
        "      - text: >-\n          <Dex> slaps", "      - text: >-\n        <Dex> slaps",
        "        camera: medium, static"), None, "malformed YAML"),
    # unknown fields, with their line
    "cinema.yaml-unknown-field": case("cinema.yaml", lambda t: append(t, "fsp: 24"), "fsp", "unknown field"),
    "script.yaml-unknown-field": case("script.yaml", replace_once(
        "    description: The crew plans", "    mood: tense\n    description: The crew plans"),
        "scenes.0.mood", "unknown field"),
    "storyboard.yaml-unknown-field": case("storyboard.yaml", lambda t: add_shot_line(t, "s02", "  colour: red"),
                                          "shots.1.colour", "unknown field"),
    # wrong types and values
    "cinema.yaml-fps-string": case("cinema.yaml", lambda t: set_top(t, "fps", 'fps: "fast"'), "fps", "integer"),
    "cinema.yaml-resolution": case("cinema.yaml",
                                   lambda t: set_top(t, "resolution", "resolution: {width: 100, height: 64}"),
                                   "resolution.width", "multiple of 16"),
    "cinema.yaml-preset": case("cinema.yaml", lambda t: set_top(t, "assemble", "assemble: {preset: warp-speed}"),
                               "assemble.preset", "veryfast"),
    "cinema.yaml-not-a-mapping": case("cinema.yaml", lambda t: ("- fps\n- 24\n", 1), None, "mapping"),
    "storyboard.yaml-duration-negative": case("storyboard.yaml", lambda t: set_shot_field(t, "s02", "duration", "-1"),
                                              "shots.1.duration", "greater than 0"),
    "storyboard.yaml-duration-string": case("storyboard.yaml", lambda t: set_shot_field(t, "s04", "duration", "long"),
                                            "shots.3.duration", "number"),
    "storyboard.yaml-transition-wipe": case("storyboard.yaml", lambda t: set_shot_field(t, "s05", "transition", "wipe"),
                                            "shots.4.transition", "crossfade"),
    "storyboard.yaml-camera-sideways": case("storyboard.yaml",
                                            lambda t: set_shot_field(t, "s02", "camera", '"sideways"'),
                                            "shots.1.camera", "sideways"),
    "storyboard.yaml-seed-list": case("storyboard.yaml", lambda t: set_shot_field(t, "s06", "seed", "[1, 2]"),
                                      "shots.5.seed", "integer"),
    "script.yaml-transition-wipe": case("script.yaml", replace_once(
        "    transition: crossfade\n", "    transition: wipe\n"), "scenes.3.transition", "crossfade"),
    "script.yaml-beat-camera": case("script.yaml", replace_once(
        "camera: wide, tilt-down", "camera: sideways"), "scenes.2.beats.0.camera", "sideways"),
    # duplicate YAML keys: the second one's line
    "cinema.yaml-duplicate-key": case("cinema.yaml", lambda t: append(t, "fps: 12"), "fps", "duplicate key"),
    "script.yaml-duplicate-key": case("script.yaml", replace_once(
        "title: The Last Job\n", "title: The Last Job\ntitle: Another Job\n", "title: Another Job"),
        "title", "duplicate key"),
    "storyboard.yaml-duplicate-key": case("storyboard.yaml", lambda t: add_shot_line(t, "s03", "  duration: 9"),
                                          "duration", "duplicate key"),
    # checks across records and files
    "storyboard.yaml-duplicate-shot-id": case_duplicate_shot_id,
    "storyboard.yaml-unknown-scene": case("storyboard.yaml", lambda t: set_shot_field(t, "s04", "scene", "moon"),
                                          "shots.3.scene", "'moon' is not in script.yaml"),
    "storyboard.yaml-untagged-nobody": case_untagged_nobody,
    "storyboard.yaml-cast-nobody": case_cast_nobody,
    # reference images must be inside the project, and exist
    "script.yaml-reference-dotdot": case_reference_dotdot,
    "script.yaml-reference-absolute": case("script.yaml", with_reference("/etc/passwd"),
                                           "characters.0.references.0", "outside the project"),
    "script.yaml-reference-missing": case("script.yaml", with_reference("characters/mara.png"),
                                          "characters.0.references.0", "not found"),
}

COMMANDS = {
    "status": ["status"],
    "story": ["story"],
    "render": ["render"],
    "render-json": ["render", "--json"],
    "shot": ["shot", "s01"],
}


def check_message(message: str, file: str, line: int | None, field: str | None, words: str) -> None:
    if line is not None:
        prefix = f"{file}:{line}: "
        assert message.startswith(prefix), f"expected {prefix!r} ...; got:\n{message}"
    else:
        assert re.match(rf"{re.escape(file)}:\d+: ", message), f"expected {file}:LINE: ...; got:\n{message}"
    if field is not None:
        assert message.split(": ", 2)[1] == field or f": {field}: " in message, (
            f"field {field!r} not named:\n{message}")
    assert words in message, f"{words!r} not in:\n{message}"


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("name", list(CASES))
def test_bad_project_file(project, name, command):
    file, line, field, words = CASES[name](project)
    before = snapshot(project)
    result = invoke([*COMMANDS[command], "-p", str(project)])
    message = assert_bad_input(result, before, project, json_mode=command == "render-json")
    check_message(message, file, line, field, words)


@pytest.mark.parametrize("command", ["status", "render"])
def test_reference_symlink_leading_outside(project, tmp_path, command):
    """A reference inside characters/ that is a symlink to a file outside the project."""
    outside = tmp_path / "secret.png"
    outside.write_bytes((project / "keyframes" / "s01.png").read_bytes())
    (project / "characters" / "mara.png").symlink_to(outside)
    script = project / "script.yaml"
    text, line = with_reference("characters/mara.png")(script.read_text())
    script.write_text(text)
    before = snapshot(project)
    message = assert_bad_input(invoke([command, "-p", str(project)]), before, project)
    check_message(message, "script.yaml", line, "characters.0.references.0", "outside the project")


def test_unclosed_bracket_points_at_its_opening_line(project):
    """`characters: [Dex, Theo` with no `]`: YAML notices on the next line, but the line
    to fix is the one with the `[`; the message must name it."""
    opened = edit_file(project, "storyboard.yaml",
                       lambda t: set_shot_field(t, "s02", "characters", "[Dex, Theo"))
    before = snapshot(project)
    message = assert_bad_input(invoke(["status", "-p", str(project)]), before, project)
    assert message.startswith("storyboard.yaml:") and "malformed YAML" in message, message
    assert message.startswith(f"storyboard.yaml:{opened}: ") or f"line {opened}" in message, (
        f"the unclosed '[' is on line {opened}, which the message does not name:\n{message}")


@pytest.mark.parametrize("bad", [b"\x00", b"\x1b", b"\xff\xfe"], ids=["nul", "escape", "not-utf8"])
def test_bad_character_reports_its_line(project, bad):
    """A control character or a byte that is not UTF-8, in the middle of script.yaml:
    one paragraph naming the line it is on (not a character offset in "<unicode string>")."""
    path = project / "script.yaml"
    data = path.read_bytes()
    at = data.index(b"style: ") + len(b"style: 1970s")
    line = data[:at].count(b"\n") + 1
    path.write_bytes(data[:at] + bad + data[at:])
    before = snapshot(project)
    message = assert_bad_input(invoke(["status", "-p", str(project)]), before, project)
    assert "<unicode string>" not in message, f"parser internals leak into the message:\n{message}"
    assert message.startswith(f"script.yaml:{line}: "), f"the bad character is on line {line}:\n{message}"


def test_removing_a_scene_is_not_bad_input(project):
    """Deleting the last scene from script.yaml is an ordinary edit: the generated (not
    hand-edited) storyboard is regenerated from the script, not checked against it."""
    script = project / "script.yaml"
    text = script.read_text()
    script.write_text(text[:text.index("  - id: rooftop")])
    status = invoke(["status", "-p", str(project), "--json"])
    assert status.exit_code == 0, f"status refuses a valid project:\n{status.stderr}"
    assert json.loads(status.stdout)["story"] == "stale"
    result = invoke(["render", "-p", str(project)])
    assert result.exit_code == 0, f"render refuses a valid edit of the script:\n{result.stderr}"
    board = (project / "storyboard.yaml").read_text()
    assert "rooftop" not in board and "scene: vault-open" in board


def test_reference_error_names_the_field_once(project):
    """The message is `script.yaml:LINE: field: message`, without the field repeated."""
    script = project / "script.yaml"
    text, line = with_reference("/etc/passwd")(script.read_text())
    script.write_text(text)
    before = snapshot(project)
    message = assert_bad_input(invoke(["status", "-p", str(project)]), before, project)
    assert message.count("characters.0.references.0") == 1, (
        f"the field path is repeated in the message:\n{message}")
    assert message.count("script.yaml") == 1, f"the file is repeated in the message:\n{message}"


# ---------------------------------------------------------------- backends


@pytest.mark.parametrize("command", ["status", "render"])
@pytest.mark.parametrize("stage,value", [("keyframes", "nope"), ("video", "nope"), ("story", "nope")])
def test_unknown_backend(project, command, stage, value):
    config = project / "cinema.yaml"
    text, _ = set_top(config.read_text(), stage, f"{stage}: {{backend: {value}}}")
    config.write_text(text)
    line = line_of_text(text, f"{stage}: {{backend: {value}}}")
    before = snapshot(project)
    message = assert_bad_input(invoke([command, "-p", str(project)]), before, project)
    assert f"unknown {stage} backend 'nope'" in message, message
    # The contract for bad project files: `file:LINE: field: message`.
    check_message(message, "cinema.yaml", line, f"{stage}.backend", "nope")


@pytest.mark.parametrize("command", ["status", "render"])
@pytest.mark.parametrize("setting,field,words", [
    ("video: {backend: animatic, options: {zooom: 1}}", "video.options.zooom", "unknown field"),
    ("video: {backend: auto, options: {zoom: 2}}", "video.options.zoom", "0.5"),
    ("keyframes: {backend: sketch, options: {nope: 1}}", "keyframes.options.nope", "unknown field"),
])
def test_unknown_backend_option(project, command, setting, field, words):
    config = project / "cinema.yaml"
    stage = setting.split(":")[0]
    text, _ = set_top(config.read_text(), stage, setting)
    config.write_text(text)
    before = snapshot(project)
    message = assert_bad_input(invoke([command, "-p", str(project)]), before, project)
    check_message(message, "cinema.yaml", line_of_text(text, setting), field, words)


# ---------------------------------------------------------------- `cinema shot` arguments


@pytest.mark.parametrize("args,words", [
    (["shot", "s99"], "no shot 's99'"),
    (["shot", "s99", "--caption", "x"], "no shot 's99'"),
    (["shot", "s99", "--regen"], "no shot 's99'"),
    (["shot", "s99", "--json"], "no shot 's99'"),
    (["shot", "s01", "--camera", "sideways"], "--camera"),
    (["shot", "s01", "--transition", "wipe"], "--transition"),
    (["shot", "s01", "--duration", "-1"], "--duration"),
    (["shot", "s01", "--caption", "   "], "--caption"),
    (["shot", "s01", "--caption", "<Nobody> waves from the door"], "Nobody"),
])
def test_shot_arguments(project, args, words):
    before = snapshot(project)
    message = assert_bad_input(invoke([*args, "-p", str(project)]), before, project)
    assert words in message, message
    if "s99" in args:
        assert "storyboard.yaml" in message and "s01" in message, "should list the shot ids"
    else:
        assert "s01" in message, message


# ---------------------------------------------------------------- outside a project, `cinema new`


@pytest.mark.parametrize("args", [["status"], ["render"], ["plan"], ["story"], ["assemble"],
                                  ["shot", "s01"], ["render", "--json"]])
def test_outside_any_project(tmp_path, args):
    empty = tmp_path / "not-a-project"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello\n")
    before = snapshot(tmp_path)
    message = assert_bad_input(invoke([*args, "-p", str(empty)]), before, tmp_path,
                               json_mode=args == ["render", "--json"])
    assert "cinema.yaml" in message and "not" in message and str(empty) in message, message


def test_new_into_non_empty_folder(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "precious.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    message = assert_bad_input(invoke(["new", str(target), "--example", "heist"]), before, tmp_path)
    assert str(target) in message and "not empty" in message, message


def test_new_over_a_file(tmp_path):
    target = tmp_path / "film"
    target.write_text("a file, not a folder\n")
    before = snapshot(tmp_path)
    message = assert_bad_input(invoke(["new", str(target)]), before, tmp_path)
    assert str(target) in message, message


def test_new_unknown_example(tmp_path):
    before = snapshot(tmp_path)
    message = assert_bad_input(invoke(["new", str(tmp_path / "x"), "--example", "nope"]), before, tmp_path)
    assert "'nope'" in message and "heist" in message and "lighthouse" in message, message
    assert not (tmp_path / "x").exists()


def test_multi_project_render_keeps_going_and_exits_2(project, tmp_path):
    """render -p good -p bad: the good one renders (nothing stale), the bad one is
    reported, the exit code is the first failure's."""
    other = copy_project(project, tmp_path / "broken")
    (other / "cinema.yaml").write_text((other / "cinema.yaml").read_text() + "fsp: 24\n")
    before = snapshot(other)
    result = invoke(["render", "-p", str(project), "-p", str(other), "--json"])
    assert result.exit_code == 2, result.output
    rows = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [r["ok"] for r in rows] == [True, False]
    assert rows[1]["exit_code"] == 2 and rows[1]["error"].startswith("cinema.yaml:")
    assert not snapshot_diff(before, snapshot(other))


# ---------------------------------------------------------------- the real console script


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([*cinema_command(), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env)


def assert_cli_bad_input(proc: subprocess.CompletedProcess, before: dict, root: Path) -> str:
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    assert proc.returncode == 2, f"exit {proc.returncode}\n{output}"
    assert proc.stderr.startswith("error: ") or "\nerror: " in proc.stderr, proc.stderr
    message = error_text(proc.stderr)
    assert "\n\n" not in message
    assert not snapshot_diff(before, snapshot(root))
    return message


def test_console_script_outside_project(tmp_path):
    before = snapshot(tmp_path)
    message = assert_cli_bad_input(run_cli(["render"], tmp_path), before, tmp_path)
    assert "not inside a cinema project" in message


def test_console_script_malformed_config(project):
    config = project / "cinema.yaml"
    text, line = set_top(config.read_text(), "seed", "seed: [0")
    config.write_text(text)
    before = snapshot(project)
    message = assert_cli_bad_input(run_cli(["render"], project / "keyframes"), before, project)
    assert re.match(r"cinema\.yaml:\d+: malformed YAML", message), message


def test_console_script_schema_error_json(project):
    board = project / "storyboard.yaml"
    text, line = set_shot_field(board.read_text(), "s02", "duration", "-1")
    board.write_text(text)
    before = snapshot(project)
    proc = run_cli(["status", "--json"], project)
    message = assert_cli_bad_input(proc, before, project)
    assert message.startswith(f"storyboard.yaml:{line}: shots.1.duration: "), message


def test_console_script_unknown_shot_regen(project):
    before = snapshot(project)
    message = assert_cli_bad_input(run_cli(["shot", "s99", "--regen"], project), before, project)
    assert "no shot 's99'" in message


def test_console_script_unknown_example(tmp_path):
    before = snapshot(tmp_path)
    message = assert_cli_bad_input(run_cli(["new", "film", "--example", "nope"], tmp_path), before, tmp_path)
    assert "no example 'nope'" in message


def test_console_script_bad_option_value_is_usage_error(project):
    """Typer/click usage errors are bad input too: exit 2, no traceback."""
    before = snapshot(project)
    proc = run_cli(["shot", "s01", "--duration", "long"], project)
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert "--duration" in proc.stderr
    assert not snapshot_diff(before, snapshot(project))


# ---------------------------------------------------------------- property: broken YAML

SIGNIFICANT = [":", ": ", "-", "- ", "[", "]", "{", "}", '"', "'", "\t", "#", "&a ", "*a", "!", "!!int ",
               "|", ">", "?", ",", "%", "@", "`", "\n", "  ", "\n  ", ": [", "{x: ", "\ufeff", "\x00",
               "\x85", "\u2028"]
TYPE_SWAPS = ["[1, 2]", "{a: 1}", '"text"', "-1", "0", "3.5", "null", "true", "''", "2020-01-01", ".inf",
              "[]", "{}", "1e999", "~", "|\n  block", "!!binary aGk=", "0x1F", "99999999999999999999"]


KINDS = ["delete-line", "delete-bytes", "insert-significant", "indent", "truncate", "unicode",
         "swap-type", "duplicate-line", "raw-bytes", "swap-lines"]


@st.composite
def mutation(draw) -> tuple:
    """One random edit, as a small readable tuple: (kind, position, line, payload)."""
    kind = draw(st.sampled_from(KINDS))
    pos = draw(st.integers(0, 20_000))  # clamped to the file when applied
    line = draw(st.integers(0, 400))
    payload: object = None
    if kind == "delete-bytes":
        payload = draw(st.integers(1, 40))
    elif kind == "insert-significant":
        payload = draw(st.sampled_from(SIGNIFICANT))
    elif kind == "indent":
        payload = (draw(st.sampled_from([" ", "  ", "    ", "\t", "-"])), draw(st.booleans()))
    elif kind == "unicode":
        payload = draw(st.text(min_size=1, max_size=8))
    elif kind == "swap-type":
        payload = draw(st.sampled_from(TYPE_SWAPS))
    elif kind == "raw-bytes":
        payload = draw(st.binary(min_size=1, max_size=6))
    elif kind == "swap-lines":
        payload = draw(st.integers(0, 400))
    return kind, pos, line, payload


def apply_mutation(data: bytes, edit: tuple) -> bytes:
    kind, pos, li, payload = edit
    pos = min(pos, len(data))
    lines = data.split(b"\n")
    li = li % len(lines)
    if kind == "delete-line":
        del lines[li]
    elif kind == "delete-bytes":
        return data[:pos] + data[pos + payload:]
    elif kind == "insert-significant":
        return data[:pos] + payload.encode() + data[pos:]
    elif kind == "indent":
        change, add = payload[0].encode(), payload[1]
        if add:
            lines[li] = change + lines[li]
        else:
            lines[li] = lines[li][len(change):] if lines[li].startswith(change) else lines[li].lstrip()
    elif kind == "truncate":
        return data[:pos]
    elif kind == "unicode":
        return data[:pos] + payload.encode("utf-8", "surrogatepass") + data[pos:]
    elif kind == "swap-type":
        keyed = [i for i, row in enumerate(lines) if re.match(rb"^\s*-?\s*[A-Za-z_]+:\s*\S", row)]
        if keyed:
            i = keyed[li % len(keyed)]
            key = re.match(rb"^(\s*-?\s*[A-Za-z_]+:)", lines[i])[1]
            lines[i] = key + b" " + payload.encode()
    elif kind == "duplicate-line":
        lines.insert(li, lines[li])
    elif kind == "raw-bytes":
        return data[:pos] + payload + data[pos:]
    else:  # swap-lines
        j = payload % len(lines)
        lines[li], lines[j] = lines[j], lines[li]
    return b"\n".join(lines)


# The second command per file: `story` for cinema.yaml (a mutation may leave a valid but
# huge resolution; story does not draw), `plan` for the others.
SECOND = {"cinema.yaml": "story", "script.yaml": "plan", "storyboard.yaml": "plan"}
# A broken file may legitimately be reported through another file: a script whose scene
# ids changed makes the (valid) storyboard name scenes that no longer exist.
MAY_NAME = {"cinema.yaml": ("cinema.yaml",), "script.yaml": ("script.yaml", "storyboard.yaml"),
            "storyboard.yaml": ("storyboard.yaml",)}


@pytest.mark.parametrize("file", FILES)
def test_broken_yaml_never_crashes(rendered, file):
    """Random damage to one project file: `status` (read-only) and a writing command
    exit 0 or 2, never 1 nor an uncaught exception; `status` never writes; an exit 2
    names the file and leaves the project exactly as it was."""
    original = (rendered / file).read_bytes()

    @settings(max_examples=18, deadline=None, database=None,
              phases=(Phase.explicit, Phase.generate),  # no shrinking: keep the run short
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(mutation(), min_size=1, max_size=3))
    def check(edits: list[tuple]):
        data = original
        for edit in edits:
            data = apply_mutation(data, edit)
        if data == original:
            return
        with tempfile.TemporaryDirectory() as tmp:
            root = copy_project(rendered, Path(tmp) / "p")
            (root / file).write_bytes(data)
            for command in ("status", SECOND[file]):
                before = snapshot(root)
                result = invoke([command, "-p", str(root)])
                output = result.stdout + result.stderr
                assert "Traceback" not in output, output
                assert result.exit_code in (0, 2), f"{command}: exit {result.exit_code}\n{output}"
                if command == "status":
                    assert not snapshot_diff(before, snapshot(root)), "status changed files"
                if result.exit_code == 2:
                    message = error_text(result.stderr)
                    assert any(name in message for name in MAY_NAME[file]), (
                        f"{command}: the message names no project file:\n{message}")
                    changed = snapshot_diff(before, snapshot(root))
                    assert not changed, f"{command} exited 2 but changed {changed}:\n{message}"

    check()
