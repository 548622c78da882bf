"""The `sketch` previz's people: a figure drawn from the character's description.

What the description says (sketch_words.parse_look) is drawn; what it leaves out is
picked from a hash of the name, so a character looks the same in every shot.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from PIL import ImageDraw

from cinema_cli.keyframes.sketch_paint import INK, RGB, hash_rng, hsv, mix, rounded, shade
from cinema_cli.keyframes.sketch_words import parse_look

SKINS: tuple[RGB, ...] = ((246, 214, 188), (232, 184, 146), (204, 148, 108), (160, 106, 72),
                          (112, 72, 48), (250, 226, 204))
_HAIRS: tuple[RGB, ...] = ((30, 26, 24), (72, 48, 32), (124, 82, 42), (196, 156, 92),
                           (146, 48, 34))
_TROUSERS: tuple[RGB, ...] = ((48, 52, 66), (72, 62, 52), (40, 40, 44), (92, 94, 104))
_BUILD = {"heavy": 1.32, "thin": 0.84, "athletic": 1.1}


@dataclass(frozen=True)
class Figure:
    """Everything the drawing needs, resolved: the description's words or the name's hash."""

    skin: RGB
    hair: RGB
    hair_style: str  # bald, shaved, short, long, bob, braid, bun, ponytail, curly
    streaks: RGB | None
    facial_hair: tuple[str, ...]
    beard: RGB
    coat: RGB
    coat_kind: str
    inner: RGB | None  # the layer showing at the collar
    trousers: RGB
    skirt: bool
    apron: RGB | None
    tie: RGB | None
    hat: RGB | None
    glasses: str | None
    build: float  # shoulder width factor
    stature: float  # height factor, shown when the whole body is in frame
    old: bool
    freckles: bool
    scar: bool
    chain: bool
    headset: bool


@lru_cache(maxsize=256)
def figure(name: str, description: str = "") -> Figure:
    rng = hash_rng("character", name.strip().casefold())
    hue = rng.random()
    said = parse_look(description)
    default_style = {"man": "short", "woman": "long"}.get(said.sex or "", ("short", "long")[rng.integers(2)])
    age = said.age or 35
    hair = said.hair or (
        (150, 150, 156) if age >= 62 else _HAIRS[rng.integers(len(_HAIRS))])
    coat = said.outer_colour or hsv(hue, rng.uniform(0.45, 0.75), rng.uniform(0.45, 0.8))
    stature = rng.uniform(0.95, 1.02) * (1.07 if said.tall else 0.9 if said.tall is False else 1.0)
    return Figure(
        skin=SKINS[said.skin if said.skin is not None else rng.integers(len(SKINS))],
        hair=hair,
        hair_style=said.hair_style or default_style,
        streaks=said.streaks,
        facial_hair=said.facial_hair,
        beard=said.facial_hair_colour or hair,
        coat=coat,
        coat_kind=said.outer or "jacket",
        inner=said.inner_colour or (hsv(hue + 0.5, 0.25, 0.9) if said.inner else None),
        trousers=said.trousers_colour or _TROUSERS[rng.integers(len(_TROUSERS))],
        skirt=said.trousers == "skirt",
        apron=said.apron,
        tie=said.tie,
        hat=said.hat,
        glasses=said.glasses,
        build=_BUILD.get(said.build or "", rng.uniform(0.95, 1.05)),
        stature=stature * (0.7 if age < 13 else 1.0),
        old=age >= 50,
        freckles=said.freckles,
        scar=said.scar,
        chain=said.chain,
        headset=said.headset,
    )


def draw_figure(d: ImageDraw.ImageDraw, who: Figure, cx: float, top: float, scale: float,
                line: int, face: str = "neutral") -> None:
    """A figure in units of its own height: head top at 0, feet at 1, centred on cx."""

    def box(u0, v0, u1, v1):  # either corner order, so mirrored parts share one call
        u0, u1 = sorted((u0, u1))
        v0, v1 = sorted((v0, v1))
        return (cx + u0 * scale, top + v0 * scale, cx + u1 * scale, top + v1 * scale)

    def poly(points):
        return [(cx + u * scale, top + v * scale) for u, v in points]

    b, ink = who.build, {"outline": INK, "width": line}
    if who.hair_style in ("long", "braid"):
        _hair_behind(d, who, box, ink, scale)
    for side in (-1, 1):
        if not who.skirt:
            d.rectangle(box(side * 0.008, 0.55, side * 0.085 * b, 0.95), fill=who.trousers, **ink)
        d.ellipse(box(side * 0.004, 0.93, side * 0.1 * b, 0.99), fill=INK)
        d.ellipse(box(side * 0.11 * b, 0.5, side * 0.165 * b, 0.56), fill=who.skin, **ink)
        rounded(d, box(side * 0.11 * b, 0.19, side * 0.168 * b, 0.53),
                radius=0.02 * scale, fill=who.coat, **ink)
    if who.skirt:
        d.polygon(poly([(-0.1 * b, 0.5), (0.1 * b, 0.5), (0.14 * b, 0.8), (-0.14 * b, 0.8)]),
                  fill=who.trousers, **ink)
        for side in (-1, 1):
            d.rectangle(box(side * 0.02, 0.8, side * 0.06, 0.95), fill=who.skin, **ink)
    d.rectangle(box(-0.022 * b, 0.12, 0.022 * b, 0.18), fill=who.skin, **ink)
    # The torso: a heavy build gets a belly, a thin one narrow hips.
    belly = 0.15 * b if b > 1.2 else 0.12 * b
    d.polygon(poly([(-0.1 * b, 0.165), (0.1 * b, 0.165), (0.135 * b, 0.21), (belly, 0.42),
                    (0.12 * b, 0.58), (-0.12 * b, 0.58), (-belly, 0.42), (-0.135 * b, 0.21)]),
              fill=who.coat, **ink)
    if who.inner is not None:  # the layer underneath, showing between the lapels
        d.polygon(poly([(-0.04 * b, 0.165), (0.04 * b, 0.165), (0.015, 0.4), (-0.015, 0.4)]),
                  fill=who.inner, **ink)
    if who.coat_kind == "overalls":
        for side in (-1, 1):
            d.line(poly([(side * 0.06 * b, 0.17), (side * 0.05 * b, 0.3)]), fill=shade(who.coat, 0.6),
                   width=max(1, line * 2))
    if who.apron is not None:
        d.rectangle(box(-0.075 * b, 0.26, 0.075 * b, 0.7), fill=who.apron, **ink)
    if who.tie is not None:
        d.polygon(poly([(-0.012, 0.17), (0.012, 0.17), (0.018, 0.32), (0, 0.35), (-0.018, 0.32)]),
                  fill=who.tie, **ink)
    if who.chain:
        d.arc(box(-0.045, 0.13, 0.045, 0.23), 20, 160, fill=(212, 170, 60), width=max(1, line * 2))
    d.ellipse(box(-0.055, 0, 0.055, 0.145), fill=who.skin, **ink)
    if who.old and 0.145 * scale >= 30:  # lines on the brow once there is room for them
        for v in (0.035, 0.045):
            d.line(poly([(-0.025, v), (0.025, v)]), fill=shade(who.skin, 0.75), width=max(1, line))
    _hair_on_top(d, who, box, ink, scale)
    if 0.145 * scale >= 18:  # a face once the head is big enough to read one
        _face(d, who, box, poly, line, scale, face)
    if who.headset:
        d.arc(box(-0.062, -0.005, 0.062, 0.12), 180, 360, fill=INK, width=max(1, line * 2))
        d.line(poly([(0.058, 0.075), (0.02, 0.115)]), fill=INK, width=max(1, line * 2))


def _hair_behind(d, who: Figure, box, ink: dict, scale: float) -> None:
    if who.hair_style == "braid":  # a braid hangs down one side
        for i in range(5):
            v = 0.1 + i * 0.04
            d.ellipse(box(0.045, v, 0.085, v + 0.05), fill=who.hair, **ink)
        return
    rounded(d, box(-0.068, -0.008, 0.068, 0.25), radius=0.03 * scale, fill=who.hair, **ink)


def _hair_on_top(d, who: Figure, box, ink: dict, scale: float) -> None:
    style, hair = who.hair_style, who.hair
    if who.hat is not None:
        d.chord(box(-0.06, -0.02, 0.06, 0.1), 180, 360, fill=who.hat, **ink)
        d.rectangle(box(-0.075, 0.035, 0.075, 0.05), fill=who.hat, **ink)
        return
    if style == "bald":
        # A shine on the scalp: the head is bare, not hidden.
        d.arc(box(-0.035, 0.01, 0.02, 0.06), 200, 260, fill=mix(who.skin, (255, 255, 255), 0.6),
              width=max(1, round(scale * 0.004)))
        return
    if style == "shaved":  # a shadow of stubble over the scalp
        d.chord(box(-0.055, 0.0, 0.055, 0.07), 180, 360, fill=mix(who.skin, hair, 0.35))
        return
    if style == "curly":  # a cloud of curls
        for u, v in ((-0.05, 0.02), (-0.025, -0.012), (0.005, -0.02), (0.035, -0.012), (0.055, 0.02),
                     (-0.062, 0.05), (0.062, 0.05)):
            d.ellipse(box(u - 0.028, v - 0.022, u + 0.028, v + 0.026), fill=hair, **ink)
        return
    if style == "bob":
        rounded(d, box(-0.066, -0.01, 0.066, 0.11), radius=0.035 * scale, fill=hair, **ink)
        d.rectangle(box(-0.046, 0.035, 0.046, 0.1), fill=who.skin)  # the face under the fringe
        d.line(box(-0.046, 0.035, 0.046, 0.035)[:4], fill=INK, width=ink["width"])
        return
    d.chord(box(-0.058, -0.012, 0.058, 0.1), 180, 360, fill=hair, **ink)
    if who.streaks is not None:
        for u in (-0.03, 0.0, 0.03):
            d.line(box(u, -0.008, u + 0.01, 0.035)[:4], fill=who.streaks, width=max(1, round(scale * 0.004)))
    if style == "bun":
        d.ellipse(box(-0.025, -0.045, 0.025, 0.005), fill=hair, **ink)
    elif style == "ponytail":
        rounded(d, box(0.045, 0.0, 0.085, 0.16), radius=0.02 * scale, fill=hair, **ink)


def _face(d, who: Figure, box, poly, line: int, scale: float, face: str) -> None:
    eye_r = 0.007 if face not in ("afraid", "surprised") else 0.01
    for side in (-1, 1):
        ex = side * 0.02
        if face == "eyes_closed":
            d.arc(box(ex - 0.01, 0.062, ex + 0.01, 0.078), 0, 180, fill=INK, width=line)
        else:
            if face in ("afraid", "surprised"):
                d.ellipse(box(ex - eye_r, 0.072 - eye_r, ex + eye_r, 0.072 + eye_r), fill=(250, 250, 250),
                          outline=INK, width=line)
            d.ellipse(box(ex - 0.006, 0.066, ex + 0.006, 0.078), fill=INK)
        # (inner end, outer end) heights: angry pulls the inner ends down, worry lifts them.
        brow = {"angry": (0.062, 0.05), "sad": (0.048, 0.058), "afraid": (0.044, 0.054),
                "surprised": (0.044, 0.044)}.get(face, (0.052, 0.052))
        inner, outer = (side * 0.008, brow[0]), (side * 0.034, brow[1])
        d.line(poly([inner, outer]), fill=who.hair if who.hair_style != "bald" else INK,
               width=max(1, line * 2))
    if who.glasses:
        lens = INK if who.glasses == "sunglasses" else None
        for side in (-1, 1):
            d.ellipse(box(side * 0.02 - 0.015, 0.06, side * 0.02 + 0.015, 0.085), fill=lens, outline=INK,
                      width=max(1, line))
        d.line(poly([(-0.005, 0.07), (0.005, 0.07)]), fill=INK, width=max(1, line))
    if who.scar:
        d.line(poly([(-0.03, 0.045), (-0.012, 0.062)]), fill=(170, 70, 70), width=max(1, line))
    if who.freckles:
        for u, v in ((-0.03, 0.088), (-0.022, 0.094), (-0.036, 0.094), (0.03, 0.088), (0.022, 0.094),
                     (0.036, 0.094)):
            r = 0.0022
            d.ellipse(box(u - r, v - r, u + r, v + r), fill=shade(who.skin, 0.7))
    if "beard" in who.facial_hair or "goatee" in who.facial_hair:
        span = 0.05 if "beard" in who.facial_hair else 0.02
        d.chord(box(-span, 0.07, span, 0.16), 0, 180, fill=who.beard, outline=INK, width=line)
    if "stubble" in who.facial_hair:
        d.chord(box(-0.05, 0.07, 0.05, 0.15), 0, 180, fill=mix(who.skin, who.beard, 0.3))
    mouth = {"happy": ("arc", 30, 150), "sad": ("arc", 210, 330), "angry": ("line", 0, 0),
             "neutral": ("line", 0, 0), "eyes_closed": ("line", 0, 0)}.get(face, ("open", 0, 0))
    if mouth[0] == "arc":
        y0 = 0.085 if face == "happy" else 0.11
        d.arc(box(-0.018, y0, 0.018, y0 + 0.03), mouth[1], mouth[2], fill=INK, width=line)
    elif mouth[0] == "open":
        d.ellipse(box(-0.008, 0.104, 0.008, 0.122), fill=INK)
    else:
        d.line(poly([(-0.015, 0.112), (0.015, 0.112)]), fill=INK, width=line)
    if "moustache" in who.facial_hair:
        d.polygon(poly([(-0.03, 0.108), (-0.012, 0.096), (0.0, 0.1), (0.012, 0.096), (0.03, 0.108),
                        (0.0, 0.106)]), fill=who.beard, outline=INK)
