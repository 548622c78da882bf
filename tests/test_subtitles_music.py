"""`cinema assemble --subtitles --music`: film.srt timed to the shots, a soft subtitle
track, a loudness-normalised music bed as long as the film, the video stream-copied,
the settings in the film's recipe, and bad input refused with nothing changed."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cinema_cli.assemble.ffmpeg import ffmpeg_exe
from cinema_cli.assemble.probe import probe, probe_audio
from finishing_support import cinema, cinema_json, expected_spans, ffmpeg, small_project

W, H, FPS = 128, 64, 8
SRT_CUE = re.compile(r"(\d+)\n(\d\d):(\d\d):(\d\d),(\d\d\d) --> (\d\d):(\d\d):(\d\d),(\d\d\d)\n(.+?)\n\n", re.S)


def ms(h, m, s, milli) -> int:
    return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(milli)


def video_md5(path: Path) -> str:
    """A hash of the video stream's packets: equal when the video was stream-copied."""
    return subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:v", "-c", "copy",
                           "-f", "md5", "-"], capture_output=True, text=True, check=True).stdout.strip()


def integrated_loudness(path: Path) -> float:
    stderr = ffmpeg("-i", str(path), "-map", "0:a", "-af", "ebur128=framelog=quiet", "-f", "null", "-")
    return float(re.search(r"Integrated loudness:\s+I:\s+(-?[\d.]+) LUFS", stderr)[1])


def set_assemble(root: Path, **settings: str) -> None:
    """Change `assemble:` settings in cinema.yaml as a person would (comments kept)."""
    config = root / "cinema.yaml"
    text = config.read_text()
    for key, value in settings.items():
        text, count = re.subn(rf"(?m)^  {key}:.*$", f"  {key}: {value}", text)
        assert count == 1, key
    config.write_text(text)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    root = small_project(tmp_path_factory.mktemp("finish"), "heist", W, H, FPS)
    cinema("render", cwd=root)
    (root / "music").mkdir()
    # 20 s of a chord with a little noise, far quieter than the target: shorter than the
    # 48 s film, so it must be padded.
    ffmpeg("-f", "lavfi", "-i", "sine=f=220:d=20", "-f", "lavfi", "-i", "sine=f=330:d=20",
           "-f", "lavfi", "-i", "anoisesrc=d=20:a=0.02:seed=1",
           "-filter_complex", "[0][1][2]amix=inputs=3,volume=0.1", "-ar", "44100", str(root / "music/bed.wav"))
    return root


def test_subtitles_and_music(rendered, tmp_path):
    root = tmp_path / "p"
    shutil.copytree(rendered, root)
    plain_video = video_md5(root / "film.mp4")
    data = cinema_json("assemble", "--subtitles", "--music", "music/bed.wav", "--loudness", "-20", cwd=root)
    assert data["rebuilt"]["film"] is True and data["rebuilt"]["shots"] == []
    film = root / "film.mp4"
    info = probe(film)
    assert info.has_subtitles and info.has_audio and info.frames == 384
    assert video_md5(film) == plain_video  # the video was stream-copied, not re-encoded

    # One cue per shot with dialogue, from its cut in to its cut out (crossfades: centre).
    cues = [(ms(*c[1:5]), ms(*c[5:9]), c[9]) for c in SRT_CUE.findall((root / "film.srt").read_text())]
    spans = [s for s in expected_spans(root, FPS) if s["dialogue"]]
    assert [(round(s["cut"] * 1000 / FPS), round(s["cut_out"] * 1000 / FPS), s["dialogue"]) for s in spans] == cues
    assert any(s["fade"] for s in spans)  # a cue next to a crossfade is covered

    audio = probe_audio(film)
    assert (audio.codec, audio.sample_rate) == ("aac", 48000)
    assert abs(audio.duration - info.frames / FPS) <= 1 / FPS
    assert abs(integrated_loudness(film) - -20.0) <= 1.0

    # The run's settings are in the film's recipe: cinema.yaml still says no subtitles
    # and no music, so status calls the film stale, and says why.
    status = cinema_json("status", cwd=root)
    assert status["film"] == "stale"
    assert set(status["film_stale_because"]) == {"subtitles changed", "music changed"}
    # Written into cinema.yaml, the same settings make that film current.
    set_assemble(root, subtitles="true", music="music/bed.wav", music_loudness="-20")
    assert cinema_json("status", cwd=root)["film"] == "done"
    # And a new music file content is a new film.
    (root / "music/bed.wav").write_bytes((root / "music/bed.wav").read_bytes()[:-4000])
    assert cinema_json("status", cwd=root)["film_stale_because"] == ["music changed"]


def test_a_film_without_subtitles_leaves_no_srt(rendered, tmp_path):
    root = tmp_path / "p"
    shutil.copytree(rendered, root)
    cinema("assemble", "--subtitles", cwd=root)
    assert (root / "film.srt").is_file() and probe(root / "film.mp4").has_subtitles
    cinema("assemble", cwd=root)  # back to cinema.yaml: no subtitles
    assert not (root / "film.srt").exists()
    info = probe(root / "film.mp4")
    assert not info.has_subtitles and not info.has_audio


@pytest.mark.parametrize("args, message", [
    (["--music", "nope.wav"], "not found"),
    (["--music", "{outside}"], "outside the project"),
    (["--music", "script.yaml"], "not a readable audio file"),
    (["--music", "music/bed.wav", "--no-music"], "contradict"),
    (["--loudness", "3"], "--loudness"),
])
def test_bad_music_is_refused_and_nothing_changes(rendered, tmp_path, args, message):
    root = tmp_path / "p"
    shutil.copytree(rendered, root)
    outside = tmp_path / "outside.wav"
    shutil.copy(root / "music/bed.wav", outside)
    before = {p.name: sha(p) for p in root.iterdir() if p.is_file()}
    result = cinema("assemble", *[a.format(outside=outside) for a in args], cwd=root, rc=2)
    assert message in result.stderr
    assert {p.name: sha(p) for p in root.iterdir() if p.is_file()} == before


def test_music_outside_the_project_in_cinema_yaml_names_the_line(rendered, tmp_path):
    root = tmp_path / "p"
    shutil.copytree(rendered, root)
    set_assemble(root, music="../x.wav")
    line = (root / "cinema.yaml").read_text().splitlines().index("  music: ../x.wav") + 1
    result = cinema("render", cwd=root, rc=2)
    assert f"cinema.yaml:{line}: assemble.music:" in result.stderr and "outside the project" in result.stderr
