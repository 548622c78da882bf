"""The `sketch` previz's set dressing: the key props and the weather a shot's words name
(sketch_words.set_dressing), drawn over the location's backdrop.

`view` maps world units (scene heights; u = 0 the frame centre, v = 0 the top) to
pixels, as in sketch.py; the props stand on the floor line or ground at `horizon`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from cinema_cli.keyframes.sketch_paint import INK, RGB, hash_rng, mix, shade
from cinema_cli.keyframes.sketch_words import SetDressing

STEEL: RGB = (150, 156, 166)
_VAULT_R = 0.27


def vault_centre(horizon: float) -> tuple[float, float]:
    return (0.0, horizon - _VAULT_R - 0.03)


def draw_vault_door(d: ImageDraw.ImageDraw, view, horizon: float, state: str, light: RGB) -> None:
    """A round steel door on the back wall: rings, locking bolts, a spoked wheel and a dial;
    open, the round doorway glows and the door stands swung aside."""
    u, v = vault_centre(horizon)
    r, w = _VAULT_R, max(1, round(view.px(0.006)))
    d.ellipse(view.box(u - r * 1.12, v - r * 1.12, u + r * 1.12, v + r * 1.12), fill=shade(STEEL, 0.55),
              outline=INK, width=w)
    if state == "open":
        d.ellipse(view.box(u - r, v - r, u + r, v + r), fill=mix(light, (255, 214, 120), 0.5), outline=INK, width=w)
        u += r * 1.9  # the door, swung open to the right, seen edge-on as an ellipse
        d.ellipse(view.box(u - r * 0.35, v - r, u + r * 0.35, v + r), fill=STEEL, outline=INK, width=w)
        d.ellipse(view.box(u - r * 0.12, v - r * 0.3, u + r * 0.12, v + r * 0.3), fill=shade(STEEL, 0.8),
                  outline=INK, width=w)
        return
    d.ellipse(view.box(u - r, v - r, u + r, v + r), fill=STEEL, outline=INK, width=w)
    d.ellipse(view.box(u - r * 0.82, v - r * 0.82, u + r * 0.82, v + r * 0.82), outline=shade(STEEL, 0.7), width=w)
    for angle in np.linspace(0, 2 * np.pi, 12, endpoint=False):  # locking bolts on the rim
        bu, bv = u + np.cos(angle) * r * 0.91, v + np.sin(angle) * r * 0.91
        d.ellipse(view.box(bu - 0.012, bv - 0.012, bu + 0.012, bv + 0.012), fill=shade(STEEL, 0.6))
    for angle in np.linspace(0, np.pi, 3, endpoint=False):  # the spoked wheel
        du, dv = np.cos(angle) * r * 0.5, np.sin(angle) * r * 0.5
        d.line((view.x(u - du), view.y(v - dv), view.x(u + du), view.y(v + dv)), fill=INK, width=w * 2)
    d.ellipse(view.box(u - r * 0.2, v - r * 0.2, u + r * 0.2, v + r * 0.2), fill=(214, 216, 222),
              outline=INK, width=w)
    d.line((view.x(u), view.y(v - r * 0.2), view.x(u), view.y(v - r * 0.08)), fill=INK, width=w)


def draw_car(d: ImageDraw.ImageDraw, view, horizon: float, u: float, colour: RGB, night: bool,
             light: RGB) -> None:
    """A boxy sedan side-on, on the near side of the street."""
    base = horizon + (1 - horizon) * 0.55
    w, h = 0.62, 0.12
    lw = max(1, round(view.px(0.005)))
    d.rectangle(view.box(u - w / 2, base - h, u + w / 2, base - 0.03), fill=colour, outline=INK, width=lw)
    d.polygon([(view.x(u - w * 0.28), view.y(base - h)), (view.x(u - w * 0.18), view.y(base - h * 1.8)),
               (view.x(u + w * 0.2), view.y(base - h * 1.8)), (view.x(u + w * 0.32), view.y(base - h))],
              fill=shade(colour, 0.85), outline=INK, width=lw)
    glass = mix(light, (40, 50, 70), 0.5 if night else 0.7)
    for a, b in ((-0.23, -0.02), (0.02, 0.26)):
        d.rectangle(view.box(u + w * a, base - h * 1.65, u + w * b, base - h * 1.08), fill=glass)
    for wu in (-0.3, 0.3):
        d.ellipse(view.box(u + wu * w * 1.1 - 0.05, base - 0.08, u + wu * w * 1.1 + 0.05, base + 0.02), fill=INK)
    d.ellipse(view.box(u + w / 2 - 0.03, base - h * 0.9, u + w / 2, base - h * 0.6),
              fill=light if night else (240, 240, 220))


def draw_bulb(d: ImageDraw.ImageDraw, view, u: float, light: RGB, night: bool) -> None:
    """A bare bulb hanging on its cord from the top of the frame."""
    v = 0.2
    d.line((view.x(u), view.y(-1.0), view.x(u), view.y(v)), fill=INK, width=max(1, round(view.px(0.004))))
    if night:
        d.ellipse(view.box(u - 0.09, v - 0.06, u + 0.09, v + 0.12), fill=mix(light, (60, 50, 40), 0.55))
    d.ellipse(view.box(u - 0.025, v, u + 0.025, v + 0.055), fill=light, outline=INK)


def draw_rooftop(d: ImageDraw.ImageDraw, view, horizon: float, pal_set: RGB, width: int, height: int) -> None:
    """The flat roof in the foreground and its parapet: the city is below and beyond."""
    ledge = horizon + 0.1
    roof = shade(pal_set, 0.8)
    _band_to_bottom(d, view.y(ledge), width, height, fill=roof)
    d.rectangle((0, view.y(ledge - 0.05), width, view.y(ledge)), fill=shade(pal_set, 1.15), outline=INK)
    for u in (-1.6, -0.9, 1.0, 1.7):  # vents and an antenna on the roof
        d.rectangle(view.box(u - 0.05, ledge - 0.02, u + 0.05, ledge + 0.07), fill=shade(roof, 0.7), outline=INK)
    d.line((view.x(1.3), view.y(ledge - 0.4), view.x(1.3), view.y(ledge)), fill=INK,
           width=max(1, round(view.px(0.006))))


def _band_to_bottom(d: ImageDraw.ImageDraw, top: float, width: int, height: int, **style) -> None:
    """A band from `top` to the frame's bottom edge; a close-up's zoom can push `top`
    below the frame, and then there is nothing to draw."""
    if top < height:
        d.rectangle((0, top, width, height), **style)


def draw_car_interior(d: ImageDraw.ImageDraw, view, width: int, height: int, colour: RGB) -> None:
    """Inside a car: the dashboard along the bottom and the pillars of the windshield."""
    dash = shade(colour, 0.5)
    _band_to_bottom(d, view.y(0.86), width, height, fill=dash, outline=INK)
    for side in (-1, 1):
        x = width / 2 + side * width * 0.48
        d.polygon([(x, 0), (x + side * width * 0.05, 0), (x + side * width * 0.02, view.y(0.86)),
                   (x - side * width * 0.02, view.y(0.86))], fill=dash)


def draw_weather(image: Image.Image, dressing: SetDressing, key: str) -> Image.Image:
    """Rain streaks, snowflakes or fog over the whole picture; seeded by the place, so
    the same place has the same weather pattern in every shot."""
    if dressing.fog:
        haze = Image.new("RGB", image.size, (200, 204, 210))
        image = Image.blend(image, haze, 0.35)
    if not (dressing.rain or dressing.snow):
        return image
    w, h = image.size
    rng = hash_rng("weather", key)
    d = ImageDraw.Draw(image)
    count = int(w * h / (900 if dressing.rain else 700))
    xs, ys = rng.uniform(0, w, count), rng.uniform(0, h, count)
    if dressing.rain:
        length, lw = max(3, h / 18), max(1, round(h / 400))
        for x, y in zip(xs, ys):
            d.line((x, y, x - length * 0.25, y + length), fill=(196, 206, 222), width=lw)
    else:
        r = max(1.0, h / 220)
        for x, y in zip(xs, ys):
            d.ellipse((x - r, y - r, x + r, y + r), fill=(246, 246, 250))
    return image
