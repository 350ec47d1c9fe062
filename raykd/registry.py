"""One generic name -> object registry, reused for strategies, model families, tasks and losses.

Users extend raykd by registering in their own module::

    from raykd.strategies import STRATEGIES

    @STRATEGIES.register("every_other")
    def every_other(n_student, n_teacher, *, seed, **options): ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named mapping whose misses raise a `ValueError` listing what is registered."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator: register `obj` under `name`, with optional metadata (e.g. `per_epoch=True`)."""

        def add(obj: T) -> T:
            self.add(name, obj, **meta)
            return obj

        return add

    def add(self, name: str, obj: T, **meta: Any) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj
        self._meta[name] = meta

    def remove(self, name: str) -> None:
        """Unregister `name` (tests that register their own entries clean up with this)."""
        self.get(name)
        del self._entries[name], self._meta[name]

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):  # TypeError: not even hashable (a list or mapping from a config)
            raise ValueError(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}") from None

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)  # same error for a miss
        return dict(self._meta[name])

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._entries
        except TypeError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
