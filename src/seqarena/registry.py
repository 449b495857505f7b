"""Name -> object registries with helpful errors (unknown names get a "did you mean ...?")."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from seqarena.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """A dictionary of named entries that refuses duplicates and explains unknown names."""

    def __init__(self, kind: str, fallback: Callable[[str], T | None] | None = None):
        self.kind = kind  # "model" or "task": used in error messages
        self._entries: dict[str, T] = {}
        self.fallback = fallback  # resolves names not registered yet (e.g. "pkg.module:factory")

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        if name not in self._entries and self.fallback is not None:
            entry = self.fallback(name)
            if entry is not None:
                self._entries[name] = entry
        if name not in self._entries:
            raise UserError(self.unknown(name))
        return self._entries[name]

    def unknown(self, name: str) -> str:
        known = ", ".join(sorted(self._entries))
        close = difflib.get_close_matches(name, self._entries, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: {known}"

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def decorator(self, name: str, make: Callable[[object], T]) -> Callable[[object], object]:
        """A decorator that registers make(obj) under name and returns obj unchanged."""

        def register(obj):
            self.add(name, make(obj))
            return obj

        return register
