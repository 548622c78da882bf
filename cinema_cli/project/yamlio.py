"""Reading project YAML into pydantic models with errors that name file, line and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from cinema_cli.errors import ProjectFileError

M = TypeVar("M", bound=BaseModel)


def load_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """Parse a YAML file; return (data, node tree) so errors can point at lines."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ProjectFileError(path, [(None, "", "file not found")]) from None
    except OSError as err:
        raise ProjectFileError(path, [(None, "", f"cannot read: {err.strerror}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ProjectFileError(path, [(line, "", f"not UTF-8 text ({err.reason})")]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        _refuse_duplicate_keys(node)
        data = yaml.safe_load(text)
    except ProjectFileError as err:
        raise ProjectFileError(path, err.problems) from None
    except yaml.reader.ReaderError as err:
        line = text[: err.position].count("\n") + 1
        raise ProjectFileError(
            path, [(line, "", f"malformed YAML: character {chr(err.character)!r} is not allowed")]
        ) from None
    except yaml.MarkedYAMLError as err:
        raise ProjectFileError(path, [_yaml_problem(err)]) from None
    except yaml.YAMLError as err:
        raise ProjectFileError(path, [(None, "", f"malformed YAML: {err}")]) from None
    except RecursionError:
        raise ProjectFileError(path, [(None, "", "malformed YAML: nested too deeply")]) from None
    return data, node


def _yaml_problem(err: yaml.MarkedYAMLError) -> tuple[int | None, str, str]:
    """(line, field, message) for a YAML syntax error, naming where the construct it is
    inside began when that is another line (an unclosed bracket or quote)."""
    line = err.problem_mark.line + 1 if err.problem_mark is not None else None
    message = f"malformed YAML: {err.problem or err}"
    context = err.context_mark
    if context is not None and context.line + 1 != line:
        message += f" ({err.context} at line {context.line + 1})"
    return line, "", message


def load_model(path: Path, model: type[M]) -> M:
    """Load `path` and validate it as `model`."""
    data, node = load_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProjectFileError(
            path, [(1, "", f"expected a mapping of fields, found {type(data).__name__}")]
        )
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise validation_error(path, err, node) from None


def validation_error(path: Path, err: ValidationError, node: yaml.Node | None) -> ProjectFileError:
    problems = []
    for e in err.errors():
        loc = tuple(e["loc"])
        problems.append((line_of(node, loc), dotted(loc), message_of(e)))
    return ProjectFileError(path, problems)


def file_error(path: Path, problems: list[tuple[tuple, str, str]]) -> ProjectFileError:
    """A ProjectFileError for problems found after `path` was loaded, each given as
    (location in the YAML, field, message): the file is read again to name the lines."""
    _, node = load_yaml(path)
    return ProjectFileError(path, [(line_of(node, loc), field, message) for loc, field, message in problems])


def dotted(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """The 1-based line of the YAML node at `loc` (keys and list indexes), or of the
    deepest ancestor that exists (a missing field points at its parent)."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    current = node
    for part in loc:
        child = None
        if isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    child, line = value, key.start_mark.line + 1
                    break
        elif isinstance(current, yaml.SequenceNode) and isinstance(part, int):
            if 0 <= part < len(current.value):
                child = current.value[part]
                line = child.start_mark.line + 1
        if child is None:
            break
        current = child
    return line


def message_of(e: dict) -> str:
    if e["type"] == "extra_forbidden":
        return "unknown field"
    if e["type"] == "missing":
        return "required field is missing"
    msg = e["msg"]
    return msg.removeprefix("Value error, ")


def _refuse_duplicate_keys(node: yaml.Node | None) -> None:
    """PyYAML silently keeps the last of two equal keys; a person almost never means that."""
    stack = [node] if node is not None else []
    seen_nodes: set[int] = set()
    while stack:
        current = stack.pop()
        if id(current) in seen_nodes:  # aliases can make the tree a graph
            continue
        seen_nodes.add(id(current))
        if isinstance(current, yaml.MappingNode):
            keys: dict[str, int] = {}
            for key, value in current.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in keys:
                        raise ProjectFileError(
                            "", [(key.start_mark.line + 1, key.value,
                                  f"duplicate key (first at line {keys[key.value]})")]
                        )
                    keys[key.value] = key.start_mark.line + 1
                stack.append(value)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
