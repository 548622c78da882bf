"""The `sketch` keyframe backend: a storyboard panel per shot, drawn on the CPU.

No weights and no GPU; the panel is a pure function of the request, so previz is
instant and byte-for-byte reproducible. Continuity holds by construction: the backdrop
depends only on the location and time of day, and a character's look only on the
name, so the same place and the same people look the same in every shot. The seed
only nudges where the figures stand.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin
from pydantic import BaseModel, Field

from cinema_cli.keyframes.base import OVERLAY_KEY, KeyframeRequest, StepProgress, keyframe_backends
from cinema_cli.keyframes.sketch_dressing import (
    draw_bulb,
    draw_car,
    draw_car_interior,
    draw_rooftop,
    draw_vault_door,
    draw_weather,
    vault_centre,
)
from cinema_cli.keyframes.sketch_paint import INK, PAPER, RGB, hash_rng, hsv, mix, rotate_hue, rounded, shade
from cinema_cli.keyframes.sketch_people import Figure, draw_figure, figure
from cinema_cli.keyframes.sketch_words import SetDressing, expressions, set_dressing
from cinema_cli.project.schema import Framing, Move, plain_text

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


class SketchOptions(BaseModel, extra="forbid"):
    # The strip under the picture with the shot id and the caption.
    show_caption: bool = True
    # Name labels on the figures and the shot-size / camera-move badge.
    show_labels: bool = True
    # A sketch draws nothing from its context. True: the memory still plans each panel's
    # context as a learned backend would get it, and it is recorded (sidecar, `status`,
    # `cinema shot`, `cinema direct`'s memory log): a preview of the memory, drawn in
    # storyboard order. False: no context, so the panels wait for no other (`render --gpus
    # N` draws them side by side) and an edit redraws no other panel. Left out of the
    # recipe, whose `memory` entry is there exactly when the context is planned.
    preview_memory: bool = Field(True, exclude=True)


# ---------------------------------------------------------------- the location


@dataclass(frozen=True)
class _Palette:
    top: RGB  # sky (or wall) at the top of the frame
    horizon: RGB  # sky (or wall) at the horizon (or floor line)
    ground_far: RGB
    ground_near: RGB
    far: RGB  # distant hills; for interiors, the sky seen through a window
    set: RGB  # buildings or furniture
    foliage: RGB
    light: RGB  # sun, lit windows, lamps
    night: bool  # lamps glow and windows are lit


# Exterior palettes: sky top, sky at horizon, far hills, ground far, ground near,
# set pieces, foliage, light.
_TIMES: dict[str, tuple[RGB, ...]] = {
    "day": ((118, 166, 222), (206, 226, 242), (150, 172, 194), (152, 170, 122),
            (112, 132, 90), (112, 118, 134), (86, 126, 84), (255, 246, 214)),
    "dawn": ((112, 128, 190), (246, 204, 178), (166, 156, 182), (142, 138, 120),
             (100, 100, 94), (98, 94, 114), (88, 106, 92), (255, 226, 170)),
    "dusk": ((62, 56, 116), (240, 148, 102), (116, 86, 110), (98, 80, 82),
             (66, 56, 62), (58, 48, 68), (58, 62, 62), (255, 196, 118)),
    "night": ((10, 14, 36), (38, 50, 92), (30, 36, 62), (30, 34, 44),
              (20, 22, 30), (24, 26, 38), (20, 32, 32), (255, 212, 128)),
}
_TIME_WORDS = (
    ("night", re.compile(r"night|midnight")),
    ("dusk", re.compile(r"dusk|sunset|evening|twilight|golden")),
    ("dawn", re.compile(r"dawn|sunrise|daybreak")),
)
_EXTERIOR = re.compile(r"\b(ext|exterior|outside|outdoors?)\b")
_INTERIOR = re.compile(
    r"\b(int|interior|inside|indoors?|room|kitchen|office|apartment|flat|bar|pub|cafe|"
    r"café|diner|restaurant|hall|hallway|corridor|studio|lab|laboratory|library|bedroom|"
    r"classroom|church|shop|store|hospital|house|home|cabin|attic|basement|garage|vault|"
    r"cottage|cellar|bunker|warehouse|lantern|cockpit|chamber|cell)\b"
)
# Words that bias which set pieces an exterior gets.
_TERRAINS = (
    ("city", re.compile(r"street|city|alley|town|road|roof|downtown|avenue|square|market|"
                        r"station|parking|bridge")),
    ("nature", re.compile(r"forest|wood|park|garden|field|meadow|mountain|hill|farm|"
                          r"country|jungle|valley|camp")),
    ("water", re.compile(r"beach|sea|ocean|lake|river|harbou?r|shore|coast|pier|dock|bay")),
)
_PROP_WEIGHTS = {
    "city": {"building": 6, "house": 1, "tree": 1, "lamp": 2, "gap": 1},
    "nature": {"tree": 5, "pine": 4, "house": 1, "gap": 2},
    "water": {"lamp": 2, "tree": 1, "house": 1, "gap": 6},
    "mixed": {"building": 3, "house": 2, "tree": 2, "pine": 1, "lamp": 1, "gap": 2},
    "interior": {"window": 3, "door": 2, "frame": 2, "shelf": 2, "table": 2, "couch": 2,
                 "lamp": 1, "plant": 1, "gap": 1},
    # Rooms whose words say what furnishes them: no sofas in a vault.
    "vault": {"shelf": 2, "door": 1, "gap": 3},
    "garage": {"shelf": 3, "table": 2, "door": 1, "window": 1, "gap": 2},
}
_ROOMS = (("vault", re.compile(r"\bvault")), ("garage", re.compile(r"garage|workshop|warehouse")))
_INTERIOR_LIGHT = {"day": 1.0, "dawn": 0.9, "dusk": 0.75, "night": 0.5}
_WORLD_HALF_WIDTH = 2.5  # set pieces span u in [-2.5, 2.5]: enough for a 4:1 frame zoomed out


@dataclass(frozen=True)
class _Prop:
    kind: str
    u: float  # centre, in scene heights from the frame centre
    w: float
    h: float
    tone: float  # brightness variation between pieces of the same kind
    detail: int  # seeds small patterns (lit windows, books)


@dataclass(frozen=True)
class _Location:
    palette: _Palette
    interior: bool
    terrain: str
    horizon: float  # v of the horizon or floor line; v = 0 top, 1 bottom of the frame
    props: tuple[_Prop, ...]
    ridge: tuple[float, float, float, float]  # phases and frequencies of the far hills
    sky_body: tuple[float, float]  # (u, v) of the sun or moon
    stars: tuple[tuple[float, float], ...]


def _time_key(time_of_day: str) -> str:
    text = time_of_day.lower()
    return next((key for key, words in _TIME_WORDS if words.search(text)), "day")


def _is_interior(location: str, time_of_day: str) -> bool:
    text = f"{location} {time_of_day}".lower()
    return not _EXTERIOR.search(text) and bool(_INTERIOR.search(text))


def _palette(rng: np.random.Generator, time: str, interior: bool) -> _Palette:
    top, horizon, far, g_far, g_near, set_, foliage, light = _TIMES[time]
    if interior:
        level = _INTERIOR_LIGHT[time]
        wall = hsv(rng.random(), rng.uniform(0.12, 0.3), 0.84 * level)
        floor = hsv(rng.uniform(0.05, 0.11), rng.uniform(0.3, 0.5), 0.6 * level)
        furniture = hsv(rng.random(), rng.uniform(0.2, 0.4), 0.42 * level)
        return _Palette(top=shade(wall, 0.86), horizon=wall, ground_far=floor,
                        ground_near=shade(floor, 0.78), far=horizon, set=furniture,
                        foliage=shade(foliage, 1.2), light=light, night=time == "night")
    # A small per-location hue turn so two streets at noon still differ at a glance.
    turn = rng.uniform(-0.04, 0.04)
    top, horizon, far, g_far, g_near, set_, foliage = (
        rotate_hue(c, turn) for c in (top, horizon, far, g_far, g_near, set_, foliage))
    return _Palette(top=top, horizon=horizon, ground_far=g_far, ground_near=g_near, far=far,
                    set=set_, foliage=foliage, light=light, night=time == "night")


def _props(rng: np.random.Generator, weights: dict[str, int]) -> tuple[_Prop, ...]:
    kinds = list(weights)
    p = np.array([weights[k] for k in kinds], dtype=float)
    props, u = [], -_WORLD_HALF_WIDTH
    while u < _WORLD_HALF_WIDTH:
        slot = rng.uniform(0.22, 0.5)
        kind = kinds[rng.choice(len(kinds), p=p / p.sum())]
        w, h = slot * rng.uniform(0.6, 0.85), rng.uniform(0.18, 0.45)
        tone, detail = rng.uniform(0.85, 1.15), int(rng.integers(1 << 30))
        if kind != "gap":
            props.append(_Prop(kind, u + slot / 2, w, h, tone, detail))
        u += slot
    return tuple(props)


@lru_cache(maxsize=64)
def _location(location: str, time_of_day: str) -> _Location:
    # The layout is seeded by the location alone: the same street at noon and at night
    # keeps its buildings, only the light changes.
    rng = hash_rng("location", location.strip().casefold())
    interior = _is_interior(location, time_of_day)
    text = location.lower()
    terrain = "interior" if interior else next(
        (key for key, words in _TERRAINS if words.search(text)), "mixed")
    if interior:
        terrain = next((key for key, words in _ROOMS if words.search(text)), terrain)
    horizon = rng.uniform(0.6, 0.7) if interior else rng.uniform(0.52, 0.66)
    time = _time_key(time_of_day)
    props = _props(rng, _PROP_WEIGHTS[terrain])
    if terrain == "vault":  # the back wall's centre belongs to the vault door
        props = tuple(p for p in props if abs(p.u) > 0.45 + p.w / 2)
    sun_u, sun_v = rng.uniform(-0.8, 0.8), rng.uniform(0.1, 0.22)
    stars = tuple(zip(rng.uniform(-2.5, 2.5, 60), rng.uniform(-0.3, horizon - 0.1, 60)))
    return _Location(
        palette=_palette(rng, time, interior),
        interior=interior,
        terrain=terrain,
        horizon=horizon,
        props=props,
        ridge=(rng.uniform(0, 6.3), rng.uniform(0, 6.3), rng.uniform(2, 4), rng.uniform(5, 9)),
        sky_body=(sun_u, horizon - 0.08 if time in ("dusk", "dawn") else sun_v),
        stars=stars if time == "night" else (),
    )


# ---------------------------------------------------------------- drawing the backdrop


@dataclass(frozen=True)
class _View:
    """Maps world units (scene heights; u = 0 the frame centre, v = 0 the top) to pixels."""

    width: int
    height: int
    zoom: float = 1.0
    cu: float = 0.0
    cv: float = 0.5

    def x(self, u: float) -> float:
        return self.width / 2 + (u - self.cu) * self.height * self.zoom

    def y(self, v: float) -> float:
        return self.height / 2 + (v - self.cv) * self.height * self.zoom

    def px(self, d: float) -> float:
        return d * self.height * self.zoom

    def box(self, u0: float, v0: float, u1: float, v1: float) -> tuple[float, ...]:
        return (self.x(u0), self.y(v0), self.x(u1), self.y(v1))


def _gradient(loc: _Location, view: _View) -> Image.Image:
    """Sky (or wall) above the horizon, ground (or floor) below, each a vertical ramp."""
    pal = loc.palette
    v = view.cv + (np.arange(view.height) + 0.5 - view.height / 2) / (view.height * view.zoom)
    sky_t = np.clip(v / loc.horizon, 0, 1)[:, None]
    ground_t = np.clip((v - loc.horizon) / (1 - loc.horizon), 0, 1)[:, None]
    sky = np.array(pal.top) + (np.array(pal.horizon) - pal.top) * sky_t
    ground = np.array(pal.ground_far) + (np.array(pal.ground_near) - pal.ground_far) * ground_t
    rows = np.where((v < loc.horizon)[:, None], sky, ground).round().astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(np.broadcast_to(
        rows[:, None, :], (view.height, view.width, 3))))


def _draw_sky(d: ImageDraw.ImageDraw, view: _View, loc: _Location) -> None:
    pal = loc.palette
    for u, v in loc.stars:
        r = max(0.5, view.px(0.003))
        d.ellipse((view.x(u) - r, view.y(v) - r, view.x(u) + r, view.y(v) + r), fill=PAPER)
    u, v = loc.sky_body
    r = 0.04 if pal.night else 0.06
    body = (236, 234, 218) if pal.night else mix(pal.light, pal.horizon, 0.2)
    d.ellipse(view.box(u - r, v - r, u + r, v + r), fill=body)
    # Far hills: two sines make a ridge that never repeats across the frame.
    p1, p2, f1, f2 = loc.ridge
    us = np.linspace(-_WORLD_HALF_WIDTH - 1, _WORLD_HALF_WIDTH + 1, 120)
    heights = 0.03 + 0.05 * (2 + np.sin(f1 * us + p1) + np.sin(f2 * us + p2)) / 2
    points = [(view.x(u), view.y(loc.horizon - h)) for u, h in zip(us, heights)]
    below = view.y(loc.horizon + 0.01)
    points += [(view.x(us[-1]), below), (view.x(us[0]), below)]
    d.polygon(points, fill=pal.far)
    if loc.terrain == "water":
        water = mix(pal.top, pal.horizon, 0.5)
        d.rectangle(view.box(-9, loc.horizon, 9, loc.horizon + 0.14), fill=water)
        for i in range(1, 4):
            v = loc.horizon + 0.035 * i
            d.line((view.x(-9), view.y(v), view.x(9), view.y(v)), fill=pal.horizon,
                   width=max(1, round(view.px(0.003))))


def _windows(d: ImageDraw.ImageDraw, view: _View, p: _Prop, base: float, pal: _Palette,
             rows: int, cols: int, top: float) -> None:
    """A grid of windows; only drawn once they are big enough to read (detail with zoom)."""
    cw, ch = p.w / cols, (base - top) / rows
    if view.px(cw * 0.45) < 2:
        return
    lit = np.random.default_rng(p.detail).random((rows, cols)) < (0.45 if pal.night else 1.0)
    dark = shade(pal.set, 0.7)
    glass = pal.light if pal.night else mix(pal.light, pal.far, 0.5)
    for r in range(rows):
        for c in range(cols):
            u0, v0 = p.u - p.w / 2 + cw * (c + 0.28), top + ch * (r + 0.25)
            d.rectangle(view.box(u0, v0, u0 + cw * 0.44, v0 + ch * 0.5),
                        fill=glass if lit[r, c] else dark)


def _building(d, view, p, base, pal):
    top = base - p.h * 1.4
    d.rectangle(view.box(p.u - p.w / 2, top, p.u + p.w / 2, base), fill=shade(pal.set, p.tone))
    rows, cols = max(2, round(p.h * 1.4 / 0.07)), max(2, round(p.w / 0.06))
    _windows(d, view, p, base - 0.02, pal, rows, cols, top + 0.01)


def _house(d, view, p, base, pal):
    # Walls always clear the 0.1-high door, so the window row above it has room.
    wall, top = shade(pal.set, p.tone * 1.1), base - 0.16 - p.h * 0.3
    d.rectangle(view.box(p.u - p.w / 2, top, p.u + p.w / 2, base), fill=wall)
    roof = [(view.x(p.u - p.w * 0.6), view.y(top)), (view.x(p.u), view.y(top - p.h * 0.35)),
            (view.x(p.u + p.w * 0.6), view.y(top))]
    d.polygon(roof, fill=shade(pal.set, p.tone * 0.7))
    d.rectangle(view.box(p.u - 0.03, base - 0.1, p.u + 0.03, base), fill=shade(wall, 0.6))
    _windows(d, view, p, base - 0.11, pal, 1, 2, top)


def _tree(d, view, p, base, pal):
    trunk = shade(pal.set, 0.8)
    d.rectangle(view.box(p.u - 0.012, base - p.h * 0.5, p.u + 0.012, base), fill=trunk)
    r = p.w * 0.4
    d.ellipse(view.box(p.u - r, base - p.h - r * 0.6, p.u + r, base - p.h * 0.4),
              fill=shade(pal.foliage, p.tone))


def _pine(d, view, p, base, pal):
    d.rectangle(view.box(p.u - 0.01, base - 0.05, p.u + 0.01, base), fill=shade(pal.set, 0.8))
    top, half = base - p.h * 1.2, p.w * 0.3
    d.polygon([(view.x(p.u), view.y(top)), (view.x(p.u + half), view.y(base - 0.04)),
               (view.x(p.u - half), view.y(base - 0.04))], fill=shade(pal.foliage, p.tone * 0.85))


def _glow(d, view, u, v, r, pal):
    if pal.night:
        d.ellipse(view.box(u - r * 2.5, v - r * 2.5, u + r * 2.5, v + r * 2.5),
                  fill=mix(pal.top, pal.light, 0.25))
    d.ellipse(view.box(u - r, v - r, u + r, v + r), fill=pal.light)


def _street_lamp(d, view, p, base, pal):
    top = base - p.h * 0.9
    _glow(d, view, p.u, top, 0.018, pal)
    d.line((view.x(p.u), view.y(top), view.x(p.u), view.y(base)), fill=shade(pal.set, 0.6),
           width=max(1, round(view.px(0.008))))


def _window(d, view, p, base, pal):
    w, top = min(p.w, 0.3), base - 0.5
    d.rectangle(view.box(p.u - w / 2, top, p.u + w / 2, top + 0.28), fill=pal.far,
                outline=PAPER, width=max(1, round(view.px(0.012))))
    bar = max(1, round(view.px(0.008)))
    d.line((view.x(p.u), view.y(top), view.x(p.u), view.y(top + 0.28)), fill=PAPER, width=bar)
    d.line((view.x(p.u - w / 2), view.y(top + 0.14), view.x(p.u + w / 2), view.y(top + 0.14)),
           fill=PAPER, width=bar)


def _door(d, view, p, base, pal):
    color = shade(pal.set, p.tone * 1.2)
    d.rectangle(view.box(p.u - 0.09, base - 0.46, p.u + 0.09, base), fill=color,
                outline=shade(color, 0.6), width=max(1, round(view.px(0.006))))
    r = 0.012
    d.ellipse(view.box(p.u + 0.05 - r, base - 0.23 - r, p.u + 0.05 + r, base - 0.23 + r),
              fill=pal.light)


def _picture(d, view, p, base, pal):
    w, h, top = min(p.w, 0.2), 0.13, base - 0.42
    inner = hsv(p.detail / (1 << 30), 0.4, 0.7)
    d.rectangle(view.box(p.u - w / 2, top, p.u + w / 2, top + h), fill=inner,
                outline=shade(pal.set, 0.8), width=max(1, round(view.px(0.012))))


def _shelf(d, view, p, base, pal):
    w, top = min(p.w, 0.26), base - 0.5
    wood = shade(pal.set, p.tone)
    d.rectangle(view.box(p.u - w / 2, top, p.u + w / 2, base), fill=wood)
    rng = np.random.default_rng(p.detail)
    for shelf in range(4):
        v = top + 0.02 + shelf * 0.12
        books = shade(wood, 0.55)
        if view.px(0.02) >= 3:  # individual books only once they are readable
            books = tuple(int(c) for c in rng.integers(60, 200, 3))
        d.rectangle(view.box(p.u - w / 2 + 0.02, v, p.u + w / 2 - 0.02, v + 0.09), fill=books)


def _table(d, view, p, base, pal):
    w, wood = min(p.w, 0.36), shade(pal.set, p.tone)
    floor = base + 0.06
    d.rectangle(view.box(p.u - w / 2, floor - 0.2, p.u + w / 2, floor - 0.17), fill=wood)
    for leg in (-1, 1):
        u = p.u + leg * (w / 2 - 0.03)
        d.rectangle(view.box(u - 0.012, floor - 0.17, u + 0.012, floor), fill=shade(wood, 0.8))


def _couch(d, view, p, base, pal):
    w, cloth = min(p.w, 0.42), shade(pal.set, p.tone * 1.25)
    floor = base + 0.06
    rounded(d, view.box(p.u - w / 2, floor - 0.24, p.u + w / 2, floor - 0.02),
             radius=view.px(0.03), fill=shade(cloth, 0.85))
    d.rectangle(view.box(p.u - w / 2 + 0.04, floor - 0.13, p.u + w / 2 - 0.04, floor - 0.04),
                fill=cloth)


def _floor_lamp(d, view, p, base, pal):
    floor, top = base + 0.05, base - 0.32
    d.line((view.x(p.u), view.y(top), view.x(p.u), view.y(floor)), fill=shade(pal.set, 0.6),
           width=max(1, round(view.px(0.008))))
    hood = [(view.x(p.u - 0.035), view.y(top)), (view.x(p.u + 0.035), view.y(top)),
             (view.x(p.u + 0.06), view.y(top + 0.08)), (view.x(p.u - 0.06), view.y(top + 0.08))]
    d.polygon(hood, fill=pal.light if pal.night else mix(pal.light, pal.set, 0.3))


def _plant(d, view, p, base, pal):
    floor = base + 0.05
    pot = [(view.x(p.u - 0.05), view.y(floor - 0.1)), (view.x(p.u + 0.05), view.y(floor - 0.1)),
           (view.x(p.u + 0.035), view.y(floor)), (view.x(p.u - 0.035), view.y(floor))]
    d.polygon(pot, fill=(150, 88, 60))
    d.ellipse(view.box(p.u - 0.09, floor - 0.3, p.u + 0.09, floor - 0.09), fill=pal.foliage)


_PropDrawer = Callable[[ImageDraw.ImageDraw, _View, _Prop, float, _Palette], None]
_EXTERIOR_DRAW: dict[str, _PropDrawer] = {
    "building": _building, "house": _house, "tree": _tree, "pine": _pine, "lamp": _street_lamp,
}
_INTERIOR_DRAW: dict[str, _PropDrawer] = {
    "window": _window, "door": _door, "frame": _picture, "shelf": _shelf, "table": _table,
    "couch": _couch, "lamp": _floor_lamp, "plant": _plant,
}


def _draw_backdrop(loc: _Location, view: _View, dressing: SetDressing) -> Image.Image:
    image = _gradient(loc, view)
    d = ImageDraw.Draw(image)
    if loc.interior:
        line = max(1, round(view.px(0.01)))
        d.line((0, view.y(loc.horizon), view.width, view.y(loc.horizon)),
               fill=shade(loc.palette.horizon, 0.7), width=line)
    else:
        _draw_sky(d, view, loc)
    drawers = _INTERIOR_DRAW if loc.interior else _EXTERIOR_DRAW
    if loc.terrain == "vault":
        draw_vault_door(d, view, loc.horizon, dressing.vault_door or "closed", loc.palette.light)
    half = view.width / 2 / (view.height * view.zoom) + 0.5
    for prop in loc.props:
        if abs(prop.u - view.cu) < half + prop.w:
            drawers[prop.kind](d, view, prop, loc.horizon, loc.palette)
    if dressing.rooftop and not loc.interior:
        draw_rooftop(d, view, loc.horizon, loc.palette.set, view.width, view.height)
    if dressing.bulb:
        draw_bulb(d, view, 0.35, loc.palette.light, loc.palette.night or loc.interior)
    if dressing.car and not dressing.in_car and not loc.interior:
        draw_car(d, view, loc.horizon, -0.55, (110, 72, 44), loc.palette.night, loc.palette.light)
    return image


# Without characters, framing zooms into the set instead; values are the zoom factor.
_EMPTY_ZOOM = {
    Framing.extreme_wide: 0.8, Framing.wide: 1.0, Framing.medium: 1.6,
    Framing.close_up: 2.4, Framing.extreme_close_up: 3.5,
}


def _empty_view(loc: _Location, framing: Framing, width: int, height: int, dressing: SetDressing) -> _View:
    """Zoom towards the set piece nearest the centre, so closer framings show its detail;
    a vault door, when the words name one, is the set piece."""
    zoom = _EMPTY_ZOOM[framing]
    if loc.terrain == "vault" and dressing.vault_door:
        u, v = vault_centre(loc.horizon)
        zoom = max(zoom, 1.4)  # "the vault door fills the frame"
        return _View(width, height, zoom, u, v)
    hero = min(loc.props, key=lambda p: abs(p.u), default=None)
    if hero is None or zoom <= 1:
        return _View(width, height, zoom)
    t = (zoom - 1) / (max(_EMPTY_ZOOM.values()) - 1)
    focus_v = min(loc.horizon - 0.15, 0.5)
    return _View(width, height, zoom, hero.u * t, 0.5 + (focus_v - 0.5) * t)


# ---------------------------------------------------------------- characters


@dataclass(frozen=True)
class _Placement:
    cx: float  # pixels
    top: float  # pixel row of the top of the head
    scale: float  # pixels per figure height


# Figure height in scene heights, and where the feet (whole-body framings) or the top of
# the head (closer framings) sit, as a fraction of the scene height.
_FIGURE_FRAMING = {
    Framing.extreme_wide: (0.2, "feet", None),
    Framing.wide: (0.62, "feet", 0.95),
    Framing.medium: (1.75, "head", 0.1),
    Framing.close_up: (3.8, "head", 0.08),
    Framing.extreme_close_up: (7.5, "head", -0.12),
}


def _placements(looks: list[Figure], framing: Framing, width: int, height: int,
                horizon: float, seed: int) -> list[_Placement]:
    size, anchor, at = _FIGURE_FRAMING[framing]
    if at is None:  # standing on the ground, in the middle distance
        at = horizon + (1 - horizon) * 0.45
    rng = np.random.default_rng(seed)
    unit = min(width, height)  # a portrait frame must not make the figures wider than it
    n, out = len(looks), []
    for i, look in enumerate(looks):
        cx = width * (i + 0.5) / n + rng.uniform(-1, 1) * 0.15 * width / (n + 1)
        if anchor == "feet":
            scale = size * look.stature * unit
            out.append(_Placement(cx, at * height - scale, scale))
        else:
            out.append(_Placement(cx, at * height, size * unit))
    return out


# ---------------------------------------------------------------- annotations


@lru_cache(maxsize=32)
def _font(size: int) -> Font:
    return ImageFont.load_default(size=size)


def _ellipsize(text: str, font: Font, width: float) -> str:
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text.rstrip() + "…"


def _fit_lines(text: str, font: Font, width: float, max_lines: int) -> list[str]:
    """Greedy word wrap; what does not fit in max_lines ends in an ellipsis."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    if len(lines) > max_lines:  # the overflow makes the last line too long to fit
        lines = lines[:max_lines - 1] + [f"{lines[max_lines - 1]} {lines[max_lines]}"]
    return [_ellipsize(line, font, width) for line in lines]


def _label(d: ImageDraw.ImageDraw, text: str, cx: float, y: float, font: Font,
           width: int) -> None:
    """A paper tag centred on cx with its top at y, kept inside the frame."""
    pad = max(1, font.size // 4)
    tw = font.getlength(text)
    x = min(max(cx - tw / 2, pad + 1), width - tw - pad - 1)
    rounded(d, (x - pad, y, x + tw + pad, y + font.size + 2 * pad), radius=pad,
             fill=PAPER, outline=INK)
    d.text((x, y + pad + font.size * 0.8), text, font=font, fill=INK, anchor="ls")


def _draw_names(d: ImageDraw.ImageDraw, names: list[str], spots: list[_Placement],
                font: Font, width: int, height: int) -> None:
    """Each name above its head, or along the bottom when the head fills the top."""
    tag = font.size + 2 * max(1, font.size // 4)
    for name, at in zip(names, spots):
        y = at.top - 0.05 * at.scale - tag - font.size * 0.3  # clear of hair and hats
        _label(d, name, at.cx, y if y >= 2 else height - tag - font.size * 0.4, font, width)


def _arrow(d: ImageDraw.ImageDraw, start: tuple[float, float], end: tuple[float, float],
           width: int, head: float) -> None:
    dx, dy = end[0] - start[0], end[1] - start[1]
    length = math.hypot(dx, dy)
    ux, uy = dx / length, dy / length
    base = (end[0] - ux * head, end[1] - uy * head)
    d.line((start, base), fill=INK, width=width)
    d.polygon([end, (base[0] - uy * head * 0.6, base[1] + ux * head * 0.6),
               (base[0] + uy * head * 0.6, base[1] - ux * head * 0.6)], fill=INK)


def _draw_move(d: ImageDraw.ImageDraw, move: Move, x: float, y: float, g: float) -> None:
    """The storyboard glyph for a camera move, inside the g-sided square at (x, y)."""
    line, head = max(1, round(g / 14)), g * 0.3
    cx, cy = x + g / 2, y + g / 2
    if move is Move.static:
        s = g * 0.22
        d.rectangle((cx - s, cy - s, cx + s, cy + s), outline=INK, width=line)
    elif move in (Move.push_in, Move.pull_out):
        for sx in (-1, 1):
            for sy in (-1, 1):
                outer = (cx + sx * g / 2, cy + sy * g / 2)
                inner = (cx + sx * g * 0.1, cy + sy * g * 0.1)
                a, b = (outer, inner) if move is Move.push_in else (inner, outer)
                _arrow(d, a, b, line, head * 0.75)
    else:
        ends = {
            Move.pan_left: ((x + g, cy), (x, cy)), Move.pan_right: ((x, cy), (x + g, cy)),
            Move.tilt_up: ((cx, y + g), (cx, y)), Move.tilt_down: ((cx, y), (cx, y + g)),
        }[move]
        _arrow(d, *ends, line, head)


_FRAMING_ABBREV = {
    Framing.extreme_wide: "EWS", Framing.wide: "WS", Framing.medium: "MS",
    Framing.close_up: "CU", Framing.extreme_close_up: "ECU",
}


def _draw_badge(d: ImageDraw.ImageDraw, framing: Framing, move: Move, font: Font,
                width: int) -> tuple[int, int, int, int]:
    """Shot size and camera move in the top-right corner, like a storyboard note; a
    plain rectangle, so that the animatic can hold exactly it still (OVERLAY_KEY)."""
    pad, g = max(2, font.size // 3), round(font.size * 1.3)
    text = _FRAMING_ABBREV[framing]
    tw = font.getlength(text)
    right, top = width - pad - 2, pad + 2
    left = right - (tw + g + 3 * pad)
    box = (math.floor(left), top, math.ceil(right), top + g + 2 * pad)
    d.rectangle(box, fill=PAPER, outline=INK)
    d.text((left + pad, top + pad + g / 2), text, font=font, fill=INK, anchor="lm")
    _draw_move(d, move, right - pad - g, top + pad, g)
    return box


def _draw_caption(d: ImageDraw.ImageDraw, shot_id: str, caption: str, font: Font,
                  box: tuple[int, int, int, int], max_lines: int) -> None:
    """Shot id in bold at the left, the caption wrapped to its right."""
    left, top, right, _ = box
    d.rectangle(box, fill=PAPER)
    pad, line_h = max(2, round(font.size * 0.45)), round(font.size * 1.3)
    baseline = top + pad + font.size * 0.95
    bold = 1 if font.size >= 10 else 0
    d.text((left + pad, baseline), shot_id, font=font, fill=INK, anchor="ls",
           stroke_width=bold, stroke_fill=INK)
    x = left + pad + font.getlength(shot_id) + 2 * bold + font.size
    text = plain_text(caption)
    for i, line in enumerate(_fit_lines(text, font, right - pad - x, max_lines)):
        d.text((x, baseline + i * line_h), line, font=font, fill=INK, anchor="ls")


# ---------------------------------------------------------------- the backend


@keyframe_backends.register
class SketchKeyframes:
    name = "sketch"
    version = "2"
    Options = SketchOptions

    def __init__(self, options: SketchOptions) -> None:
        self.options = options

    @classmethod
    def reads_context(cls, options: SketchOptions) -> bool:
        """Only as a preview of the memory (see `SketchOptions.preview_memory`)."""
        return options.preview_memory

    def render(self, request: KeyframeRequest, progress: StepProgress) -> Image.Image:
        width, height = request.width, request.height
        # Text scales with the frame's short side, so portrait frames stay sane too.
        font = _font(max(6, round(min(height, width) / 26)))
        lines = min(3, max(1, height // 200))
        strip = lines * round(font.size * 1.3) + 2 * max(2, round(font.size * 0.45))
        if not self.options.show_caption or strip > height * 0.4:
            strip = 0
        scene = self._scene(request, width, height - strip, font)
        panel = Image.new("RGB", (width, height), PAPER)
        panel.paste(scene, (0, 0))
        d = ImageDraw.Draw(panel)
        frame = max(1, height // 256)
        d.rectangle((0, 0, width - 1, height - strip - 1), outline=INK, width=frame)
        fixed = []
        if self.options.show_labels and round(font.size * 0.85) >= 7:
            fixed.append(_draw_badge(d, request.framing, request.move, font, width))
        if strip:
            _draw_caption(d, request.shot_id, request.caption, font,
                          (0, height - strip, width - 1, height - 1), lines)
        # Notes on the panel, not in the picture: a camera move in the animatic moves
        # the picture only (see video/animatic.py). Saved as a PNG text chunk.
        overlay = PngImagePlugin.PngInfo()
        overlay.add_text(OVERLAY_KEY, json.dumps({"picture": [0, 0, width, height - strip], "fixed": fixed}))
        panel.encoderinfo = {"pnginfo": overlay}
        progress(1, 1)
        return panel

    def _scene(self, request: KeyframeRequest, width: int, height: int, font: Font) -> Image.Image:
        # request.context (earlier keyframes) only matters to learned models: a sketch's
        # continuity already comes from drawing by location and by name.
        loc = _location(request.location, request.time_of_day)
        dressing = set_dressing(request.location, request.caption)
        characters = request.characters
        if request.framing is Framing.extreme_close_up:
            characters = characters[:1]  # one face fills the frame
        if not characters:
            view = _empty_view(loc, request.framing, width, height, dressing)
            image = _draw_backdrop(loc, view, dressing)
            spots: list[_Placement] = []
        else:
            view = _View(width, height)
            image = _draw_backdrop(loc, view, dressing)
            looks = [figure(c.name, c.description) for c in characters]
            faces = expressions(request.caption, [c.name for c in characters])
            spots = _placements(looks, request.framing, width, height, loc.horizon, request.seed)
            d = ImageDraw.Draw(image)
            for character, look, at in zip(characters, looks, spots):
                line = max(1, min(round(at.scale * 0.004), round(height * 0.01)))
                draw_figure(d, look, at.cx, at.top, at.scale, line, faces[character.name])
        if dressing.in_car:
            draw_car_interior(ImageDraw.Draw(image), view, width, height, (110, 72, 44))
        image = draw_weather(image, dressing, request.location.strip().casefold())
        label_font = _font(round(font.size * 0.85))
        if self.options.show_labels and label_font.size >= 7:
            d = ImageDraw.Draw(image)
            _draw_names(d, [c.name for c in characters], spots, label_font, width, height)
        return image
