"""`cinema board`: board.html (parsed, every reference checked) and board.png."""

from __future__ import annotations

import hashlib
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from PIL import Image

from cinema_cli.review.sheet import MARK, PAD, THUMB_WIDTH, TITLE_HEIGHT
from conftest import manifest_records, put_record
from finishing_support import cinema, cinema_json, small_project

W, H, FPS = 128, 64, 8
EDITED = 'A safe & a "dial" <Mara> turns, 2 > 1'


class Page(HTMLParser):
    """Every element's tag and attributes, plus the text inside each card."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.card_text: dict[str, str] = {}
        self._card: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.elements.append((tag, attrs))
        if tag == "article":
            self._card = attrs["id"]
            self.card_text[self._card] = ""

    def handle_endtag(self, tag):
        if tag == "article":
            self._card = None

    def handle_data(self, data):
        if self._card:
            self.card_text[self._card] += data


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = small_project(tmp_path_factory.mktemp("board"), "heist", W, H, FPS)
    cinema("render", cwd=root)
    # s02's keyframe conditioned on s01's, as the memory library records it.
    record = manifest_records(root)["keyframes"]["s02"]
    s01 = hashlib.sha256((root / "keyframes/s01.png").read_bytes()).hexdigest()
    record["recipe"]["context"] = [
        {"shot": "s01", "score": 0.83, "size": [40, 80], "tokens": 12, "output": s01}]
    put_record(root, "keyframes", "s02", record["recipe"], record["output"])
    cinema("shot", "s03", "--caption", EDITED, cwd=root)  # s03 is now stale
    return root


def not_current(project: Path) -> list[str]:
    """The shots `cinema status` calls stale or missing: s03, and the keyframes whose
    context included s03's."""
    status = cinema_json("status", cwd=project)
    return [row["id"] for row in status["shots"] if (row["keyframe"], row["shot"]) != ("done", "done")]


def test_board_html_is_self_contained_and_every_reference_resolves(project):
    data = cinema_json("board", cwd=project)
    assert "s03" in data["not_current"] and data["not_current"] == not_current(project)
    page = Page()
    page.feed((project / "board.html").read_text(encoding="utf-8"))
    page.close()
    ids = {attrs["id"] for _, attrs in page.elements if "id" in attrs}
    refs = [attrs[key] for tag, attrs in page.elements for key in ("src", "href") if key in attrs]
    assert not [tag for tag, _ in page.elements if tag in ("script", "link", "iframe")]
    images = [attrs["src"] for tag, attrs in page.elements if tag == "img"]
    assert len(images) == 14
    for ref in refs:
        url = urlparse(ref)
        assert not url.scheme and not url.netloc, ref  # nothing from the network
        if ref.startswith("#"):
            assert ref[1:] in ids, ref
            continue
        target = (project / unquote(url.path)).resolve()
        assert target.is_file() and project.resolve() in target.parents, ref


def test_stale_shots_are_marked_and_text_is_escaped(project):
    cinema("board", cwd=project)
    page = Page()
    page.feed((project / "board.html").read_text(encoding="utf-8"))
    classes = {attrs["id"]: attrs["class"].split() for tag, attrs in page.elements if tag == "article"}
    stale = not_current(project)
    assert {card for card, c in classes.items() if "stale" in c} == {f"shot-{i}" for i in stale}
    assert all("done" in c for card, c in classes.items() if card.removeprefix("shot-") not in stale)
    text = " ".join(page.card_text["shot-s03"].split())
    assert "stale" in text and "caption changed" in text
    assert 'A safe & a "dial" Mara turns, 2 > 1' in text  # escaped in the file, intact when parsed
    # Each keyframe's context links to the cards of the keyframes it was conditioned on.
    status = cinema_json("status", cwd=project)
    for row in status["shots"]:
        links = {a["href"] for tag, a in page.elements if tag == "a"} if row["context"] else set()
        for entry in row["context"]:
            assert f"#shot-{entry['shot']}" in links
            assert entry["shot"] in page.card_text[f"shot-{row['id']}"].split("conditioned on:")[1]
    assert [c["shot"] for c in next(r for r in status["shots"] if r["id"] == "s02")["context"]] == ["s01"]


def test_board_png_contact_sheet_frames_the_stale_shot(project):
    cinema("board", cwd=project)
    with Image.open(project / "board.png") as sheet:
        sheet = sheet.convert("RGB")
        thumb_h = round(THUMB_WIDTH * H / W)
        x = PAD + 2 * (THUMB_WIDTH + PAD)  # s03: third in the first row
        y = TITLE_HEIGHT + PAD
        assert sheet.getpixel((x + 1, y + thumb_h // 2)) == MARK["stale"]
        assert sheet.getpixel((PAD + 1, y + thumb_h // 2)) != MARK["stale"]  # s01 is current
        assert sheet.width == PAD + 4 * (THUMB_WIDTH + PAD)


def test_board_without_storyboard_is_refused(tmp_path):
    root = small_project(tmp_path, "empty", W, H, FPS)
    result = cinema("board", cwd=root, rc=2)
    assert "cinema story" in result.stderr
    assert not (root / "board.html").exists() and not (root / "board.png").exists()


def test_board_png_wraps_captions_and_shows_names_not_tags():
    from PIL import ImageDraw, ImageFont

    from cinema_cli.review.sheet import CAPTION_LINES, _wrap

    draw = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    font = ImageFont.load_default(size=13)
    rows = _wrap(draw, "the dial clicks home and the massive vault door swings open " * 3, font, THUMB_WIDTH,
                 CAPTION_LINES)
    assert len(rows) == CAPTION_LINES and rows[-1].endswith("…")
    assert all(draw.textlength(row, font=font) <= THUMB_WIDTH for row in rows)
    assert _wrap(draw, "short", font, THUMB_WIDTH, CAPTION_LINES) == ["short"]


def test_board_png_caption_rows_hold_the_names():
    """Two shots whose captions differ only by a tag and its name draw the same text."""
    from cinema_cli.project.schema import Resolution, Shot
    from cinema_cli.review.cards import Card
    from cinema_cli.review.sheet import contact_sheet

    def sheet(caption: str) -> Image.Image:
        shot = Shot(id="s01", scene="a", caption=caption, characters=["Dex"] if "<" in caption else [])
        return contact_sheet("t", [Card(shot, "done", [], [], None, None)], Resolution(width=W, height=H))

    assert sheet("<Dex> slaps the table").tobytes() == sheet("Dex slaps the table").tobytes()
