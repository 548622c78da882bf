"""Printing: rich on a terminal, plain lines otherwise, JSON when asked.

Every text that leaves the process passes here: `safe` removes API keys from it
(a server may echo one into an error), and text from users and files is printed as
rich `Text` (`shown`, `labelled`), never parsed as markup, so a caption or a path
holding `[/]` or a backslash prints as written instead of crashing the console.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from cinema_cli.project.schema import plain_text
from cinema_cli.redaction import redact

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

STATE_STYLE = {"done": "green", "stale": "yellow", "missing": "red"}


def safe(text: Any) -> str:
    """`text` as a string with no API key in it: for plain output."""
    return redact(str(text))


def shown(text: Any) -> Text:
    """`text` to print as it is (no markup), without API keys."""
    return Text(safe(text))


def labelled(label: str, value: Any) -> Text:
    """A bold label, two spaces, and `value` as it is."""
    return Text.assemble((label, "bold"), "  ", shown(value))


def print_json(data: Any) -> None:
    # Plain print: rich would wrap long lines and break the JSON for scripts.
    sys.stdout.write(safe(json.dumps(data)) + "\n")
    sys.stdout.flush()


def error(message: str) -> None:
    err.print(Text.assemble(("error:", "bold red"), " ", shown(message))) if err.is_terminal else print(
        f"error: {safe(message)}", file=sys.stderr
    )


def notice(message: str) -> None:
    err.print(Text.assemble(("note:", "dim"), " ", shown(message))) if err.is_terminal else print(
        f"note: {safe(message)}", file=sys.stderr)


def styled_state(state: str, edited: bool = False) -> str:
    label = state + (" (edited)" if edited else "")
    return f"[{STATE_STYLE.get(state, 'white')}]{label}[/]"


class PlainReporter:
    """One line per artifact on stderr: readable in CI logs and pipes."""

    def stage(self, name: str, total: int) -> None:
        print(f"[{name}] {total} to build", file=sys.stderr, flush=True)

    def item(self, stage: str, key: str, index: int, total: int) -> None:
        print(f"[{stage}] {key} ({index + 1}/{total})", file=sys.stderr, flush=True)

    def step(self, done: int, total: int) -> None:
        pass

    def item_done(self, stage: str, key: str) -> None:
        pass

    def notice(self, message: str) -> None:
        notice(message)


class RichReporter:
    """A bar per stage and one for the steps inside the artifact being built. Stages may
    overlap (across ranks a shot starts while keyframes are drawn): each has its own bar."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=err, transient=False,
        )
        self.stage_tasks: dict[str, Any] = {}
        self.step_task: Any = None

    def __enter__(self) -> "RichReporter":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def stage(self, name: str, total: int) -> None:
        if self.step_task is not None:
            self.progress.remove_task(self.step_task)
            self.step_task = None
        self.stage_tasks[name] = self.progress.add_task(name, total=total)

    def item(self, stage: str, key: str, index: int, total: int) -> None:
        self.progress.update(self._bar(stage, total), description=f"{stage} {key}")
        if self.step_task is None:
            self.step_task = self.progress.add_task("  steps", total=1)
        self.progress.reset(self.step_task, total=1, description=f"  {key}")

    def step(self, done: int, total: int) -> None:
        if self.step_task is not None:
            self.progress.update(self.step_task, completed=done, total=total)

    def _bar(self, stage: str, total: int) -> Any:
        if stage not in self.stage_tasks:  # a stage planned with nothing to build that found some
            self.stage_tasks[stage] = self.progress.add_task(stage, total=total)
        return self.stage_tasks[stage]

    def item_done(self, stage: str, key: str) -> None:
        if self.step_task is not None:  # full, even when the artifact reported no steps
            task = next(t for t in self.progress.tasks if t.id == self.step_task)
            self.progress.update(self.step_task, completed=task.total)
        self.progress.advance(self._bar(stage, 1))
        self.progress.update(self._bar(stage, 1), description=stage)

    def notice(self, message: str) -> None:
        self.progress.console.print(Text.assemble(("note:", "dim"), " ", shown(message)))


def shot_fields(fields: dict) -> list[tuple[str, str]]:
    """A shot's fields as a person reads them: names, seconds, yes/no; not Python values."""
    rows = [("id", fields["id"]), ("scene", fields["scene"]), ("caption", fields["caption"]),
            ("characters", ", ".join(fields["characters"]) or "none"), ("camera", fields["camera"]),
            ("duration", f"{fields['duration']:g} s"), ("transition", fields["transition"]),
            ("seed", str(fields["seed"]))]
    if fields.get("dialogue"):
        rows.append(("dialogue", f"“{fields['dialogue']}”"))
    rows.append(("locked", "yes (kept by `cinema story --force`)" if fields.get("locked") else "no"))
    if fields.get("directed"):
        rows.append(("directed", "yes (made by `cinema direct`; `cinema story` never replaces it)"))
    return rows


def status_table(status: dict, shots: dict) -> Table:
    """Each shot: where it is, how long, what it shows, and each stage's state."""
    table = Table(title=None, show_lines=False)
    for column in ("shot", "scene", "length", "caption", "keyframe", "video", "why"):
        table.add_column(column, justify="right" if column == "length" else "left",
                         overflow="fold" if column == "caption" else "ellipsis")
    for row in status["shots"]:
        shot = shots.get(row["id"])
        table.add_row(
            shown(row["id"]), shown(row["scene"]),
            f"{shot.duration:g} s" if shot else "",
            shown(_short(plain_text(shot.caption), 60)) if shot else "",
            styled_state(row["keyframe"], "keyframe" in row["edited"]),
            styled_state(row["shot"], "shot" in row["edited"]),
            shown("; ".join(row["stale_because"])),
        )
    return table


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def length_summary(shots: list, crossfade_seconds: float) -> str:
    """The shots' total length, and the film's: each crossfade overlaps two shots."""
    total = sum(shot.duration for shot in shots)
    fades = sum(1 for shot in shots[1:] if shot.transition == "crossfade")
    film = total - fades * crossfade_seconds
    overlap = f"; the film {film:g} s after {fades} crossfade(s)" if fades else ""
    return f"{len(shots)} shots, {total:g} s of shots{overlap} ({int(film // 60)}:{film % 60:04.1f})"


def context_table(rows: list[dict]) -> Table:
    """Each keyframe's context: the frames it was drawn with, best first, at their sizes."""
    table = Table(title="context (GoldenMem: each frame 1/φ the side of the one before)")
    table.add_column("shot")
    table.add_column("context")
    for column in ("score", "size (h x w)", "tokens"):
        table.add_column(column, justify="right")
    for row in rows:
        if not row["context"]:
            table.add_row(shown(row["id"]), "-", "", "", "")
        for i, frame in enumerate(row["context"]):
            what = frame["shot"] + (f" ({frame['path']})" if "path" in frame else "")  # a reference image
            table.add_row(shown(row["id"]) if i == 0 else "", shown(what), f"{frame['score']:.3f}",
                          f"{frame['size'][0]} x {frame['size'][1]}", str(frame["tokens"]))
    return table
