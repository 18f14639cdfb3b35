"""Name → object registries for methods, backbones and datasets (the CLI never branches on names).

Each registry imports its package lazily on first lookup, so ``import hashkit`` stays cheap and a new
entry is one decorated function or class in its own file (tests are parametrised over ``names()``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Generic, Iterator, Mapping, TypeVar

from hashkit.errors import HashkitError

T = TypeVar("T")


@dataclass(frozen=True)
class Family(Generic[T]):
    """Entries named ``PREFIX:NAME`` that an outside library supplies (``timm:convnext_atto``): too many to
    register one by one, so they are checked and built on demand and left out of ``names()``."""

    resolve: Callable[[str], str]  # NAME -> its canonical spelling; a HashkitError if the library lacks it
    build: Callable[[str], T]  # canonical NAME -> the entry
    hint: str  # how the error for an unknown name describes the family



class Registry(Generic[T]):
    """A mapping from names (and aliases) to registered objects of one kind."""

    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind
        self._package = package
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self._families: dict[str, Family[T]] = {}
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

    def register_family(self, prefix: str, family: Family[T], *, aliases: Mapping[str, str] = {}) -> None:
        """Let ``PREFIX:NAME`` name entries of ``family``; ``aliases`` map short names to family NAMEs."""
        if prefix in self._families:
            raise ValueError(f"{self.kind} family {prefix!r} is registered twice")
        self._families[prefix] = family
        for alias, target in aliases.items():
            self._aliases[alias] = f"{prefix}:{target}"

    def _split_family(self, key: str) -> tuple[str, str] | None:
        """(prefix, NAME) when ``key`` is ``PREFIX:NAME`` of a registered family, else None."""
        prefix, sep, rest = key.partition(":")
        return (prefix, rest) if sep and prefix in self._families else None

    def is_family_name(self, name: str) -> bool:
        """Whether ``name`` (or the alias it is) names a family entry such as ``timm:NAME``."""
        return self._split_family(self.canonical(name)) is not None

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            importlib.import_module(self._package)

    def canonical(self, name: str) -> str:
        """The registered name for ``name`` or one of its aliases; a clear error listing valid names."""
        self._load()
        key = name.strip().lower()
        key = self._aliases.get(key, key)
        family = self._split_family(key)
        if family is not None:
            prefix, rest = family
            return f"{prefix}:{self._families[prefix].resolve(rest)}"
        if key not in self._entries:
            hints = "".join(f", or {prefix}:NAME ({f.hint})" for prefix, f in self._families.items())
            raise HashkitError(
                f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names())}{hints}"
            )
        return key

    def get(self, name: str) -> T:
        """The object registered under ``name`` (or an alias of it, or a family's ``PREFIX:NAME``)."""
        key = self.canonical(name)
        family = self._split_family(key)
        if family is not None:
            return self._families[family[0]].build(family[1])
        return self._entries[key]

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
