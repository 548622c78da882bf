"""board.html: a self-contained page (inline CSS, no script, no network) of shot cards.

Every text from the project is escaped; images and videos are linked by paths relative
to the project folder, where the page is written, so the folder can be moved or zipped.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from urllib.parse import quote

from cinema_cli.pipeline import ProjectStatus
from cinema_cli.project.schema import CHARACTER_TAG, CinemaConfig, Script
from cinema_cli.review.cards import Card

_CSS = """
:root { color-scheme: light dark; --bg: #f4f1ea; --card: #fffdf8; --ink: #222; --dim: #6b6b6b;
        --stale: #c0392b; --missing: #8e44ad; --done: #2e7d32; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #1b1b1d; --card: #26262a; --ink: #eee; --dim: #a0a0a0; } }
* { box-sizing: border-box; }
body { margin: 0; padding: 1.5rem; background: var(--bg); color: var(--ink);
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
header h1 { margin: 0 0 .25rem; font-size: 1.6rem; }
header p { margin: .2rem 0; color: var(--dim); }
.grid { display: grid; gap: 1rem; margin-top: 1.25rem;
        grid-template-columns: repeat(auto-fill, minmax(min(100%, 280px), 1fr)); }
.card { background: var(--card); border-radius: 8px; overflow: hidden; border: 3px solid transparent;
        box-shadow: 0 1px 3px rgba(0,0,0,.15); }
.card.stale { border-color: var(--stale); }
.card.missing { border-color: var(--missing); }
.card:target { box-shadow: 0 0 0 4px #f1c40f; }
.frame img { display: block; width: 100%; height: auto; }
.frame.none { aspect-ratio: var(--aspect); display: grid; place-items: center; color: var(--dim);
              background: repeating-linear-gradient(45deg, transparent 0 8px, rgba(127,127,127,.12) 8px 16px); }
.meta { padding: .6rem .8rem .8rem; }
.meta h2 { margin: 0; font-size: 1.05rem; display: flex; gap: .5rem; align-items: baseline; flex-wrap: wrap; }
.meta h2 a { color: inherit; text-decoration: none; }
.scene { color: var(--dim); font-weight: normal; font-size: .9rem; }
.badge { font-size: .75rem; font-weight: bold; text-transform: uppercase; letter-spacing: .05em;
         color: #fff; padding: .05rem .45rem; border-radius: 4px; }
.badge.stale { background: var(--stale); } .badge.missing { background: var(--missing); }
.badge.done { background: var(--done); }
.why { color: var(--stale); font-size: .85rem; margin: .3rem 0; }
.caption { margin: .4rem 0; }
.who { font-weight: 600; }
.dialogue { font-style: italic; margin: .3rem 0; }
dl { display: grid; grid-template-columns: auto 1fr; gap: 0 .6rem; margin: .4rem 0; font-size: .85rem; }
dt { color: var(--dim); } dd { margin: 0; }
.context, .links { font-size: .85rem; margin: .3rem 0; }
"""


def _caption(caption: str) -> str:
    """The caption escaped, with each <Name> tag shown as the name in bold."""
    parts, last = [], 0
    for match in CHARACTER_TAG.finditer(caption):
        parts.append(escape(caption[last:match.start()]))
        parts.append(f'<span class="who">{escape(match[1])}</span>')
        last = match.end()
    parts.append(escape(caption[last:]))
    return "".join(parts)


def _href(root: Path, path: Path) -> str:
    return escape(quote(path.relative_to(root).as_posix()))


def _context(card: Card, ids: set[str]) -> str:
    links = []
    for entry in card.context:
        shot = escape(str(entry["shot"]))
        score = f" ({entry['score']:.2f})" if isinstance(entry.get("score"), (int, float)) else ""
        # A link only to a card on this page: a removed shot is named, not linked.
        links.append(f'<a href="#shot-{shot}">{shot}</a>{score}' if entry["shot"] in ids else f"{shot}{score}")
    return ", ".join(links) if links else "none"


def _card(root: Path, card: Card, ids: set[str], width: int, height: int) -> str:
    shot = card.shot
    sid = escape(shot.id)
    if card.keyframe is not None:
        frame = (f'<a class="frame" href="{_href(root, card.keyframe)}"><img src="{_href(root, card.keyframe)}" '
                 f'alt="keyframe of {sid}" width="{width}" height="{height}" loading="lazy"></a>')
    else:
        frame = '<div class="frame none">no keyframe yet</div>'
    why = f'<p class="why">{escape("; ".join(card.reasons))}</p>' if card.reasons else ""
    dialogue = f'<p class="dialogue">“{escape(shot.dialogue)}”</p>' if shot.dialogue else ""
    video = f'<p class="links"><a href="{_href(root, card.video)}">shot video</a></p>' if card.video else ""
    return f"""<article class="card {card.state}" id="shot-{sid}">
{frame}
<div class="meta">
<h2><a href="#shot-{sid}">{sid}</a> <span class="scene">{escape(shot.scene)}</span> <span class="badge {card.state}">{card.state}</span></h2>
{why}<p class="caption">{_caption(shot.caption)}</p>
{dialogue}<dl><dt>duration</dt><dd>{shot.duration:g} s</dd><dt>transition</dt><dd>{escape(shot.transition)}</dd><dt>camera</dt><dd>{escape(shot.camera)}</dd></dl>
<p class="context">conditioned on: {_context(card, ids)}</p>
{video}</div>
</article>"""


def board_html(root: Path, script: Script, config: CinemaConfig, cards: list[Card], status: ProjectStatus) -> str:
    width, height = config.resolution.width, config.resolution.height
    ids = {card.shot.id for card in cards}
    not_current = sum(card.state != "done" for card in cards)
    seconds = sum(card.shot.duration for card in cards)
    summary = (f"{len(cards)} shots · {seconds:g} s of shots · film {status.film.state}"
               + (f" · {not_current} shot(s) not current" if not_current else ""))
    body = "\n".join(_card(root, card, ids, width, height) for card in cards)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(script.title)} · board</title>
<style>{_CSS}:root {{ --aspect: {width} / {height}; }}</style>
</head>
<body>
<header>
<h1>{escape(script.title)}</h1>
{f"<p>{escape(script.logline)}</p>" if script.logline else ""}
<p>{escape(summary)}</p>
</header>
<main class="grid">
{body}
</main>
</body>
</html>
"""
