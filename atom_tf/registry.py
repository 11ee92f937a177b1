"""A small named registry: datasets, pools, OOD sets, models, methods, scorers and threat models
each keep one, so adding an entry is one function plus its registration."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from atom_tf.errors import InvalidConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@registry.register("name")`."""

        def add(item: T) -> T:
            self._items[name] = item
            return item

        return add

    def get(self, name: str) -> T:
        """The entry called `name`; an unknown name fails with one line listing the choices."""
        if name not in self._items:
            raise InvalidConfigError(f"unknown {self.kind} {name!r}; choose one of {self.names()}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
