"""Name → object registries for methods, backbones and datasets (the CLI never branches on names).

Each registry imports its package lazily on first lookup, so ``import hashkit`` stays cheap and a new
entry is one decorated function or class in its own file (tests are parametrised over ``names()``).
"""

from __future__ import annotations

import importlib
from typing import Callable, Generic, Iterator, TypeVar

from hashkit.errors import HashkitError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names (and aliases) to registered objects of one kind."""

    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind
        self._package = package
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self._loaded = False

    def register(self, name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator: register the decorated object under ``name`` (and ``aliases``)."""

        def decorator(obj: T) -> T:
            if name in self._entries or name in self._aliases:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            for alias in aliases:
                self._aliases[alias] = name
            return obj

        return decorator

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            importlib.import_module(self._package)

    def canonical(self, name: str) -> str:
        """The registered name for ``name`` or one of its aliases; a clear error listing valid names."""
        self._load()
        key = name.strip().lower()
        key = self._aliases.get(key, key)
        if key not in self._entries:
            raise HashkitError(
                f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names())}"
            )
        return key

    def get(self, name: str) -> T:
        """The object registered under ``name`` (or an alias of it)."""
        return self._entries[self.canonical(name)]

    def names(self) -> list[str]:
        """Registered names in sorted order (aliases excluded)."""
        self._load()
        return sorted(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: str) -> bool:
        try:
            self.canonical(name)
        except HashkitError:
            return False
        return True


METHODS: Registry = Registry("method", "hashkit.methods")
BACKBONES: Registry = Registry("arch", "hashkit.backbones")
DATASETS: Registry = Registry("dataset", "hashkit.data")
HEADS: Registry = Registry("head", "hashkit.heads")
