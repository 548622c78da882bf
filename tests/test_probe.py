"""The adversarial probe: each class of failure it found, generated, kept as tests.

Every case asserts an exit code, no traceback, and for bad input a byte-identical tree
outside `.cinema/` (and, where the input can be judged before the lock, the lock file
untouched too). Classes (see issue 19):
1 lost updates, 2 the API key through an echoing server, 3 writes through symlinks,
4 tracebacks on input users and tools produce, 5 bounded board text, 6 shots too short
to join, 7 batch renders that stop, 8 the smaller items (validate first, non-image
reference, damaged film, SIGINT).

Real processes, a real HTTP server on loopback, real ffmpeg; nothing mocked.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from cinema_cli.cli import output
from cinema_cli.cli.app import app
from cinema_cli.errors import ProjectFileError
from cinema_cli.project.create import create_project
from cinema_cli.project.manifest import Manifest
from cinema_cli.project.project import Project
from cinema_cli.review.sheet import _fit

KEY = "AIzaPROBE-key-0123456789abcdefXYZ"  # must never leave the process

SCRIPT = """\
title: Probe
style: flat grey light
characters:
  - name: Ana
    description: woman in a red coat
    references: [characters/ana.png]
scenes:
  - id: one
    location: a dock
    time: dusk
    beats:
      - <Ana> runs along the dock
      - the ferry leaves
  - id: two
    location: a deck
    time: night
    beats:
      - <Ana> watches the lights
"""
CONFIG = """\
resolution: {width: 128, height: 64}
fps: 8
shot_seconds: 1.0
story:
  backend: %(backend)s
  options: %(options)s
"""

FORCE_TERMINAL = {"force_terminal": True, "highlight": False, "soft_wrap": True}


# ---------------------------------------------------------------- helpers


def cinema_command() -> list[str]:
    script = Path(sys.executable).parent / "cinema"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "cinema_cli"]


def run(args: list[str], cwd: Path | None = None, env: dict | None = None, timeout: float = 120):
    return subprocess.run([*cinema_command(), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def invoke(args: list[str]):
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {type(result.exception).__name__}: {result.exception!r}\n{result.output}")
    return result


def no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


def tree(root: Path, *, machine: bool = False) -> dict[str, tuple]:
    """Every entry under `root` (outside .cinema/ unless `machine`): kind, bytes, mtime."""
    entries: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root):
        rel_folder = Path(folder).relative_to(root)
        if not machine and rel_folder.parts[:1] == (".cinema",):
            continue
        for name in dirs + files:
            path = Path(folder, name)
            rel = str(path.relative_to(root))
            if not machine and rel == ".cinema":
                continue
            st_ = path.lstat()
            if path.is_symlink():
                entries[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                entries[rel] = ("dir",)
            else:
                entries[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest(), st_.st_mtime_ns)
    return entries


def lock_state(root: Path) -> tuple | None:
    lock = root / ".cinema" / "lock"
    return (lock.read_bytes(), lock.stat().st_mtime_ns) if lock.exists() else None


def assert_refused(result_code: int, out: str, root: Path, before: dict, lock_before, *, code: int = 2) -> None:
    no_traceback(out)
    assert result_code == code, f"exit {result_code}, expected {code}\n{out}"
    assert "error:" in out
    assert tree(root) == before, "bad input changed the project"
    assert lock_state(root) == lock_before, "bad input touched the lock file"


def shots(root: Path) -> list[dict]:
    return yaml.safe_load((root / "storyboard.yaml").read_text(encoding="utf-8"))["shots"]


def set_board(root: Path, change: Callable[[list[dict]], None]) -> None:
    board = shots(root)
    change(board)
    (root / "storyboard.yaml").write_text(yaml.safe_dump({"shots": board}, sort_keys=False), encoding="utf-8")


def make_project(parent: Path, name: str = "film", backend: str = "offline", options: str = "{}") -> Path:
    root = create_project(parent / name)
    (root / "characters").mkdir(exist_ok=True)
    Image.new("RGB", (32, 32), (200, 30, 30)).save(root / "characters" / "ana.png")
    (root / "script.yaml").write_text(SCRIPT, encoding="utf-8")
    (root / "cinema.yaml").write_text(CONFIG % {"backend": backend, "options": options}, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    root = make_project(tmp_path_factory.mktemp("probe"))
    result = invoke(["render", "-p", str(root)])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def project(rendered, tmp_path) -> Path:
    return Path(shutil.copytree(rendered, tmp_path / "film", symlinks=True))


@pytest.fixture
def terminal(monkeypatch):
    """The consoles as on a terminal: rich markup is interpreted (the crash needs it)."""
    monkeypatch.setattr(output, "out", Console(**FORCE_TERMINAL))
    monkeypatch.setattr(output, "err", Console(stderr=True, **FORCE_TERMINAL))


def bomb_png(path: Path) -> None:
    """A few-KB PNG that declares 144 megapixels."""
    Image.new("1", (12_000, 12_000)).save(path, optimize=True)


# ---------------------------------------------------------------- 1: lost updates


def test_concurrent_shot_edits_never_lose_one(project):
    """Pairs of `cinema shot` edits on different shots at the same moment: each exits 0
    with its edit on disk, or is refused (exit 1, lock held) — never both 0 with one lost."""
    ids = [s["id"] for s in shots(project)]
    for trial in range(4):
        a, b = ids[trial % len(ids)], ids[(trial + 1) % len(ids)]
        captions = {a: f"edit {trial} of {a}, a wide dock", b: f"edit {trial} of {b}, a wide deck"}
        procs = {sid: subprocess.Popen([*cinema_command(), "shot", sid, "--caption", text, "-p", str(project)],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for sid, text in captions.items()}
        done = {sid: (p.wait(60), p.stdout.read() + p.stderr.read()) for sid, p in procs.items()}
        final = {s["id"]: s["caption"] for s in shots(project)}
        for sid, (code, out) in done.items():
            no_traceback(out)
            if code == 0:
                assert final[sid] == captions[sid], f"trial {trial}: {sid}'s edit was lost"
            else:
                assert code == 1 and "another cinema process" in out, out


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pair=st.permutations(range(3)).map(lambda p: p[:2]),
       caption=st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")) | st.sampled_from("[]/\\"),
                       min_size=1, max_size=40).filter(lambda c: c.strip() and "<" not in c and ">" not in c))
def test_edit_applies_to_the_storyboard_as_it_is_under_the_lock(project, pair, caption):
    """Another writer changes storyboard.yaml between this edit's validation and its
    lock: the edit is made on what is on disk then, and the other change survives."""
    from cinema_cli.project import lock as lock_module

    ids = [s["id"] for s in shots(project)]
    mine, theirs = ids[pair[0]], ids[pair[1]]
    other = f"the other writer's caption {len(caption)}"
    real_acquire = lock_module.ProjectLock.acquire

    def acquire_after_another_writer(self):
        set_board(project, lambda board: board[pair[1]].update(caption=other))
        real_acquire(self)

    lock_module.ProjectLock.acquire = acquire_after_another_writer
    try:
        result = invoke(["shot", mine, "--caption", caption, "-p", str(project)])
    finally:
        lock_module.ProjectLock.acquire = real_acquire
    assert result.exit_code == 0, result.output
    final = {s["id"]: s["caption"] for s in shots(project)}
    assert final[theirs] == other  # the other writer's change survived
    assert final[mine] == caption.strip()  # and this edit landed


# ---------------------------------------------------------------- 2: the key through an echoing server


class EchoServer:
    """Speaks Gemini's REST path; each answer is made from the request's headers, as a
    misconfigured gateway does. `answers`: functions headers -> (status, body bytes)."""

    def __init__(self) -> None:
        self.answers: list[Callable[[dict], tuple[int, bytes]]] = []
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.requests += 1
                answer = server.answers.pop(0) if len(server.answers) > 1 else server.answers[0]
                status, body = answer(dict(self.headers))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _echo(headers: dict) -> str:
    return " ".join(f"{k}: {v}" for k, v in headers.items())


def error_echo(code: int, status: str) -> Callable[[dict], tuple[int, bytes]]:
    return lambda h: (code, json.dumps({"error": {"code": code, "message": f"bad request {_echo(h)}",
                                                  "status": f"{status} {h.get('x-goog-api-key')}"}}).encode())


def answer(text_of: Callable[[dict], str]) -> Callable[[dict], tuple[int, bytes]]:
    return lambda h: (200, json.dumps({"candidates": [{"content": {"role": "model", "parts": [
        {"text": text_of(h)}]}, "finishReason": "STOP", "index": 0}]}).encode())


def storyboard_json(caption_of: Callable[[str], str], camera: str = "wide, static") -> Callable[[dict], str]:
    def text(headers: dict) -> str:
        key = headers.get("x-goog-api-key", "")
        return json.dumps({"shots": [
            {"id": "s01", "scene": "one", "caption": caption_of(key), "characters": [], "camera": camera,
             "duration": 1.0, "transition": "cut", "dialogue": None},
            {"id": "s02", "scene": "two", "caption": "<Ana> watches the lights", "characters": ["Ana"],
             "camera": "medium, static", "duration": 1.0, "transition": "cut", "dialogue": f"say {key}"},
        ]})
    return text


RAW = {"not-json": b"<html>502 from the gateway</html>", "a-list": b"[1, 2]",
       "wrong-shape": b'{"promptFeedback": 3}', "wrong-parts": b'{"candidates": [{"content": {"parts": "x"}}]}'}

KEY_CASES = {
    # (answers, exit code, whether storyboard.yaml is written)
    "retry-status-echo": ([error_echo(503, "UNAVAILABLE"), answer(storyboard_json(lambda k: "a dock at dusk"))], 0, True),
    "valid-answer-echo": ([answer(storyboard_json(lambda k: f"a dock, the header was {k}"))], 0, True),
    # Never valid: the problems sent back and shown name the camera word, which is the key.
    "invalid-answer-echo": ([answer(lambda h: storyboard_json(lambda k: "a dock",
                                                              camera=f"wide, {h.get('x-goog-api-key')}")(h))], 1, False),
    "error-echo": ([error_echo(400, "INVALID_ARGUMENT")], 1, False),
    **{f"200-{name}": ([lambda h, b=body: (200, b)], 1, False) for name, body in RAW.items()},
}


@pytest.mark.parametrize("case, json_mode", [(case, False) for case in KEY_CASES] + [
    (case, True) for case in ("retry-status-echo", "valid-answer-echo", "invalid-answer-echo", "error-echo")])
def test_the_key_never_leaves_the_process(tmp_path, case, json_mode):
    answers, code, written = KEY_CASES[case]
    server = EchoServer()
    server.answers = list(answers)
    try:
        root = make_project(tmp_path, backend="gemini",
                            options="{model: gemini-probe, timeout: 5, retries: 1, backoff: 0.01}")
        before = tree(root)
        env = {"GEMINI_API_KEY": KEY, "GOOGLE_GEMINI_BASE_URL": server.url, "GOOGLE_API_KEY": ""}
        proc = run(["story", "-p", str(root), *(["--json"] if json_mode else [])], env=env)
    finally:
        server.close()
    out = proc.stdout + proc.stderr
    no_traceback(out)
    assert KEY not in out, out
    assert proc.returncode == code, out
    assert server.requests >= 1
    for path in root.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    if json_mode:
        assert json.loads(proc.stdout.strip().splitlines()[-1])["ok"] is (code == 0)
    if written:
        assert (root / "storyboard.yaml").is_file()
    else:
        assert tree(root) == before
    if case == "retry-status-echo":
        assert "retrying" in proc.stderr and "[redacted]" in proc.stderr
    if case.startswith("200-"):
        assert "not a Gemini response" in out or "returned no answer" in out, out


# ---------------------------------------------------------------- 3: symlinks


def outside_file(tmp_path: Path) -> Path:
    target = tmp_path / "outside" / "precious.txt"
    target.parent.mkdir(exist_ok=True)
    target.write_text("keep me\n")
    return target


def outside_dir(tmp_path: Path) -> Path:
    target = tmp_path / "outside" / "folder"
    target.mkdir(parents=True, exist_ok=True)
    (target / "precious.txt").write_text("keep me\n")
    return target


def relink(path: Path, target: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    path.symlink_to(target)


# (link in the project, what it points at, command, exit code: 0 the link is replaced, 2 refused)
SYMLINK_CASES = {
    "lock": (".cinema/lock", outside_file, ["render"], 2),
    "export-default": ("film.otio", outside_file, ["export", "--format", "otio"], 0),
    "board-html": ("board.html", outside_file, ["board"], 0),
    "board-png": ("board.png", outside_file, ["board"], 0),
    "storyboard": ("storyboard.yaml", None, ["shot", "s01", "--caption", "a wide dock at dusk"], 0),
    "manifest": (".cinema/manifest.json", outside_file, ["render"], 0),
    "film": ("film.mp4", outside_file, ["render"], 0),
    "keyframes-folder": ("keyframes", outside_dir, ["render"], 2),
    "shots-folder": ("shots", outside_dir, ["render"], 2),
    "state-folder": (".cinema", outside_dir, ["render"], 2),
    "tmp-folder": (".cinema/tmp", outside_dir, ["render"], 0),
    "cache-folder": (".cinema/cache", outside_dir, ["render"], 2),
    "memory-cache-folder": (".cinema/cache/memory", outside_dir, ["render"], 2),
}


@pytest.mark.parametrize("case", list(SYMLINK_CASES))
def test_nothing_is_written_through_a_symlink(project, tmp_path, case):
    link, make_target, command, code = SYMLINK_CASES[case]
    if make_target is None:  # the storyboard kept elsewhere: a copy of it
        target = tmp_path / "outside" / "storyboard.yaml"
        target.parent.mkdir(exist_ok=True)
        shutil.copy(project / link, target)
    else:
        target = make_target(tmp_path)
    set_board(project, lambda board: board[0].update(caption="changed so that render has work"))
    relink(project / link, target)
    outside_before = tree(tmp_path / "outside", machine=True)
    before = tree(project)
    result = invoke([*command, "-p", str(project)])
    no_traceback(result.output)
    assert result.exit_code == code, result.output
    assert tree(tmp_path / "outside", machine=True) == outside_before, "written outside the project"
    if code == 2:
        assert "outside the project" in result.output or "symlink" in result.output, result.output
        assert tree(project) == before
    else:
        assert not (project / link).is_symlink(), "the link should have been replaced by the file"


# ---------------------------------------------------------------- 4: tracebacks


MARKUP = st.text(st.sampled_from("[]/\\ab =#:"), min_size=1, max_size=24).filter(lambda t: t.strip())


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=MARKUP)
def test_rich_markup_in_user_text_prints_as_written(project, terminal, text):
    caption = f"a dock {text}"
    edited = invoke(["shot", "s01", "--caption", caption, "-p", str(project)])
    assert edited.exit_code == 0, edited.output
    assert " ".join(caption.split()) in " ".join(edited.stdout.split())
    for args in (["status"], ["shot", "s01"], ["plan", "--explain"]):
        result = invoke([*args, "-p", str(project)])
        assert result.exit_code == 0, result.output
    unknown = invoke(["shot", f"s9{text}", "-p", str(project)])  # the id ends up in the error
    assert unknown.exit_code == 2 and "error:" in unknown.stderr, unknown.output


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=30)
                      .filter(lambda t: "<" not in t and ">" not in t), min_size=2, max_size=5))
def test_board_takes_multi_line_captions(project, lines):
    caption = "a dock\n" + "\n".join(lines)
    set_board(project, lambda board: board[1].update(caption=caption))
    result = invoke(["board", "-p", str(project)])
    assert result.exit_code == 0, result.output
    assert (project / "board.png").is_file()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
MANIFESTS = JSON_VALUES | st.fixed_dictionaries({"version": st.just(1), "artifacts": JSON_VALUES}) | \
    st.fixed_dictionaries({"version": st.just(1), "artifacts": st.dictionaries(
        st.sampled_from(["story", "keyframes", "shots", "film"]),
        JSON_VALUES | st.dictionaries(st.sampled_from(["s01", "s02", "film", "storyboard"]),
                                      JSON_VALUES | st.fixed_dictionaries({"recipe": JSON_VALUES,
                                                                           "output": JSON_VALUES})))})


@settings(max_examples=40, deadline=None)
@given(data=MANIFESTS)
def test_manifest_of_any_shape_loads(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("manifest")
    path = folder / "manifest.json"  # an old single-file manifest, migrated on open
    path.write_text(json.dumps(data))
    manifest = Manifest(folder / "manifest", folder)
    for stage in ("story", "keyframes", "shots", "film"):
        for key in ("s01", "s02", "film", "storyboard"):
            record = manifest.get(stage, key)
            assert record is None or (isinstance(record.recipe, dict) and isinstance(record.output, str))


@pytest.mark.parametrize("data", [[], "x", 3, {"version": 1, "artifacts": []},
                                  {"version": 1, "artifacts": {"shots": [1]}},
                                  {"version": 1, "artifacts": {"shots": {"s01": {"recipe": [], "output": 1}}}}],
                         ids=["list", "string", "number", "artifacts-list", "stage-list", "record-types"])
def test_wrong_shape_manifest_is_rebuilt(project, data):
    (project / ".cinema" / "manifest.json").write_text(json.dumps(data))
    status = invoke(["status", "--json", "-p", str(project)])
    assert status.exit_code == 0, status.output
    result = invoke(["render", "--json", "-p", str(project)])
    assert result.exit_code == 0, result.output
    assert json.loads(invoke(["status", "--json", "-p", str(project)]).stdout)["film"] == "done"


@pytest.mark.parametrize("content", [b"Aborted.\n", b"", b"PK\x03\x04garbage", "truncated", "npy"])
def test_damaged_embedding_cache_is_rebuilt(project, content):
    import numpy as np

    files = list((project / ".cinema" / "cache" / "memory").glob("*.npz"))
    assert files, "the render should have cached embeddings"
    for path in files:
        if content == "truncated":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        elif content == "npy":
            np.save(path.with_suffix(""), np.zeros(3))
            path.with_suffix(".npy").replace(path)
        else:
            path.write_bytes(content)
    set_board(project, lambda board: board[2].update(caption="<Ana> watches the lights, the dock behind"))
    result = invoke(["render", "-p", str(project)])
    assert result.exit_code == 0, result.output


def test_decompression_bomb_as_reference_is_bad_input(project):
    bomb_png(project / "characters" / "ana.png")
    before, lock_before = tree(project), lock_state(project)
    for command in (["status"], ["render"], ["board"]):
        result = invoke([*command, "-p", str(project)])
        assert_refused(result.exit_code, result.output, project, before, lock_before)
        assert "script.yaml:6: characters.0.references.0" in result.output
        assert "decompression bomb" in result.output


def test_decompression_bomb_as_keyframe_is_damaged_and_redrawn(project):
    bomb_png(project / "keyframes" / "s02.png")
    status = json.loads(invoke(["status", "--json", "-p", str(project)]).stdout)
    row = next(r for r in status["shots"] if r["id"] == "s02")
    assert row["keyframe"] == "stale" and any("damaged" in why for why in row["stale_because"])
    board = invoke(["board", "-p", str(project)])
    assert board.exit_code == 0, board.output
    result = invoke(["render", "-p", str(project)])
    assert result.exit_code == 0, result.output
    with Image.open(project / "keyframes" / "s02.png") as image:
        assert image.size == (128, 64)


def test_weights_refused_by_weights_only_are_named_by_status(project):
    import torch

    class Payload:
        def __reduce__(self):
            return (os.getcwd, ())

    torch.save({"visual": Payload()}, project / "evil.pt")
    text = (project / "cinema.yaml").read_text()
    (project / "cinema.yaml").write_text(
        text + "memory: {embedder: clip, model: cinema-tiny-clip, weights: evil.pt}\n")
    before, lock_before = tree(project), lock_state(project)
    for command in (["status"], ["render"]):
        result = invoke([*command, "-p", str(project)])
        assert_refused(result.exit_code, result.output, project, before, lock_before)
        assert "cinema.yaml:7: memory.weights" in result.output and "weights_only" in result.output


# ---------------------------------------------------------------- 5: bounded board text


def test_huge_caption_is_fitted_in_bounded_time(project):
    caption = "<Ana> " + "a very long caption that goes on " * 1000  # 33 KB
    set_board(project, lambda board: board[0].update(caption=caption))
    started = time.monotonic()
    proc = run(["board", "-p", str(project)], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 60


@settings(max_examples=30, deadline=None)
@given(text=st.text(max_size=3000), width=st.integers(1, 400))
def test_fit_is_on_one_line_and_fits(text, width):
    from PIL import ImageDraw, ImageFont

    draw = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    font = ImageFont.load_default(size=13)
    fitted = _fit(draw, text, font, width)
    assert "\n" not in fitted
    assert fitted.endswith("…") or fitted == " ".join(text.split())
    if fitted != "…":
        assert draw.textlength(fitted, font=font) <= width


# ---------------------------------------------------------------- 6: shots too short to join


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fps=st.integers(1, 60), frames=st.integers(1, 6), position=st.integers(0, 2))
def test_short_shot_before_the_last_is_refused_with_its_line(rendered, project, fps, frames, position):
    for name in ("cinema.yaml", "storyboard.yaml"):  # as rendered: each example starts afresh
        shutil.copy(rendered / name, project / name)
    text = (project / "cinema.yaml").read_text()
    (project / "cinema.yaml").write_text(text.replace("fps: 8", f"fps: {fps}"))
    duration = frames / fps
    def change(board: list[dict]) -> None:
        for shot in board:
            shot["duration"] = 10.0  # long enough at any fps
        board[position]["duration"] = round(duration, 4)

    set_board(project, change)
    proj = Project.open(project)
    last = position == 2
    if frames >= 3 or last:
        proj.storyboard  # accepted
        return
    with pytest.raises(ProjectFileError) as err:
        proj.storyboard
    assert "storyboard.yaml:" in str(err.value) and f"shots.{position}.duration" in str(err.value)
    assert "at least 3 frames" in str(err.value)


def test_short_shots_render_or_are_refused(project):
    # 3 frames mid-film and 1 frame last: the film joins.
    set_board(project, lambda board: (board[1].update(duration=3 / 8), board[2].update(duration=1 / 8)))
    result = invoke(["render", "-p", str(project)])
    assert result.exit_code == 0, result.output
    # 1 frame mid-film: refused at validation, nothing touched.
    set_board(project, lambda board: board[1].update(duration=0.08))
    before, lock_before = tree(project), lock_state(project)
    result = invoke(["render", "-p", str(project)])
    assert_refused(result.exit_code, result.output, project, before, lock_before)
    assert "shots.1.duration" in result.output


# ---------------------------------------------------------------- 7: batch renders


@pytest.mark.parametrize("broken", ["keyframes", "shots"])
def test_batch_render_goes_on_after_a_disk_error(rendered, tmp_path, broken):
    a = Path(shutil.copytree(rendered, tmp_path / "a", symlinks=True))
    b = Path(shutil.copytree(rendered, tmp_path / "b", symlinks=True))
    for root in (a, b):
        set_board(root, lambda board: board[0].update(caption="a new take of the dock"))
    shutil.rmtree(a / broken)
    (a / broken).write_text("not a folder: the write fails as on a read-only or full disk\n")
    proc = run(["render", "-p", str(a), "-p", str(b), "--json"])
    no_traceback(proc.stdout + proc.stderr)
    assert proc.returncode == 1, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert [line["project"] for line in lines] == [str(a), str(b)]
    assert lines[0]["ok"] is False and lines[0]["exit_code"] == 1 and lines[0]["error"]
    assert lines[1]["ok"] is True and lines[1]["rebuilt"]["film"] is True


# ---------------------------------------------------------------- 8: the smaller items


BAD_INPUT_COMMANDS = [["render"], ["board"], ["export", "--format", "otio"], ["shot", "s01", "--caption", "x y"],
                      ["story", "--shot", "s01", "night"], ["shot", "s01", "--regen"], ["plan"]]


@pytest.mark.parametrize("command", BAD_INPUT_COMMANDS, ids=lambda c: "-".join(c[:2]))
@pytest.mark.parametrize("bad", ["yaml", "unknown-scene", "short-shot", "not-an-image-reference"])
def test_bad_input_never_touches_the_lock(project, command, bad):
    if bad == "yaml":
        (project / "storyboard.yaml").write_text("shots: [\n")
    elif bad == "unknown-scene":
        set_board(project, lambda board: board[0].update(scene="moon"))
    elif bad == "short-shot":
        set_board(project, lambda board: board[0].update(duration=0.1))
    else:
        (project / "characters" / "ana.png").write_text("not a picture\n")
    before, lock_before = tree(project, machine=True), lock_state(project)
    result = invoke([*command, "-p", str(project)])
    no_traceback(result.output)
    assert result.exit_code == 2, result.output
    assert tree(project, machine=True) == before, "bad input changed the project (.cinema/ included)"
    assert lock_state(project) == lock_before
    if bad == "not-an-image-reference":
        assert "script.yaml:6: characters.0.references.0" in result.output
        assert "not a readable image" in result.output


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_film_that_does_not_decode_is_damaged_not_edited(project, damage):
    film = project / "film.mp4"
    data = film.read_bytes()
    film.write_bytes(os.urandom(4096) if damage == "garbage" else data[: len(data) // 2])
    status = json.loads(invoke(["status", "--json", "-p", str(project)]).stdout)
    assert status["film"] == "stale" and any("damaged" in why for why in status["film_stale_because"])
    result = json.loads(invoke(["render", "--json", "-p", str(project)]).stdout)
    assert result["ok"] and result["rebuilt"]["film"] is True
    assert json.loads(invoke(["status", "--json", "-p", str(project)]).stdout)["film"] == "done"


def test_sigint_exits_130_says_what_was_kept_and_render_resumes(project):
    set_board(project, lambda board: [shot.update(caption=f"{shot['caption']}, a new take")
                                      for shot in board])
    log = project.parent / "render.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen([*cinema_command(), "render", "-p", str(project)], stdout=subprocess.PIPE,
                                stderr=stderr, text=True)
        deadline = time.monotonic() + 60
        while "[shots]" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "render finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    text = log.read_text()
    no_traceback(text)
    assert code == 130, text
    assert "interrupted" in text and "resume" in text and "kept" in text
    again = invoke(["render", "--json", "-p", str(project)])
    assert again.exit_code == 0, again.output
    assert json.loads(invoke(["status", "--json", "-p", str(project)]).stdout)["film"] == "done"
