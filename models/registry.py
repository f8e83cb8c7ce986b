"""A tiny name -> object registry, used for backbone families, models and attention blocks."""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from utils.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps lower-case names to objects (classes or factories).

    Use ``@REGISTRY.register("name", aliases=("alias",))`` on a class or function, and
    ``REGISTRY.get(name)`` to look it up; an unknown name is a ``UserError`` listing the
    known names.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` (and ``aliases``); returns ``obj``."""

        def decorator(obj: T) -> T:
            key = name.lower()
            if key in self._items or key in self._aliases:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._items[key] = obj
            for alias in aliases:
                self._aliases[alias.lower()] = key
            return obj

        return decorator

    def unregister(self, name: str) -> T:
        """Remove ``name`` (a registered name, not an alias) and its aliases; return its object.

        For tests that register a temporary entry; KeyError when ``name`` is not registered.
        """
        key = name.lower()
        obj = self._items.pop(key)
        self._aliases = {alias: target for alias, target in self._aliases.items() if target != key}
        return obj

    def canonical(self, name: str) -> str:
        """Return the registered name for ``name`` or an alias of it (UserError if unknown)."""
        key = name.lower()
        key = self._aliases.get(key, key)
        if key not in self._items:
            known = ", ".join(self.names()) or "(none yet)"
            raise UserError(f"unknown {self.kind} '{name}'; choose one of: {known}")
        return key

    def get(self, name: str) -> T:
        """Return the object registered under ``name`` (or an alias)."""
        return self._items[self.canonical(name)]

    def names(self) -> list[str]:
        """Registered names (without aliases), in registration order."""
        return list(self._items)

    def aliases(self) -> dict[str, str]:
        """Alias -> registered name."""
        return dict(self._aliases)

    def __contains__(self, name: str) -> bool:
        key = name.lower()
        return key in self._items or key in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)
