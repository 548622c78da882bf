"""The sketch keyframe backend: real Pillow drawing, checked through its pixels."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from PIL import ImageFont
from pydantic import ValidationError

from cinema_cli.keyframes.base import CharacterLook, KeyframeRequest, keyframe_backends
from cinema_cli.keyframes.sketch import SketchKeyframes, SketchOptions, _fit_lines
from cinema_cli.project.schema import Framing, Move

W, H = 512, 256


def request(names: tuple[str, ...] = ("Ana", "Ben"), **changes) -> KeyframeRequest:
    fields = dict(
        shot_id="s01-01", scene_id="s01", caption="<Ana> waits for <Ben> by the door.",
        characters=tuple(CharacterLook(name, "") for name in names),
        framing=Framing.wide, move=Move.static, location="Harbour street",
        time_of_day="night", style="", width=W, height=H, seed=1,
    )
    return KeyframeRequest(**{**fields, **changes})


def render(req: KeyframeRequest, **options) -> np.ndarray:
    image = SketchKeyframes(SketchOptions(**options)).render(req, lambda done, total: None)
    return np.asarray(image)


def figure_pixels(req: KeyframeRequest) -> np.ndarray:
    """Where the picture differs from the same place with nobody in it.

    Empty wide shots show the plain backdrop; only the badge's shot-size text also differs.
    """
    empty = request(location=req.location, time_of_day=req.time_of_day, names=(),
                    framing=Framing.wide, move=req.move, width=req.width, height=req.height)
    return np.any(render(req, show_caption=False) != render(empty, show_caption=False), axis=2)


def dominant_colour(req: KeyframeRequest) -> tuple[int, ...]:
    pixels = render(req, show_caption=False)[figure_pixels(req)]
    return Counter(map(tuple, pixels.tolist())).most_common(1)[0][0]


def test_registered_under_its_name():
    assert keyframe_backends.get("sketch") is SketchKeyframes
    assert SketchKeyframes.Options is SketchOptions


def test_options_refuse_unknown_fields():
    with pytest.raises(ValidationError):
        SketchOptions(show_captions=False)


@pytest.mark.parametrize("size", [(1024, 512), (128, 64), (360, 640), (97, 33)])
def test_size_mode_and_progress(size):
    calls = []
    req = request(width=size[0], height=size[1])
    image = SketchKeyframes(SketchOptions()).render(req, lambda *step: calls.append(step))
    assert image.mode == "RGB"
    assert image.size == size
    assert calls[-1] == (1, 1)


def test_same_request_same_pixels():
    req = request(framing=Framing.medium, move=Move.push_in, seed=42)
    assert np.array_equal(render(req), render(req))


def test_seed_only_moves_figures():
    a, b = render(request(seed=1)), render(request(seed=2))
    assert not np.array_equal(a, b)
    rows = int(H * 0.12)  # the sky above the figures is untouched by the seed
    assert np.array_equal(a[:rows], b[:rows])


def test_same_location_same_backdrop_in_different_shots():
    one = render(request(shot_id="a1", caption="Ana waits.", names=("Ana", "Ben"),
                         framing=Framing.wide, move=Move.push_in, seed=3))
    two = render(request(shot_id="b7", caption="Cleo runs past the boats, out of breath.",
                         names=("Cleo",), framing=Framing.extreme_wide,
                         move=Move.pan_left, seed=99))
    empty = render(request(names=()))
    rows, cols = int(H * 0.12), int(W * 0.7)  # above the figures, left of the badge
    assert np.array_equal(one[:rows, :cols], two[:rows, :cols])
    assert np.array_equal(one[:rows, :cols], empty[:rows, :cols])


def test_different_locations_look_different():
    rows = int(H * 0.7)
    panels = [render(request(names=(), location=place, time_of_day="day"))[:rows]
              for place in ("Harbour street", "Old town square", "Mountain meadow", "INT. Kitchen")]
    for i, a in enumerate(panels):
        for b in panels[i + 1:]:
            assert np.any(a != b, axis=2).mean() > 0.3
            assert np.abs(a.astype(int) - b.astype(int)).mean() > 10


def test_night_is_darker_than_day():
    rows = int(H * 0.5)
    night = render(request(names=(), time_of_day="late night"))[:rows]
    day = render(request(names=(), time_of_day="day"))[:rows]
    assert night.mean() < day.mean() - 60


def test_character_keeps_its_colours_across_shots():
    ana_medium = dominant_colour(request(names=("Ana",), framing=Framing.medium, seed=5))
    ana_wide = dominant_colour(request(names=("Ana",), framing=Framing.wide, seed=8,
                                       location="INT. Kitchen", time_of_day="day"))
    ben = dominant_colour(request(names=("Ben",), framing=Framing.medium, seed=5))
    assert ana_medium == ana_wide
    assert ben != ana_medium


def test_closer_framing_means_bigger_figures():
    covered = {
        framing: figure_pixels(request(names=("Ana",), framing=framing)).mean()
        for framing in Framing
    }
    in_order = [covered[framing] for framing in Framing]  # extreme-wide ... extreme-close-up
    assert in_order == sorted(in_order)
    assert covered[Framing.close_up] > 2 * covered[Framing.wide]
    face = figure_pixels(request(names=("Ana",), framing=Framing.extreme_close_up))
    assert face[:, W // 2].mean() > 0.95  # a face fills the frame's height


@pytest.mark.parametrize("framing", list(Framing))
def test_no_characters_zooms_into_the_set(framing):
    panel = render(request(names=(), framing=framing))
    assert panel.shape == (H, W, 3)
    if framing is not Framing.wide:
        assert not np.array_equal(panel, render(request(names=(), framing=Framing.wide)))


def test_camera_move_is_drawn_in_the_corner_only():
    still = render(request(move=Move.static))
    for move in set(Move) - {Move.static}:
        changed = np.argwhere(np.any(render(request(move=move)) != still, axis=2))
        assert len(changed), move
        assert changed[:, 0].max() < H * 0.3 and changed[:, 1].min() > W * 0.7, move


def test_caption_strip_can_be_turned_off():
    with_strip = render(request())
    without = render(request(), show_caption=False)
    paper = np.array([246, 243, 234])
    assert (with_strip[-2] == paper).all(axis=1).mean() > 0.9
    assert (without[-2] == paper).all(axis=1).mean() < 0.1
    assert not np.array_equal(render(request(caption="Something else entirely.")), with_strip)


def test_caption_wraps_and_ends_in_an_ellipsis():
    font = ImageFont.load_default(size=12)
    lines = _fit_lines("one two three four five six seven eight nine ten " * 4, font, 80, 2)
    assert len(lines) == 2
    assert lines[-1].endswith("…")
    assert all(font.getlength(line) <= 80 for line in lines)
    assert _fit_lines("short", font, 80, 2) == ["short"]


@pytest.mark.parametrize("framing", list(Framing))
@pytest.mark.parametrize("place", ["a parked getaway car", "the bank's rooftop", "a concrete garage"])
def test_every_framing_draws_set_dressing_that_a_zoom_pushes_out_of_frame(framing, place):
    # Without people a framing zooms into the set, which can put the dashboard's or the
    # roof's top edge below the frame.
    backend = SketchKeyframes(SketchOptions())
    for width, height in ((128, 64), (64, 128)):
        req = request(names=(), caption="Keys left behind the wheel, rain on the windshield.", location=place,
                      framing=framing, width=width, height=height)
        assert backend.render(req, lambda done, total: None).size == (width, height)
