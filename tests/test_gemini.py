"""The gemini storyboarder against a real HTTP server on 127.0.0.1 that speaks Gemini's
REST shape (POST /v1beta/models/{model}:generateContent), with the real google-genai
client pointed at it through GOOGLE_GEMINI_BASE_URL (or story.options.base_url).
The `cinema` commands run in-process; nothing here touches the real network.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cinema_cli.cli.app import app
from cinema_cli.project.create import create_project
from cinema_cli.story.base import shot_seed
from cinema_cli.story.prompts import render

KEY = "AIzaFAKE-test-key-0123456789abcdef"  # must never appear in a file, an output or a log
MODEL = "gemini-test"

SCRIPT = """\
title: Night Ferry
logline: Two strangers share the last ferry across the harbour.
style: cold blue harbour light
characters:
  - name: Ana
    description: woman in her 30s, red raincoat, short black hair
  - name: Ben
    description: old ferryman, white beard, navy cap
scenes:
  - id: dock
    location: a wooden ferry dock
    time: dusk
    beats:
      - <Ana> runs along the dock as the ferry horn sounds
      - <Ben> holds the gate open for her
  - id: deck
    location: the open deck of a small ferry
    time: night
    beats:
      - <Ana> and <Ben> watch the city lights recede
"""

CONFIG = """\
resolution: {width: 128, height: 64}
fps: 8
shot_seconds: 1.0
story:
  backend: %(backend)s
  options: %(options)s
"""
GEMINI_OPTIONS = f"{{model: {MODEL}, timeout: 5, retries: 2, backoff: 0.01, min_seconds: 0.5, max_seconds: 2}}"

VALID = {"shots": [
    {"id": "s01", "scene": "dock", "caption": "Wide shot of a wooden dock at dusk, <Ana> running, low sun.",
     "characters": ["Ana"], "camera": "wide, pan-right", "duration": 1.5, "transition": "cut", "dialogue": None},
    {"id": "s02", "scene": "dock", "caption": "<Ben> holds the gate open, warm lantern light, eye level.",
     "characters": ["Ben"], "camera": "medium, static", "duration": 1.0, "transition": "cut",
     "dialogue": "Last one tonight."},
    {"id": "s03", "scene": "deck", "caption": "<Ana> and <Ben> at the rail, city lights behind, cold blue night.",
     "characters": ["Ana", "Ben"], "camera": "close-up, push-in", "duration": 2.0, "transition": "crossfade",
     "dialogue": None},
]}


# ---------------------------------------------------------------- the fake Gemini


@dataclass
class Answer:
    status: int = 200
    body: dict | None = None
    headers: dict = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (cut short when the server closes)


@dataclass
class Seen:
    path: str
    headers: dict
    body: dict
    at: float

    @property
    def texts(self) -> list[tuple[str, str]]:
        return [(c["role"], c["parts"][0]["text"]) for c in self.body["contents"]]


def reply(payload) -> Answer:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return Answer(body={
        "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP",
                        "index": 0}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 10, "totalTokenCount": 20},
        "modelVersion": MODEL,
    })


def failure(code: int, status: str, message: str = "failed", headers: dict | None = None) -> Answer:
    return Answer(code, {"error": {"code": code, "message": message, "status": status}}, headers or {})


class FakeGemini:
    """Answers queued per test, in order; the last one repeats. Records every request."""

    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.requests: list[Seen] = []
        self.closing = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                fake.requests.append(Seen(self.path, dict(self.headers), body, time.monotonic()))
                if not re.fullmatch(r"/v1beta/models/[\w.-]+:generateContent", self.path):
                    answer = failure(404, "NOT_FOUND", f"no route {self.path}")
                else:
                    answer = fake.answers.pop(0) if len(fake.answers) > 1 else fake.answers[0]
                if answer.delay:
                    fake.closing.wait(answer.delay)
                data = json.dumps(answer.body or {}).encode()
                try:
                    self.send_response(answer.status)
                    for name, value in {"Content-Type": "application/json", **answer.headers}.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def queue(self, *answers: Answer) -> None:
        self.answers.extend(answers)

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def fake(monkeypatch):
    server = FakeGemini()
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.url)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    yield server
    server.close()


@pytest.fixture(autouse=True)
def no_key_anywhere(caplog):
    """Every test: the key is in no log record, and in no file of any project it made."""
    caplog.set_level(logging.DEBUG)
    made: list[Path] = []
    yield made
    for phase in ("setup", "call"):
        for record in caplog.get_records(phase):
            assert KEY not in record.getMessage(), record
    for root in made:
        for path in root.rglob("*"):
            if path.is_file():
                assert KEY.encode() not in path.read_bytes(), path


def make_project(tmp_path: Path, made: list[Path], backend: str = "gemini", options: str = GEMINI_OPTIONS) -> Path:
    root = create_project(tmp_path / "film")
    (root / "script.yaml").write_text(SCRIPT, encoding="utf-8")
    (root / "cinema.yaml").write_text(CONFIG % {"backend": backend, "options": options}, encoding="utf-8")
    made.append(root)
    return root


@pytest.fixture
def project(tmp_path, no_key_anywhere) -> Path:
    return make_project(tmp_path, no_key_anywhere)


def cinema(project: Path, *args: str, rc: int = 0):
    result = CliRunner().invoke(app, [*args, "-p", str(project)])
    assert KEY not in result.stdout + result.stderr
    assert result.exit_code == rc, f"exit {result.exit_code}\n{result.stdout}\n{result.stderr}\n{result.exception!r}"
    return result


def cinema_json(project: Path, *args: str, rc: int = 0) -> dict:
    return json.loads(cinema(project, *args, "--json", rc=rc).stdout.strip().splitlines()[-1])


def shots(project: Path) -> list[dict]:
    return yaml.safe_load((project / "storyboard.yaml").read_text(encoding="utf-8"))["shots"]


def expected(board: dict) -> list[dict]:
    """A reply's shots as storyboard.yaml writes them: seeded by id, defaults left out."""
    out = []
    for shot in board["shots"]:
        row = {**shot, "seed": shot_seed(0, shot["id"])}
        if row["dialogue"] is None:
            del row["dialogue"]
        out.append(row)
    return out


def set_option(project: Path, old: str, new: str) -> None:
    path = project / "cinema.yaml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


def snapshot(project: Path) -> dict[str, bytes]:
    return {str(p.relative_to(project)): p.read_bytes() for p in sorted(project.rglob("*")) if p.is_file()
            and "lock" not in p.name}


# ---------------------------------------------------------------- a good answer


def test_valid_answer_becomes_the_storyboard(fake, project):
    fake.queue(reply(VALID))
    data = cinema_json(project, "story")
    assert data["ok"] and data["rebuilt"]["story"] is True
    assert shots(project) == expected(VALID)
    assert cinema_json(project, "status")["story"] == "done"

    [request] = fake.requests
    assert request.path == f"/v1beta/models/{MODEL}:generateContent"
    assert request.headers["x-goog-api-key"] == KEY  # a header, never the URL
    generation = request.body["generationConfig"]
    assert generation["responseMimeType"] == "application/json"
    shot = generation["responseSchema"]["properties"]["shots"]["items"]
    assert shot["properties"]["scene"]["enum"] == ["dock", "deck"]
    assert shot["properties"]["characters"]["items"]["enum"] == ["Ana", "Ben"]
    assert (shot["properties"]["duration"]["minimum"], shot["properties"]["duration"]["maximum"]) == (0.5, 2)
    assert "seed" not in shot["properties"] and "locked" not in shot["properties"]
    [(role, prompt)] = request.texts
    assert role == "user"
    for needle in ("Night Ferry", "red raincoat", "white beard", "<Ben> holds the gate open for her",
                   "about 3 shots", "from 0.5 to 2", "<Ana>, <Ben>", "lighting and camera angle",
                   "setting and atmosphere", "action and expression", "visual composition"):
        assert needle in prompt, needle


def test_base_url_from_cinema_yaml(fake, tmp_path, no_key_anywhere, monkeypatch):
    monkeypatch.delenv("GOOGLE_GEMINI_BASE_URL")
    root = make_project(tmp_path, no_key_anywhere,
                        options=GEMINI_OPTIONS.replace("}", f", base_url: '{fake.url}'}}"))
    fake.queue(reply(VALID))
    cinema(root, "story")
    assert len(fake.requests) == 1 and shots(root) == expected(VALID)


def test_changing_transport_options_makes_nothing_stale(fake, project):
    fake.queue(reply(VALID))
    cinema(project, "story")
    set_option(project, "timeout: 5, retries: 2", "timeout: 9, retries: 3")
    assert cinema_json(project, "status")["story"] == "done"
    set_option(project, "min_seconds: 0.5", "min_seconds: 0.25")
    assert cinema_json(project, "status")["story"] == "stale"


# ---------------------------------------------------------------- validation and repair turns


def test_malformed_then_valid_is_repaired(fake, project):
    fake.queue(reply("Here is your storyboard: {oops"), reply(VALID))
    cinema(project, "story")
    assert shots(project) == expected(VALID)
    first, second = fake.requests
    turns = second.texts
    assert [role for role, _ in turns] == ["user", "model", "user"]
    assert turns[0] == first.texts[0]
    assert turns[1][1] == "Here is your storyboard: {oops"
    assert "not valid JSON" in turns[2][1]


def test_every_problem_is_sent_back_at_once(fake, project):
    bad = json.loads(json.dumps(VALID))
    bad["shots"][0].update(caption="<Zed> waves from the dock.", characters=["Zed"])
    bad["shots"][1].update(id="s01", duration=30, scene="moon")
    bad["shots"][2].update(caption="   ", camera="sideways")
    fake.queue(reply(bad), reply(VALID))
    cinema(project, "story")
    repair = fake.requests[1].texts[2][1]
    for needle in ("shots.0.characters.0: shot s01: character 'Zed' is not in the script (cast: Ana, Ben)",
                   "shots.1.duration: 30 s is outside the allowed 0.5 to 2 s",
                   "shots: duplicate id s01",
                   "shots.2.caption: caption is empty",
                   "shots.2.camera: unknown camera word 'sideways'",
                   "shots.1.scene: shot s01: scene 'moon' is not in the script"):
        assert needle in repair, (needle, repair)
    assert shots(project) == expected(VALID)


def test_never_valid_is_a_clear_error_and_changes_nothing(fake, project):
    cinema(project, "story", "--llm", "offline")
    before = snapshot(project)
    bad = json.loads(json.dumps(VALID))
    bad["shots"][0]["characters"] = ["Ana", "Zed"]
    fake.queue(reply(bad))
    result = cinema(project, "story", "--force", rc=1)
    assert len(fake.requests) == 3  # the first answer and two repair turns
    assert "Gemini gave no valid storyboard in 3 tries" in result.stderr
    assert "character 'Zed' is not in the script" in result.stderr
    assert "nothing was written" in result.stderr
    assert snapshot(project) == before


# ---------------------------------------------------------------- transport


def test_429_waits_as_long_as_retry_after_says(fake, project):
    fake.queue(failure(429, "RESOURCE_EXHAUSTED", "slow down", {"Retry-After": "1"}), reply(VALID))
    cinema(project, "story")
    first, second = fake.requests
    assert 0.95 <= second.at - first.at < 3.0  # the backoff alone would be 0.01 s
    assert shots(project) == expected(VALID)


def test_500s_until_the_retry_budget_is_spent(fake, project):
    fake.queue(failure(500, "INTERNAL", "backend exploded"))
    result = cinema(project, "story", rc=1)
    assert len(fake.requests) == 3  # retries: 2
    assert "500 INTERNAL: backend exploded on all 3 attempts" in result.stderr
    assert not (project / "storyboard.yaml").exists()


def test_slow_server_times_out(fake, project):
    set_option(project, "timeout: 5", "timeout: 1")
    fake.queue(Answer(body={}, delay=30))
    started = time.monotonic()
    result = cinema(project, "story", rc=1)
    assert time.monotonic() - started < 5
    assert "did not answer within 1 s" in result.stderr
    assert len(fake.requests) == 1 and not (project / "storyboard.yaml").exists()


@pytest.mark.parametrize("code, status", [(401, "UNAUTHENTICATED"), (403, "PERMISSION_DENIED")])
def test_bad_key(fake, project, code, status):
    fake.queue(failure(code, status, f"API key {KEY} is not valid"))  # a server that echoes it
    result = cinema(project, "story", rc=2)
    assert "refused the API key from GEMINI_API_KEY" in result.stderr
    assert "[redacted]" in result.stderr
    assert len(fake.requests) == 1


@pytest.mark.parametrize("answer", [
    Answer(body={"promptFeedback": {"blockReason": "SAFETY"}}),
    Answer(body={"candidates": [{"finishReason": "SAFETY", "index": 0}]}),
], ids=["prompt-blocked", "answer-stopped"])
def test_safety_blocked(fake, project, answer):
    fake.queue(answer)
    result = cinema(project, "story", rc=1)
    assert "SAFETY" in result.stderr and "offline storyboarder" in result.stderr
    assert len(fake.requests) == 1 and not (project / "storyboard.yaml").exists()


def test_connection_refused(project, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    result = cinema(project, "story", rc=1)
    assert f"cannot reach Gemini at http://127.0.0.1:{port}" in result.stderr
    assert "no network" in result.stderr


def test_no_key(fake, project, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY")
    result = cinema(project, "story", rc=2)
    assert "GEMINI_API_KEY" in result.stderr and "offline" in result.stderr
    assert not fake.requests and not (project / "storyboard.yaml").exists()
    cinema(project, "status")  # a gemini project opens without a key


def test_offline_is_the_default_and_says_so(tmp_path, no_key_anywhere, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    root = create_project(tmp_path / "plain")
    data = cinema_json(root, "story")
    assert data["rebuilt"]["story"] is True
    assert any("offline storyboarder" in n and "--llm gemini" in n for n in data["notices"])


def test_key_is_never_written_or_logged(fake, project, caplog):
    """The server echoes the key in every error; cinema shows none of it anywhere."""
    echo = f"request with key={KEY} and header x-goog-api-key: {KEY}"
    fake.queue(failure(503, "UNAVAILABLE", echo), reply(VALID))
    cinema(project, "story")
    fake.answers[:] = [failure(400, "INVALID_ARGUMENT", echo)]
    result = cinema(project, "story", "--force", rc=1)
    assert "[redacted]" in result.stderr
    assert any("retrying" in r.getMessage() for r in caplog.records)  # the 503 was logged
    # (the autouse fixture then checks every file of the project and every log record)


# ---------------------------------------------------------------- hand edits and --llm


def test_llm_override_respects_hand_edits_and_locks(fake, tmp_path, no_key_anywhere):
    root = make_project(tmp_path, no_key_anywhere, backend="offline", options="{}")
    cinema(root, "story")
    board = yaml.safe_load((root / "storyboard.yaml").read_text())
    board["shots"][0].update(caption="<Ana> at the dock, my own words.", locked=True)
    (root / "storyboard.yaml").write_text(yaml.safe_dump(board, sort_keys=False))
    hand = (root / "storyboard.yaml").read_bytes()

    fake.queue(reply(VALID))
    data = cinema_json(root, "story", "--llm", "gemini")
    assert data["rebuilt"]["story"] is False and not fake.requests
    assert any("edited by hand" in n for n in data["notices"])
    assert (root / "storyboard.yaml").read_bytes() == hand

    data = cinema_json(root, "story", "--llm", "gemini", "--force")
    assert data["rebuilt"]["story"] is True and len(fake.requests) == 1
    assert fake.requests[0].path == "/v1beta/models/gemini-2.5-flash:generateContent"  # the default model
    assert shots(root) == [board["shots"][0], *expected(VALID)[1:]]  # the locked shot survived

    # A later plain run (configured: offline) keeps what --llm gemini wrote...
    written = (root / "storyboard.yaml").read_bytes()
    assert cinema_json(root, "story")["rebuilt"]["story"] is False
    (root / "script.yaml").write_text(SCRIPT.replace("city lights", "harbour lights"))
    data = cinema_json(root, "story")
    assert data["rebuilt"]["story"] is False and (root / "storyboard.yaml").read_bytes() == written
    assert any("cinema story --llm gemini" in n for n in data["notices"])
    # ...until asked again.
    assert cinema_json(root, "story", "--llm", "gemini")["rebuilt"]["story"] is True


def test_unknown_backend_is_bad_input(project):
    result = cinema(project, "story", "--llm", "nosuch", rc=2)
    assert "unknown story backend 'nosuch'" in result.stderr


# ---------------------------------------------------------------- one shot, rewritten


NIGHT = {"caption": "<Ben> holds the gate open under a single lamp, rain on the planks, deep night.",
         "characters": ["Ben"], "camera": "medium, static", "duration": 1.0, "transition": "cut",
         "dialogue": "Last one tonight."}


def test_rewrite_one_shot_then_render_redoes_only_it(fake, tmp_path, no_key_anywhere):
    root = make_project(tmp_path, no_key_anywhere, backend="offline", options="{}")
    first = cinema_json(root, "render")
    assert first["ok"] and first["rebuilt"]["shots"] == ["s01", "s02", "s03"]
    before = shots(root)

    stray = {**NIGHT, "caption": "<Cat> sits by the gate at night.", "characters": ["Cat"]}
    fake.queue(reply(stray), reply(NIGHT))  # one repair turn on the way
    data = cinema_json(root, "story", "--shot", "s02", "make it night", "--llm", "gemini")
    assert data["shot"]["caption"] == NIGHT["caption"]

    after = shots(root)
    assert after[0] == before[0] and after[2] == before[2]
    assert after[1] == {**before[1], **NIGHT}  # same id, scene, seed
    request = fake.requests[0]
    [(_, prompt)] = request.texts
    assert "make it night" in prompt
    assert before[0]["caption"] in prompt and before[2]["caption"] in prompt  # its neighbours
    schema = request.body["generationConfig"]["responseSchema"]
    assert "id" not in schema["properties"] and "scene" not in schema["properties"]
    assert "character 'Cat' is not in the script" in fake.requests[1].texts[2][1]

    # Only s02 and whatever was drawn with s02's keyframe as context are redone.
    rows = cinema_json(root, "status")["shots"]
    dependents = [r["id"] for r in rows if any(c["shot"] == "s02" for c in r["context"])]
    assert [r["id"] for r in rows if r["keyframe"] != "done"] == ["s02", *dependents]
    again = cinema_json(root, "render")
    assert again["rebuilt"]["story"] is False and again["rebuilt"]["film"] is True
    assert again["rebuilt"]["keyframes"] == ["s02", *dependents]
    assert again["rebuilt"]["shots"][0] == "s02" and set(again["rebuilt"]["shots"]) <= {"s02", *dependents}


def test_rewrite_refuses_bad_requests_before_asking(fake, project):
    fake.queue(reply(VALID))
    cinema(project, "story")
    before = snapshot(project)
    assert "no shot 's09'" in cinema(project, "story", "--shot", "s09", "make it night", rc=2).stderr
    assert "needs a note" in cinema(project, "story", "--shot", "s02", rc=2).stderr
    assert "needs --shot" in cinema(project, "story", "make it night", rc=2).stderr
    assert "cannot rewrite" in cinema(project, "story", "--shot", "s02", "night", "--llm", "offline", rc=2).stderr
    assert len(fake.requests) == 1 and snapshot(project) == before


def test_caption_frame_prompt_renders():
    text = render("caption_frame", cast="- <Ana>: woman in a red raincoat")
    assert "<Ana>" in text and "only when you are certain" in text
