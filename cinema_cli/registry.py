"""Backends register themselves by name; a stage asks for one by the name in cinema.yaml.

A new backend is one module that defines a class with `name`, `version` and `Options`
and decorates it with its stage's `register`; its module is listed in the registry's
built-in modules so it is imported on first use. Other named parts (the tiny model
presets, the embedders) use the same registry with their own `kind`.
"""

from __future__ import annotations

import importlib
from typing import Generic, TypeVar

from cinema_cli.errors import BadInput

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, stage: str, builtin_modules: dict[str, str], kind: str = "backend"):
        self.stage = stage
        self.kind = kind  # what it holds, for messages
        self._builtin = builtin_modules  # name -> module that registers it
        self._classes: dict[str, type[T]] = {}

    def register(self, cls: type[T], name: str | None = None) -> type[T]:
        """Register `cls` under `name` (default: its `name` attribute)."""
        self._classes[name or cls.name] = cls  # type: ignore[attr-defined]
        return cls

    def names(self) -> list[str]:
        return sorted(set(self._builtin) | set(self._classes))

    def get(self, name: str) -> type[T]:
        if name not in self._classes and name in self._builtin:
            importlib.import_module(self._builtin[name])
        if name not in self._classes:
            raise BadInput(
                f"unknown {self.stage} {self.kind} {name!r}; available: {', '.join(self.names())}"
            )
        return self._classes[name]
