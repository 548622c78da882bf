"""The storyboard board: every shot at a glance, for review.

`board.html` is a page to open from the project folder (keyframes by relative path, no
network, no script) and `board.png` a contact sheet to paste into a chat or an issue.
Both show the pipeline's own view of each shot (`Pipeline.status()`): whether its
keyframe and video are current, why not, and which earlier keyframes its keyframe was
conditioned on.
"""

from __future__ import annotations

from pathlib import Path

from cinema_cli.pipeline import ProjectStatus
from cinema_cli.project.files import atomic_output, atomic_write_text
from cinema_cli.project.project import Project
from cinema_cli.review.cards import cards
from cinema_cli.review.html import board_html
from cinema_cli.review.sheet import contact_sheet

HTML_FILE, PNG_FILE = "board.html", "board.png"


def write_board(project: Project, status: ProjectStatus) -> tuple[Path, Path]:
    """Write board.html and board.png into the project, each atomically. Both are made
    first; the project lock is taken only to write them (bad input never touches it)."""
    board = cards(project, status)
    script = project.script
    html_path, png_path = project.root / HTML_FILE, project.root / PNG_FILE
    html = board_html(project.root, script, project.config, board, status)
    sheet = contact_sheet(script.title, board, project.config.resolution)
    with project.lock():
        atomic_write_text(html_path, html, project.tmp_dir)
        with atomic_output(png_path, project.tmp_dir) as temp:
            sheet.save(temp, format="PNG")
    return html_path, png_path
