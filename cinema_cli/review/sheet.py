"""board.png: a contact sheet of the keyframes, each labelled with its shot, scene,
length and transition, and framed in red with a STALE (or MISSING) tag when the shot is
not current. One keyframe is open at a time."""

from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont

from cinema_cli.project.images import image_problem
from cinema_cli.project.schema import Resolution, plain_text
from cinema_cli.review.cards import Card

COLUMNS = 4
THUMB_WIDTH = 320
PAD = 12
CAPTION_LINES = 3
LABEL_HEIGHT = 22 + CAPTION_LINES * 16 + 4
TITLE_HEIGHT = 40
BACKGROUND, INK, DIM = (30, 30, 32), (235, 235, 235), (150, 150, 150)
MARK = {"stale": (192, 57, 43), "missing": (142, 68, 173)}


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """`text` on one line (line breaks and runs of spaces as one space), cut with an
    ellipsis to fit `width` pixels. Bounded time whatever the caption's length: no glyph
    is narrower than a pixel, so at most `width` characters can fit, and the cut is
    found by bisection."""
    text = " ".join(text.split())
    if len(text) <= width and draw.textlength(text, font=font) <= width:
        return text
    low, high = 0, min(len(text), width)  # the longest prefix that fits is in [low, high]
    while low < high:
        middle = (low + high + 1) // 2
        if draw.textlength(text[:middle] + "…", font=font) <= width:
            low = middle
        else:
            high = middle - 1
    return text[:low] + "…"


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int, lines: int) -> list[str]:
    """Greedy word wrap into at most `lines` lines; the last one ends in an ellipsis when cut."""
    rows: list[str] = []
    words = text.split()
    for index, word in enumerate(words):
        if rows and draw.textlength(f"{rows[-1]} {word}", font=font) <= width:
            rows[-1] += f" {word}"
        elif len(rows) == lines:
            rows[-1] = _fit(draw, f"{rows[-1]} {' '.join(words[index:index + 40])}", font, width)
            break
        else:
            rows.append(_fit(draw, word, font, width))
    return rows


def contact_sheet(title: str, cards: list[Card], resolution: Resolution) -> Image.Image:
    thumb_h = round(THUMB_WIDTH * resolution.height / resolution.width)
    columns = min(COLUMNS, max(1, len(cards)))
    rows = math.ceil(len(cards) / columns)
    cell_w, cell_h = THUMB_WIDTH + PAD, thumb_h + LABEL_HEIGHT + PAD
    sheet = Image.new("RGB", (PAD + columns * cell_w, TITLE_HEIGHT + PAD + rows * cell_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    big, small = ImageFont.load_default(size=20), ImageFont.load_default(size=13)
    draw.text((PAD, PAD), _fit(draw, title, big, sheet.width - 2 * PAD), font=big, fill=INK)
    for index, card in enumerate(cards):
        x = PAD + (index % columns) * cell_w
        y = TITLE_HEIGHT + PAD + (index // columns) * cell_h
        # A keyframe replaced by hand may be no image, or a decompression bomb: say so.
        unreadable = card.keyframe is not None and image_problem(card.keyframe, verify=True) is not None
        if card.keyframe is not None and not unreadable:
            with Image.open(card.keyframe) as image:
                sheet.paste(image.convert("RGB").resize((THUMB_WIDTH, thumb_h), Image.Resampling.LANCZOS), (x, y))
        else:
            draw.rectangle((x, y, x + THUMB_WIDTH - 1, y + thumb_h - 1), fill=(60, 60, 64))
            draw.text((x + THUMB_WIDTH // 2, y + thumb_h // 2), "unreadable keyframe" if unreadable else
                      "no keyframe", font=small, fill=DIM, anchor="mm")
        if card.state in MARK:
            colour = MARK[card.state]
            draw.rectangle((x, y, x + THUMB_WIDTH - 1, y + thumb_h - 1), outline=colour, width=4)
            tag = card.state.upper()
            box = draw.textbbox((x + 8, y + 6), tag, font=small)
            draw.rectangle((box[0] - 4, box[1] - 3, box[2] + 4, box[3] + 3), fill=colour)
            draw.text((x + 8, y + 6), tag, font=small, fill=(255, 255, 255))
        shot = card.shot
        line = f"{shot.id} · {shot.scene} · {shot.duration:g}s · {shot.transition}"
        draw.text((x, y + thumb_h + 4), _fit(draw, line, small, THUMB_WIDTH), font=small, fill=INK)
        caption = plain_text(shot.caption)  # <Dex> reads as Dex
        for row, text in enumerate(_wrap(draw, caption, small, THUMB_WIDTH, CAPTION_LINES)):
            draw.text((x, y + thumb_h + 22 + row * 16), text, font=small, fill=DIM)
    return sheet
