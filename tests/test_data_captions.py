"""Dataset captions: Gemini through the real google-genai client against a Gemini-shaped
server on loopback (garbage, 429, 5xx, tags outside the cast), pending captions that a
later run retries, and sidecar captions the user wrote."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest

from cinema_cli.data.reader import Dataset
from data_support import make_letterboxed
from test_data import cinema, cinema_json, snapshot, write_config
from test_gemini import KEY, MODEL, FakeGemini, failure, reply

CAST = "characters:\n  - name: Ana\n    description: red raincoat\n  - name: Ben\n    description: white beard\n"
ANA = {"caption": "Wide shot, <Ana> in a red raincoat under a cold light.", "characters": ["Ana"]}
BEN = {"caption": "Close-up of <Ben>, white beard, low angle.", "characters": ["Ben"]}
BOTH = {"caption": "<Ana> meets <Ben> on a grey test-card night.", "characters": ["Ana", "Ben"]}


@pytest.fixture(scope="module")
def film(tmp_path_factory) -> Path:
    return make_letterboxed(tmp_path_factory.mktemp("captions") / "lb.mp4")


@pytest.fixture
def fake(monkeypatch):
    server = FakeGemini()
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.url)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    yield server
    server.close()


def dataset(tmp_path: Path, backend: str = "gemini") -> tuple[Path, Path]:
    root = tmp_path / "ds"
    write_config(root, boundaries={"detector": "scenedetect"}, filters={"subtitles": False},
                 keyframes={"short_side": 64},
                 captions={"backend": backend, "model": MODEL, "retries": 1, "backoff": 0.01, "timeout": 5})
    cast = tmp_path / "cast.yaml"
    cast.write_text(CAST)
    return root, cast


def no_key_in(root: Path) -> None:
    for name, data in snapshot(root).items():
        assert KEY.encode() not in data, name


def test_gemini_captions_survive_garbage_429_5xx_and_foreign_tags(fake, film, tmp_path):
    root, cast = dataset(tmp_path)
    fake.queue(reply("Sure! {not json"), reply(ANA),  # shot 0: garbage, then repaired
               failure(429, "RESOURCE_EXHAUSTED", headers={"Retry-After": "0"}),  # shot 1: rate limited,
               reply({"caption": "<Zed> glares at <Ben>.", "characters": ["Zed", "Ben"]}),  # then a stranger,
               reply(BEN),  # then repaired
               failure(503, "UNAVAILABLE"), reply(BOTH))  # the sample's global caption after a 5xx
    data = cinema_json("data", "prepare", str(film), "-o", str(root), "--cast", str(cast))
    assert data["ok"] and data["films"]["lb"]["state"] == "done"
    first = fake.requests[0].body["contents"][0]["parts"]
    assert "Tag a person as <Name>" in first[0]["text"] and "<Ana>: red raincoat" in first[0]["text"]
    keyframe = (root / "films" / "lb" / "keyframes" / "000000.jpg").read_bytes()
    image = first[1]["inlineData"]  # the SDK sends the bytes as URL-safe base64
    assert image.get("mimeType", image.get("mime_type")) == "image/jpeg"
    assert base64.urlsafe_b64decode(image["data"]) == keyframe
    assert "not valid JSON" in fake.requests[1].texts[-1][1]
    stranger_repair = fake.requests[4].texts[-1][1]
    assert "<Zed> outside the cast; allowed: <Ana>, <Ben>" in stranger_repair
    schema = fake.requests[0].body["generationConfig"]["responseSchema"]
    assert schema["properties"]["characters"]["items"]["enum"] == ["Ana", "Ben"]
    assert BEN["caption"] in fake.requests[-1].texts[0][1]  # the global caption is asked from the shots

    samples = list(Dataset(root).keyframes())
    assert [(s.caption, s.characters) for s in samples] == [(ANA["caption"], ["Ana"]), (BEN["caption"], ["Ben"])]
    [multishot] = Dataset(root).multishot()
    assert multishot.global_caption == BOTH["caption"]
    assert multishot.shot_captions == [ANA["caption"], BEN["caption"]] and multishot.characters == ["Ana", "Ben"]

    asked = len(fake.requests)
    assert cinema_json("data", "prepare", str(film), "-o", str(root))["films"]["lb"]["worked"] == []
    assert len(fake.requests) == asked  # the stored cast and captions are reused: nothing asked again
    no_key_in(root)


def test_failed_captions_stay_pending_and_a_later_run_retries_only_them(fake, film, tmp_path):
    root, cast = dataset(tmp_path)
    fake.queue(reply(ANA), failure(500, "INTERNAL"))  # shot 1 keeps failing
    data = cinema_json("data", "prepare", str(film), "-o", str(root), "--cast", str(cast), rc=1)
    entry = data["films"]["lb"]
    assert entry["state"] == "pending" and entry["captions_pending"] == [1] and "500" in entry["why"]
    status = cinema_json("data", "status", str(root))
    assert status["pending"] == ["lb"] and "will be retried" in status["why"]["lb"]
    assert Dataset(root).shards("keyframes") == []  # nothing half-captioned is published

    fake.answers[:] = [reply(BEN), reply(BOTH)]
    before = len(fake.requests)
    data = cinema_json("data", "prepare", str(film), "-o", str(root))
    assert data["films"]["lb"]["state"] == "done"
    assert len(fake.requests) - before == 2  # shot 1 and the global caption; shot 0 was kept
    assert [s.caption for s in Dataset(root).keyframes()] == [ANA["caption"], BEN["caption"]]
    no_key_in(root)


def test_gemini_without_a_key_exits_2_before_writing(film, tmp_path, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    root, cast = dataset(tmp_path)
    before = snapshot(root)
    result = cinema("data", "prepare", str(film), "-o", str(root), "--cast", str(cast), rc=2)
    assert "GEMINI_API_KEY" in result.stderr and snapshot(root) == before


def test_sidecar_captions_by_index_and_timestamp(film, tmp_path):
    root, cast = dataset(tmp_path, "sidecar")
    own = tmp_path / "lb.mp4"
    shutil.copy(film, own)
    sidecar = tmp_path / "lb.captions.yaml"
    sidecar.write_text(f'shots:\n  0: "{ANA["caption"]}"\n  "0:00:03.0": "{BEN["caption"]}"\n'
                       f'global: "{BOTH["caption"]}"\n')
    cinema("data", "prepare", str(own), "-o", str(root), "--cast", str(cast))
    assert [(s.shot, s.caption, s.characters) for s in Dataset(root).keyframes()] == [
        (0, ANA["caption"], ["Ana"]), (1, BEN["caption"], ["Ben"])]
    assert next(Dataset(root).multishot()).global_caption == BOTH["caption"]

    sidecar.write_text('shots:\n  0: "<Ana> waves."\n  1: "<Zed> waves back."\n')
    result = cinema("data", "prepare", str(own), "-o", str(root), rc=2)
    assert "lb.captions.yaml:3: shots.1: tags <Zed> outside the cast; allowed: <Ana>, <Ben>" in result.stderr \
        or "lb.captions.yaml:3: shots.1: tags <Zed> outside the cast; allowed: <Ana>, <Ben>" in result.stdout
    assert [s.caption for s in Dataset(root).keyframes()] == [ANA["caption"], BEN["caption"]]  # nothing lost

    sidecar.unlink()
    assert "does not exist" in cinema("data", "prepare", str(own), "-o", str(root), rc=2).stderr
