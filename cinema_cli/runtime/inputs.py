"""The files a backend reads besides the request — its model weights, LoRA adapters,
reference images — and their content hashes, which go into every recipe it makes: a
retrained adapter saved at the same path makes exactly the artifacts made with it stale.

A backend declares them with class methods (no instance, nothing loaded):

    @classmethod
    def weights(cls, options) -> list[str]        # model ids or folders it loads
    @classmethod
    def input_files(cls, options) -> dict[str, Path]   # optional: name -> file or folder

An option naming such a file is typed `FileOption`, one naming a model `ModelOption`:
the context resolves both once (`resolve_file_options`: `~` expanded, a relative path
taken inside the project), so the backend loads and the recipe hashes the same file or
folder whatever the working directory. A model option is a path only when it looks like
one (absolute, `~`, `./`, `../`) or names a folder in the project; otherwise it stays a
Hugging Face id (or a tiny preset). The recipe records the option as written
(project-relative), and the file or folder by its content.

A model named by a Hugging Face id is recorded by that id (the Hub names its weights;
downloading it must not make anything stale). A model in a local folder — a fine-tune
saved over the last one — and every input file are recorded by their content: hashing
costs a read of every byte once, then the hash is remembered by path, size and mtime in
the project's cache, so a second run or `cinema status` pays nothing. The memo is saved
with the artifacts a run records (`Context.record`): a run refused before it makes
anything, after hashing its inputs, changes nothing on disk. A folder inside the
Hugging Face cache is already named by its commit, so its identity is that.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Protocol, get_args, runtime_checkable

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from cinema_cli.errors import BadInput
from cinema_cli.project.files import atomic_write_text
from cinema_cli.project.manifest import file_sha256
from cinema_cli.runtime.tiny import is_tiny


class _FileMarker:
    """Marks a backend option that names a file or folder (see FileOption)."""


class _ModelMarker:
    """Marks a backend option that names a pretrained model (see ModelOption)."""


# A backend option naming a file or folder the backend reads (a LoRA, a run folder).
FileOption = Annotated[str | None, _FileMarker()]
# A backend option naming a pretrained model: a Hugging Face id, a local folder or a
# tiny preset (`ModelOption | None` where it may be empty).
ModelOption = Annotated[str, _ModelMarker()]


def resolve_file_options(options: BaseModel, root: Path) -> BaseModel:
    """`options` with every FileOption an absolute path: `~` expanded, a relative path
    taken inside the project `root` (not the working directory); and every ModelOption
    that names a folder (`model_location`) likewise."""
    updates = {}
    for name, field in type(options).model_fields.items():
        value = getattr(options, name)
        if not value:
            continue
        if _marked(field, _FileMarker):
            path = Path(value).expanduser()
            updates[name] = str(path if path.is_absolute() else root / path)
        elif _marked(field, _ModelMarker):
            updates[name] = model_location(value, root)
    return options.model_copy(update=updates) if updates else options


def _marked(field: FieldInfo, marker: type) -> bool:
    # pydantic keeps an Annotated's metadata only at the top: `ModelOption | None` carries it inside.
    metadata = [*field.metadata, *(m for arg in get_args(field.annotation) for m in getattr(arg, "__metadata__", ()))]
    return any(isinstance(m, marker) for m in metadata)


def model_location(model: str, root: Path) -> str:
    """Where a model option points: a path (absolute, `~`, `./`, `../`, or a folder in
    the project `root`) made absolute inside `root`; a Hub id or tiny preset as written."""
    if is_tiny(model):
        return model
    path = Path(model).expanduser()
    if path.is_absolute():
        return str(path)
    if model.split("/", 1)[0] in (".", "..") or (root / path).is_dir():
        return str(root / path)
    return model


@runtime_checkable
class DeclaresInputs(Protocol):
    @classmethod
    def weights(cls, options: Any) -> list[str]: ...


def weights_of(cls: type, options: Any) -> list[str]:
    """The pretrained models (Hub ids or folders) a backend loads with `options`."""
    return cls.weights(options) if isinstance(cls, DeclaresInputs) else []


class InputHasher:
    """sha256 of files and folders, remembered across runs in `cache` by (size, mtime)."""

    def __init__(self, cache: Path, tmp_dir: Path) -> None:
        self.cache, self.tmp_dir = cache, tmp_dir
        self._memo: dict[str, list] | None = None
        self._dirty = False

    def _load(self) -> dict[str, list]:
        if self._memo is None:
            try:
                loaded = json.loads(self.cache.read_text(encoding="utf-8"))
                self._memo = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                self._memo = {}
        return self._memo

    def file(self, path: Path) -> str:
        st = os.stat(path)
        key, memo = str(path.resolve()), self._load()
        known = memo.get(key)
        if isinstance(known, list) and known[:2] == [st.st_size, st.st_mtime_ns]:
            return known[2]
        digest = file_sha256(path)
        memo[key] = [st.st_size, st.st_mtime_ns, digest]
        self._dirty = True
        return digest

    def __call__(self, path: Path) -> str:
        """A file's sha256, or a folder's: of its files' relative names and hashes."""
        if path.is_file():
            return self.file(path)
        snapshot = _hub_snapshot(path)
        if snapshot is not None:
            return f"hub:{snapshot}"
        digest = hashlib.sha256()
        for item in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
            digest.update(f"{item.relative_to(path).as_posix()}\0{self.file(item)}\n".encode())
        return digest.hexdigest()

    def save(self) -> None:
        if self._dirty and self._memo is not None:
            atomic_write_text(self.cache, json.dumps(self._memo), self.tmp_dir)
            self._dirty = False


def _hub_snapshot(folder: Path) -> str | None:
    """The commit of a Hugging Face cache snapshot folder (…/models--org--name/snapshots/<sha>)."""
    parts = folder.resolve().parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return f"{parts[-3].removeprefix('models--').replace('--', '/')}@{parts[-1]}"
    return None


def declared_inputs(cls: type, options: Any, resolved: Any, hasher: InputHasher) -> dict[str, str] | None:
    """{name: content hash} of the local files `cls` reads with `resolved` (`options`
    through `resolve_file_options`), a model folder named as `options` write it, so a
    moved project keeps its recipes; None when there are none (Hub ids are in the options
    already). Nothing is written: the caller saves `hasher` once the run makes something."""
    if not isinstance(cls, DeclaresInputs):
        return None
    found: dict[str, str] = {}
    for written, model in zip(cls.weights(options), cls.weights(resolved), strict=True):
        folder = Path(model)  # resolved: a local folder is absolute, a Hub id never is
        if folder.is_absolute() and folder.is_dir():
            found[f"model {written}"] = hasher(folder)
    files = getattr(cls, "input_files", None)
    for name, path in (files(resolved) if files else {}).items():
        if not path.exists():
            raise BadInput(f"{cls.name}: {name} {path} not found")
        found[name] = hasher(path)
    return found or None
