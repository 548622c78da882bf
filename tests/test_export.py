"""`cinema export`: the OTIO and EDL files read back with OpenTimelineIO match the
storyboard and the film that was actually assembled."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

import opentimelineio as otio
import pytest

from cinema_cli.assemble.probe import probe
from finishing_support import cinema, cinema_json, expected_spans, shots, small_project


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    root = small_project(tmp_path_factory.mktemp("export"), "heist", 128, 64, 12)
    cinema("render", cwd=root)
    return root


def test_otio_round_trip_matches_storyboard_and_film(rendered):
    data = cinema_json("export", "--format", "otio", cwd=rendered)
    assert data["file"] == str(rendered / "film.otio") and data["notices"] == []
    timeline = otio.adapters.read_from_file(str(rendered / "film.otio"))
    track = timeline.tracks[0]
    spans = expected_spans(rendered, 12)
    clips = list(track.find_clips())
    assert [c.name for c in clips] == [s["id"] for s in spans] == [s["id"] for s in shots(rendered)]
    for clip, span, shot in zip(clips, spans, shots(rendered)):
        assert clip.media_reference.available_range.duration == otio.opentime.RationalTime(span["frames"], 12)
        assert clip.source_range.start_time.value == span["cut"] - span["start"]
        assert clip.source_range.duration.value == span["cut_out"] - span["cut"]
        assert clip.markers[0].name == shot["caption"]
        assert clip.metadata["cinema"]["scene"] == shot["scene"]
        path = Path(unquote(urlparse(clip.media_reference.target_url).path))
        assert path == rendered / "shots" / f"{shot['id']}.mp4" and path.is_file()
    # The track is as long as the film ffmpeg assembled, frame for frame.
    assert track.duration().value == probe(rendered / "film.mp4").frames == spans[-1]["cut_out"]
    transitions = [item for item in track if isinstance(item, otio.schema.Transition)]
    fades = [s["fade"] for s in spans if s["fade"]]
    assert len(transitions) == len(fades) == 2
    for transition, fade in zip(transitions, fades):
        assert transition.transition_type == otio.schema.TransitionTypes.SMPTE_Dissolve
        assert transition.in_offset.value == fade // 2
        assert transition.in_offset.value + transition.out_offset.value == fade


def test_edl_round_trip(tmp_path):
    root = small_project(tmp_path, "heist24", 128, 64, 24)  # EDL timecode needs a SMPTE rate
    cinema("story", cwd=root)
    data = cinema_json("export", "--format", "edl", "-o", "cut.edl", cwd=root)
    assert data["notices"]  # the shots are not rendered yet, and it says so
    text = (root / "cut.edl").read_text()
    assert text.startswith("TITLE: The Last Job\nFCM: NON-DROP FRAME\n")
    assert text.count(" D 012 ") == 2  # two 0.5 s dissolves at 24 fps
    timeline = otio.adapters.read_from_file(str(root / "cut.edl"), rate=24)
    clips = list(timeline.tracks[0].find_clips())
    spans = expected_spans(root, 24)
    assert [c.name for c in clips] == [s["id"] for s in spans]
    # An EDL starts each incoming shot where its dissolve starts (the overlap's start).
    starts = [s["start"] for s in spans] + [spans[-1]["start"] + spans[-1]["frames"]]
    for clip, start, end in zip(clips, starts, starts[1:]):
        assert clip.source_range.start_time.value == 0
        assert clip.source_range.duration.value == end - start, clip.name
    assert timeline.tracks[0].duration().value == starts[-1]


def test_bad_export_requests_change_nothing(tmp_path):
    root = small_project(tmp_path, "heist12", 128, 64, 12)
    cinema("story", cwd=root)
    before = sorted(p.name for p in root.iterdir())
    assert "unknown export format 'xml'" in cinema("export", "--format", "xml", cwd=root, rc=2).stderr
    assert "SMPTE" in cinema("export", "--format", "edl", cwd=root, rc=2).stderr
    assert sorted(p.name for p in root.iterdir()) == before
