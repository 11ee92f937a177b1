"""A small named registry: datasets, pools, OOD sets, models, methods, scorers, threat models
and suite entries each keep one, so adding an entry is one function plus its registration.

A registry names the modules that hold its built-in entries (`builtins`); they are imported
the first time the registry is read, so no package has to import a module only for the
entries it registers, and a lookup never depends on what happened to be imported before."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from atom_tf.errors import InvalidConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, builtins: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.builtins = builtins  # modules that register entries here (imported on first read)
        self._items: dict[str, T] = {}
        self._loaded = not builtins

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@registry.register("name")`. A name is registered once: a second entry
        under it is a mistake (two modules claiming one name), not an update."""

        def add(item: T) -> T:
            if name in self._items and self._items[name] is not item:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = item
            return item

        return add

    def _load_builtins(self) -> None:
        if not self._loaded:
            self._loaded = True  # before importing: the modules import this registry's module
            for module in self.builtins:
                importlib.import_module(module)

    def get(self, name: str) -> T:
        """The entry called `name`; an unknown name fails with one line listing the choices."""
        self._load_builtins()
        if name not in self._items:
            raise InvalidConfigError(f"unknown {self.kind} {name!r}; choose one of {self.names()}")
        return self._items[name]

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._items)

    def choices(self) -> str:
        """The names as a help string lists them: 'a, b, c'."""
        return ", ".join(self.names())

    def __contains__(self, name: str) -> bool:
        self._load_builtins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
