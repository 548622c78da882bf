"""The sketch previz follows the words: descriptions -> looks -> pixels, captions ->
faces, places and captions -> weather and props, and its notes stay still in the animatic."""

from __future__ import annotations

import json
import subprocess
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw

from cinema_cli.assemble.ffmpeg import ffmpeg_exe
from cinema_cli.keyframes.base import OVERLAY_KEY, CharacterLook, KeyframeRequest
from cinema_cli.keyframes.sketch import SketchKeyframes, SketchOptions
from cinema_cli.keyframes.sketch_people import draw_figure, figure
from cinema_cli.keyframes.sketch_words import (
    COLOURS,
    HAIR_COLOURS,
    expression,
    expressions,
    parse_look,
    set_dressing,
)
from cinema_cli.project.schema import Framing, Move
from cinema_cli.video.animatic import AnimaticOptions, AnimaticShots
from cinema_cli.video.base import EncodeSettings, ShotRequest

DEX = ("heavyset man in his 50s, shaved head, thick grey moustache, navy mechanic's overalls "
       "with rolled sleeves, gold chain, tattooed forearms")
MARA = ("woman in her late 40s, wiry build, grey-streaked black hair in a tight braid, charcoal "
        "turtleneck, worn brown leather jacket, thin scar across her left eyebrow")
THEO = ("young man in his early 20s, lanky, curly red hair, freckles, oversized olive army surplus "
        "jacket over a yellow t-shirt, nervous hands")


def test_heist_descriptions_parse_to_what_they_say():
    dex, mara, theo = parse_look(DEX), parse_look(MARA), parse_look(THEO)
    assert dex.hair_style == "bald" and dex.facial_hair == ("moustache",)
    assert dex.facial_hair_colour == HAIR_COLOURS["grey"] and dex.build == "heavy" and dex.age == 55
    assert (dex.outer, dex.outer_colour, dex.chain) == ("overalls", COLOURS["navy"], True)
    assert (mara.hair_style, mara.hair, mara.streaks) == ("braid", HAIR_COLOURS["black"], HAIR_COLOURS["grey"])
    assert (mara.outer, mara.outer_colour, mara.inner_colour) == ("jacket", COLOURS["brown"], COLOURS["charcoal"])
    assert mara.build == "thin" and mara.scar and mara.sex == "woman" and mara.age == 48
    assert (theo.hair_style, theo.hair, theo.freckles, theo.tall) == ("curly", HAIR_COLOURS["red"], True, True)
    assert (theo.outer_colour, theo.inner_colour) == (COLOURS["olive"], COLOURS["yellow"])
    rosa = parse_look("hair in a bun, white apron")
    assert rosa.hair_style == "bun" and rosa.apron == COLOURS["white"]
    plain = parse_look("")
    assert plain.hair_style is None and plain.facial_hair == () and plain.glasses is None
    assert parse_look("tall, round glasses, short blonde hair").glasses == "glasses"
    assert parse_look("short, stocky man with short hair").tall is False
    assert parse_look("short hair").tall is None  # "short" of hair is not of stature


def head(description: str, face: str = "neutral") -> np.ndarray:
    """One figure on a white page, head 0.145 x 400 = 58 px tall."""
    image = Image.new("RGB", (200, 420), (255, 255, 255))
    draw_figure(ImageDraw.Draw(image), figure("Anyone", description), 100, 10, 400, 1, face)
    return np.asarray(image)


def pixels_of(image: np.ndarray, colour, rows: slice) -> int:
    return int(np.all(image[rows] == np.array(colour), axis=2).sum())


def test_a_shaved_head_draws_no_hair_and_a_moustache_draws_one():
    grey = HAIR_COLOURS["grey"]
    shaved = head("shaved head, grey moustache")
    haired = head("thick grey hair, grey moustache")
    scalp = slice(0, 10 + 16)  # from above the head to the top of the brow
    assert pixels_of(shaved, grey, scalp) == 0
    assert pixels_of(haired, grey, scalp) > 100
    lip = slice(10 + 36, 10 + 46)  # between the nose and the mouth
    assert pixels_of(shaved, grey, lip) > 20
    assert pixels_of(head("shaved head"), grey, lip) == 0


def test_clothes_and_build_are_drawn_from_the_words():
    navy, yellow = COLOURS["navy"], COLOURS["yellow"]
    torso = slice(10 + 80, 10 + 220)
    assert pixels_of(head("navy overalls"), navy, torso) > 1000
    assert pixels_of(head("yellow t-shirt"), navy, torso) == 0
    assert pixels_of(head("yellow t-shirt"), yellow, torso) > 1000
    width = {build: np.any(head(f"{build}, navy jacket")[torso] == navy, axis=(0, 2)).sum()
             for build in ("heavyset", "wiry")}
    assert width["heavyset"] > 1.3 * width["wiry"]


def test_faces_follow_the_caption():
    assert expression("his freckled face drained of colour") == "afraid"
    assert expression("she smiles at the sea") == "happy"
    assert expression("closes her eyes, remembering") == "eyes_closed"
    assert expression("walks to the car") == "neutral"  # not every face smiles
    faces = expressions("<Dex> slaps the table while <Theo> leans in, eyes wide", ["Dex", "Theo"])
    assert faces == {"Dex": "angry", "Theo": "surprised"}
    mouth = slice(10 + 40, 10 + 52)
    drawn = {face: head("", face)[mouth] for face in ("neutral", "happy", "afraid", "sad")}
    for a in drawn:
        for b in drawn:
            if a < b:
                assert not np.array_equal(drawn[a], drawn[b]), (a, b)


def test_weather_and_props_from_places_and_captions():
    alley = set_dressing("an alley in the rain", "")
    assert alley.rain and not alley.snow
    assert set_dressing("a mountain pass", "snow falls").snow
    assert set_dressing("a wind-swept rooftop above the city at dawn", "").rooftop
    assert set_dressing("a steel bank vault", "the round steel vault door fills the frame").vault_door == "closed"
    assert set_dressing("a steel bank vault", "the massive vault door swings open").vault_door == "open"
    assert set_dressing("a city street", "a sedan glides past").car
    assert not set_dressing("a meadow", "she walks").rain


def request(caption: str, location: str, names=(), **changes) -> KeyframeRequest:
    fields = dict(shot_id="s01", scene_id="a", caption=caption,
                  characters=tuple(CharacterLook(n, d) for n, d in names), framing=Framing.wide,
                  move=Move.static, location=location, time_of_day="night", style="",
                  width=256, height=128, seed=1)
    return KeyframeRequest(**{**fields, **changes})


def render(req: KeyframeRequest) -> Image.Image:
    return SketchKeyframes(SketchOptions()).render(req, lambda *_: None)


def test_rain_and_the_vault_door_change_the_picture():
    dry = np.asarray(render(request("She waits.", "a city street")))
    wet = np.asarray(render(request("She waits in the rain.", "a city street")))
    assert np.any(dry != wet, axis=2)[:80].mean() > 0.005  # streaks all over the sky
    vault = np.asarray(render(request("The vault door fills the frame.", "a steel bank vault")))
    room = np.asarray(render(request("The room fills the frame.", "a steel bank office")))
    centre = (slice(20, 100), slice(96, 160))
    assert np.any(vault[centre] != room[centre], axis=2).mean() > 0.5


def test_same_description_same_pixels_and_fast():
    req = request("<Dex> glares at <Mara>.", "a cluttered garage", (("Dex", DEX), ("Mara", MARA)),
                  width=1024, height=512, framing=Framing.medium)
    start = time.perf_counter()
    first = np.asarray(render(req))
    assert time.perf_counter() - start < 2.0  # a panel in well under a second, with margin for CI
    assert np.array_equal(first, np.asarray(render(req)))


@pytest.mark.parametrize("move", [Move.push_in, Move.pan_right, Move.tilt_down])
def test_animatic_moves_the_picture_and_holds_the_notes_still(tmp_path, move):
    key = tmp_path / "key.png"
    panel = render(request("<Mara> kneels at the vault door, listening.", "a steel bank vault",
                           (("Mara", MARA),), move=move, framing=Framing.medium, width=512, height=256))
    panel.save(key)  # as the keyframe stage saves it: the notes ride in a PNG text chunk
    with Image.open(key) as saved:
        notes = saved.info[OVERLAY_KEY]
    layout = json.loads(notes)
    left, top, right, bottom = layout["picture"]
    assert bottom < 256 and layout["fixed"]  # a caption strip below, a badge over the picture
    out = tmp_path / "shot.mp4"
    AnimaticShots(AnimaticOptions()).render(ShotRequest(
        shot_id="s01", caption="", keyframe=key, next_keyframe=None, framing=Framing.medium, move=move,
        frames=6, fps=12, width=512, height=256, seed=1), out, EncodeSettings(crf=4), lambda *_: None)
    raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(out), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    last = np.frombuffer(raw, np.uint8).reshape(-1, 256, 512, 3)[-1].astype(int)
    keyframe = np.asarray(panel).astype(int)
    strip = (slice(bottom + 1, 256), slice(0, 512))
    assert np.abs(last[strip] - keyframe[strip]).mean() < 3  # the caption did not move
    bl, bt, br, bb = layout["fixed"][0]
    badge = (slice(bt + 1, bb - 1), slice(bl + 1, br - 1))
    assert np.abs(last[badge] - keyframe[badge]).mean() < 6  # nor the badge
    picture = (slice(top + 30, bottom - 10), slice(left + 10, bl - 10))
    assert np.abs(last[picture] - keyframe[picture]).mean() > 5  # but the camera did
