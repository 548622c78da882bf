"""Help pages in the style of git and click: `--json` without a `<bool>` after it,
`-p DIR` instead of `-p <list[Path]>`, and `SHOT_ID` instead of `{shot_id}` in usage
lines. Typer's defaults show Python types, which read as noise to a filmmaker. Help
texts are plain text: `[relevant shot ids]` is shown, not eaten as rich markup, and a
docstring's line breaks inside a paragraph do not break the printed lines."""

from __future__ import annotations

import inspect
import re

import click
import typer
from rich.markup import escape

_NAMES = {"path": "PATH", "int": "N", "float": "NUMBER", "str": "TEXT"}


def _metavar(param) -> str:
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    label = param.display_type(None).strip("<>") if hasattr(param, "display_type") else ""
    for word, name in _NAMES.items():
        if word in label.lower():
            return name
    return "VALUE"


def _plain(text: str | None) -> str | None:
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return escape("\n\n".join(re.sub(r"\s*\n\s*", " ", p) for p in paragraphs))


def tidy(command: click.Command) -> click.Command:
    """Give every parameter of `command` and its subcommands a plain metavar, and their
    help texts plain paragraphs."""
    command.help = _plain(command.help)
    command.short_help = _plain(command.short_help)
    params = list(command.params)
    helper = command.get_help_option(click.Context(command)) if hasattr(command, "get_help_option") else None
    if helper is not None:
        params.append(helper)
    for param in params:
        if getattr(param, "help", None):
            param.help = _plain(param.help)
        if param.param_type_name == "argument":
            name = param.name.upper()
            param.metavar = name
            # Typer wraps a required argument in braces; a usage line reads `shot SHOT_ID`.
            param._usage_display_name = lambda name=name, param=param: name if param.required else f"[{name}]"
            param.display_type_rich = lambda ctx=None: None
        elif param.metavar is None:
            param.metavar = _metavar(param)
    for sub in getattr(command, "commands", {}).values():
        tidy(sub)
    return command


def cinema_command(app: typer.Typer) -> click.Command:
    return tidy(typer.main.get_command(app))
