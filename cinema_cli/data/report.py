"""`cinema data status` and `cinema data show`: what a dataset holds, in numbers and in pictures.

`show` writes DATASET/show/FILM.png (a contact sheet: every shot's keyframe, its time
range and how it ends, its caption, and a red frame with the reasons when dropped) and
DATASET/show/index.html (the same as a page, images linked from films/*/keyframes).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from html import escape
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from cinema_cli.data.state import DONE, FAILED, PENDING, DatasetDir
from cinema_cli.errors import BadInput
from cinema_cli.project.files import atomic_output, atomic_write_text
from cinema_cli.review.sheet import BACKGROUND, DIM, INK, PAD, _fit

THUMB_WIDTH, LABEL_HEIGHT, COLUMNS, TITLE_HEIGHT = 240, 58, 4, 40
DROPPED = (192, 57, 43)


def open_dataset(root: Path) -> tuple[DatasetDir, dict]:
    dataset = DatasetDir(root)
    if not dataset.exists():
        raise BadInput(f"{root} is not a prepared dataset (no manifest.json); run `cinema data prepare FILM -o {root}`")
    return dataset, dataset.read_manifest()


def status(root: Path) -> dict:
    _, manifest = open_dataset(root)
    films = manifest["films"]
    states = {state: sorted(f for f, e in films.items() if e["state"] == state) for state in (DONE, PENDING, FAILED)}
    dropped = Counter()
    samples = Counter()
    detectors = Counter()
    for entry in films.values():
        dropped.update(entry.get("dropped", {}))
        samples.update(entry.get("samples", {}))
        detectors.update([entry["detector"]] if entry.get("detector") else [])
    return {
        "dataset": str(root), "films": len(films), **states,
        "why": {f: e["why"] for f, e in films.items() if e.get("why")},
        "hours": round(sum(e.get("seconds", 0) for e in films.values()) / 3600, 4),
        "shots": sum(e.get("shots", 0) for e in films.values()),
        "kept": sum(e.get("kept", 0) for e in films.values()),
        "dropped": dict(sorted(dropped.items())),
        "detectors": dict(sorted(detectors.items())),  # shot-boundary detector -> films
        "multishot_samples": dict(sorted(samples.items(), key=lambda kv: float(kv[0]))),
    }


def _shots(dataset: DatasetDir, film: str) -> list[dict]:
    frames = dataset.read_step(film, "frames")
    judged = dataset.read_step(film, "filters")
    captions = (dataset.read_step(film, "captions") or {}).get("data") or {}
    if not frames:
        return []
    results = judged["data"] if judged else [None] * len(frames["data"])
    rows = []
    for shot, result in zip(frames["data"], results):
        caption = (captions.get("shots") or {}).get(str(shot["index"]))
        rows.append({**shot, "reasons": result["reasons"] if result else [],
                     "caption": caption["caption"] if caption else None})
    return rows


def show(root: Path, film: str | None = None) -> dict:
    dataset, manifest = open_dataset(root)
    films = sorted(manifest["films"])
    if film is not None:
        if film not in manifest["films"]:
            raise BadInput(f"--film {film}: no such film in {root}; films: {', '.join(films) or 'none'}")
        films = [film]
    out = dataset.root / "show"
    sheets, sections = [], []
    for name in films:
        rows = _shots(dataset, name)
        sheet = out / f"{name}.png"
        with atomic_output(sheet, dataset.tmp_dir) as temp:
            _contact_sheet(dataset, name, rows).save(temp, "PNG")
        sheets.append(str(sheet))
        sections.append(_section(name, manifest["films"][name], rows))
    page = out / "index.html"
    atomic_write_text(page, _page(root.name, sections), dataset.tmp_dir)
    return {"html": str(page), "sheets": sheets}


def _label(shot: dict) -> str:
    return f"#{shot['index']} {shot['start']:.2f}-{shot['end']:.2f}s · {shot['after']}"


def _contact_sheet(dataset: DatasetDir, film: str, rows: list[dict]) -> Image.Image:
    thumb_h = THUMB_WIDTH // 2
    columns = min(COLUMNS, max(1, len(rows)))
    cell_w, cell_h = THUMB_WIDTH + PAD, thumb_h + LABEL_HEIGHT + PAD
    sheet = Image.new("RGB", (PAD + columns * cell_w, TITLE_HEIGHT + PAD + max(1, math.ceil(len(rows) / columns)) * cell_h),
                      BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    big, small = ImageFont.load_default(size=20), ImageFont.load_default(size=13)
    kept = sum(not r["reasons"] for r in rows)
    draw.text((PAD, PAD), _fit(draw, f"{film} · {len(rows)} shots · {kept} kept", big, sheet.width - 2 * PAD),
              font=big, fill=INK)
    for i, row in enumerate(rows):
        x = PAD + (i % columns) * cell_w
        y = TITLE_HEIGHT + PAD + (i // columns) * cell_h
        with Image.open(dataset.film_dir(film) / row["keyframe"]) as image:
            thumb = image.convert("RGB")
            thumb.thumbnail((THUMB_WIDTH, thumb_h))
            sheet.paste(thumb, (x, y))
        if row["reasons"]:
            draw.rectangle((x, y, x + thumb.width - 1, y + thumb.height - 1), outline=DROPPED, width=4)
        draw.text((x, y + thumb_h + 4), _fit(draw, _label(row), small, THUMB_WIDTH), font=small, fill=INK)
        why = ", ".join(row["reasons"])
        draw.text((x, y + thumb_h + 22), _fit(draw, f"dropped: {why}" if why else "kept", small, THUMB_WIDTH),
                  font=small, fill=DROPPED if why else DIM)
        draw.text((x, y + thumb_h + 40), _fit(draw, row["caption"] or "", small, THUMB_WIDTH), font=small, fill=DIM)
    return sheet


def _section(film: str, entry: dict, rows: list[dict]) -> str:
    state = escape(entry["state"] + (f": {entry['why']}" if entry.get("why") else ""))
    cards = []
    for row in rows:
        why = ", ".join(row["reasons"])
        cards.append(
            f'<figure class="{"dropped" if why else "kept"}"><img src="../films/{escape(film)}/{escape(row["keyframe"])}" '
            f'alt="shot {row["index"]}" loading="lazy"><figcaption><b>{escape(_label(row))}</b>'
            f' · frames {row["start_frame"]}-{row["end_frame"]} · crop {escape(json.dumps(row["crop"]))}<br>'
            f'{"<span class=why>dropped: " + escape(why) + "</span>" if why else "kept"}'
            f'{"<br>" + escape(row["caption"]) if row["caption"] else ""}</figcaption></figure>')
    return f'<section><h2>{escape(film)}</h2><p>{state}</p><div class="grid">{"".join(cards)}</div></section>'


def _page(title: str, sections: list[str]) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)} · dataset</title>
<style>body{{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;background:#f4f1ea;color:#222}}
.grid{{display:grid;gap:.8rem;grid-template-columns:repeat(auto-fill,minmax(240px,1fr))}}
figure{{margin:0;background:#fffdf8;border:3px solid transparent;border-radius:6px;overflow:hidden}}
figure.dropped{{border-color:#c0392b}} img{{display:block;width:100%}} figcaption{{padding:.4rem .6rem}}
.why{{color:#c0392b}}</style></head>
<body><h1>{escape(title)}</h1>
{"".join(sections)}
</body></html>
"""
