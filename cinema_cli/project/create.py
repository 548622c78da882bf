"""`cinema new`: a project folder from the starter template or a shipped example."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from cinema_cli.errors import BadInput
from cinema_cli.project.files import atomic_write_text
from cinema_cli.project.project import CONFIG_FILE, SCRIPT_FILE

PROJECT_GITIGNORE = "# machine state and generated media\n.cinema/\nshots/\nstream/\nfilm.mp4\n"


def data_dir(name: str) -> Path:
    """`templates/` or `examples/`: beside the package in a source checkout (editable
    install), else where the wheel installed them (share/cinema-cli/)."""
    here = Path(__file__).resolve().parents[2] / name
    if here.is_dir():
        return here
    return Path(sys.prefix) / "share" / "cinema-cli" / name


def examples() -> list[str]:
    root = data_dir("examples")
    return sorted(p.name for p in root.iterdir() if (p / SCRIPT_FILE).is_file()) if root.is_dir() else []


def example_summaries() -> list[dict]:
    """Each example's name, title and logline, for `cinema examples`."""
    import yaml

    summaries = []
    for name in examples():
        try:
            script = yaml.safe_load((data_dir("examples") / name / SCRIPT_FILE).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            script = {}
        summaries.append({"name": name, "title": str(script.get("title") or ""),
                          "logline": " ".join(str(script.get("logline") or "").split())})
    return summaries


def create_project(target: Path, example: str | None = None) -> Path:
    if example is None:
        source = data_dir("templates") / "project"
    else:
        if example not in examples():
            raise BadInput(f"no example {example!r}; available: {', '.join(examples()) or 'none'}")
        source = data_dir("examples") / example
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BadInput(f"{target} already exists and is not empty; choose a new name")
    template_config = data_dir("templates") / "project" / CONFIG_FILE
    # Build in a sibling temp folder and rename, so a failed `new` leaves nothing behind.
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.new"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns("*.sh", "__pycache__"))
        if not (staging / CONFIG_FILE).exists():
            shutil.copy2(template_config, staging / CONFIG_FILE)
        for folder in ("characters", "keyframes", "shots"):
            (staging / folder).mkdir(exist_ok=True)
        atomic_write_text(staging / ".gitignore", PROJECT_GITIGNORE)
        if target.exists():
            target.rmdir()
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target.resolve()
