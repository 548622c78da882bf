"""`eval report`: one self-contained HTML page of every metric run for a project.

Each saved result (.cinema/eval/METRIC.json) becomes a section: its summary as a table
(with the other project's values and the deltas, this - other, when compared), and PNG
charts drawn with matplotlib, embedded in the page as data URIs: per shot and per scene
bars for the shot metrics, the six aspects for the judge, and tokens, seconds and
identity against context length for the stress test. No script, no network, no file
beside it: the page can be mailed.
"""

from __future__ import annotations

import base64
import io
from html import escape
from pathlib import Path

from cinema_cli.errors import BadInput
from cinema_cli.eval import results
from cinema_cli.project.files import atomic_write_text
from cinema_cli.project.project import Project

ORDER = ("text", "consistency", "aesthetic", "judge", "stress")
SKIP = {"frames", "shots"}  # counts, not scores
THIS, OTHER = "#c0392b", "#7f8c8d"

_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 1.5rem auto; max-width: 1100px; padding: 0 1rem; color: #222; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; }
.dim { color: #6b6b6b; } table { border-collapse: collapse; margin: .6rem 0; }
td, th { border: 1px solid #ddd; padding: .25rem .6rem; text-align: right; } td:first-child, th:first-child { text-align: left; }
.up { color: #2e7d32; } .down { color: #c0392b; } img { max-width: 100%; display: block; margin: .6rem 0; }
"""


def write_report(project: Project, against: Project | None = None, output: Path | None = None) -> Path:
    mine = results.load_all(project)
    if not mine:
        raise BadInput(f"{project.root} has no eval results yet: run `cinema eval text`, `consistency`, "
                       "`aesthetic`, `judge` or `stress` first, then `cinema eval report`")
    theirs = results.load_all(against) if against is not None else {}
    sections = [_section(name, mine[name], theirs.get(name))
                for name in sorted(mine, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))]
    title = f"cinema eval: {project.root.name}" + (f" vs {against.root.name}" if against else "")
    note = (f"<p class=dim>Compared with <b>{escape(str(against.root))}</b>: delta = this − other.</p>"
            if against else "")
    page = (f"<!doctype html><html lang=en><meta charset=utf-8><title>{escape(title)}</title>"
            f"<style>{_CSS}</style><h1>{escape(title)}</h1>{note}{''.join(sections)}</html>\n")
    path = output or project.root / "eval-report.html"
    atomic_write_text(path, page, project.tmp_dir)
    return path


def _section(name: str, this: dict, other: dict | None) -> str:
    parts = [f"<h2 id={escape(name)}>{escape(name)}</h2>", _summary(this, other)]
    models = this.get("models")
    if models:
        parts.append("<p class=dim>" + ", ".join(f"{escape(k)}: {escape(str(v))}" for k, v in models.items()) + "</p>")
    if name == "stress":
        parts.append(_img(_stress_chart(this, other)))
    elif name == "judge":
        parts.append(_img(_bars({"film": this["summary"]}, {"film": other["summary"]} if other else None,
                                [k for k in this["summary"] if k != "mean"], "film", "judge (0-5)")))
        why = this.get("justifications", {})
        parts.append("<table><tr><th>aspect<th>why</tr>" + "".join(
            f"<tr><td>{escape(a)}<td style='text-align:left'>{escape(str(w))}</tr>" for a, w in why.items()) + "</table>")
    for level, label in (("shots", "id"), ("scenes", "scene")):
        rows = this.get(level) or []
        keys = _numeric_keys(rows)
        if rows and keys:
            mine = {r[label]: r for r in rows}
            theirs = {r[label]: r for r in (other or {}).get(level, [])} if other else None
            parts.append(_img(_bars(mine, theirs, keys, label, f"per {level[:-1]}")))
    for message in this.get("notices", []):
        parts.append(f"<p class=dim>note: {escape(message)}</p>")
    return "".join(parts)


def _numeric_keys(rows: list[dict]) -> list[str]:
    keys = []
    for row in rows:
        for key, value in row.items():
            if key not in SKIP and key not in keys and isinstance(value, (int, float)) and not isinstance(value, bool):
                keys.append(key)
    return keys


def _summary(this: dict, other: dict | None) -> str:
    head = "<tr><th>measure<th>this" + ("<th>other<th>delta" if other else "") + "</tr>"
    rows = []
    for key, value in this.get("summary", {}).items():
        cells = f"<td>{escape(key)}<td>{_fmt(value)}"
        if other:
            theirs = other.get("summary", {}).get(key)
            delta = value - theirs if isinstance(value, (int, float)) and isinstance(theirs, (int, float)) else None
            style = "" if not delta else (" class=up" if delta > 0 else " class=down")
            cells += f"<td>{_fmt(theirs)}<td{style}>{_fmt(delta, signed=True)}"
        rows.append(f"<tr>{cells}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _fmt(value, signed: bool = False) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:+.4f}" if signed else f"{value:.4f}"
    return escape(str(value))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: draw to memory
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _img(data: bytes) -> str:
    return f"<img alt='chart' src='data:image/png;base64,{base64.b64encode(data).decode()}'>"


def _bars(mine: dict[str, dict], theirs: dict[str, dict] | None, keys: list[str], label: str, title: str) -> bytes:
    """One panel per measure: a bar per shot (scene), this beside the other."""
    plt = _pyplot()
    names = list(mine)
    figure, axes = plt.subplots(1, len(keys), figsize=(max(4.0, 0.5 * len(names) + 2) * len(keys) ** 0.5 * 1.6, 3.2),
                                squeeze=False)
    width = 0.4 if theirs is not None else 0.8
    for axis, key in zip(axes[0], keys):
        positions = range(len(names))
        values = [_value(mine[n].get(key)) for n in names]
        axis.bar([p - (width / 2 if theirs is not None else 0) for p in positions], values, width, color=THIS,
                 label="this")
        if theirs is not None:
            axis.bar([p + width / 2 for p in positions], [_value(theirs.get(n, {}).get(key)) for n in names], width,
                     color=OTHER, label="other")
            axis.legend(fontsize=7)
        axis.set_xticks(list(positions), names, rotation=45 if len(names) > 6 else 0, fontsize=8)
        axis.set_title(key, fontsize=9)
    figure.suptitle(title, fontsize=10)
    return _png(figure)


def _value(value) -> float:
    return float(value) if isinstance(value, (int, float)) else float("nan")


def _stress_chart(this: dict, other: dict | None) -> bytes:
    plt = _pyplot()
    measures = [("token_ratio", "tokens (x one frame)"), ("seconds_per_keyframe", "seconds per keyframe"),
                ("identity", "identity consistency")]
    figure, axes = plt.subplots(1, len(measures), figsize=(12, 3.2), squeeze=False)
    for axis, (key, title) in zip(axes[0], measures):
        for result, colour, who in ((this, THIS, "this"), (other, OTHER, "other")):
            if result is None:
                continue
            for memory, style in (("goldenmem", "-o"), ("naive", "--s")):
                rows = [r for r in result["rows"] if r["memory"] == memory]
                axis.plot([r["pairs"] for r in rows], [_value(r.get(key)) for r in rows], style, color=colour,
                          label=f"{memory} ({who})" if other else memory)
        axis.set_xlabel("pairs of context", fontsize=8)
        axis.set_title(title, fontsize=9)
        axis.legend(fontsize=7)
    return _png(figure)
