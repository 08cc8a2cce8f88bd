"""One small generic registry: every pluggable family (stages, losses, backends, archs) uses it."""

from __future__ import annotations

from typing import Any, Callable, Generic, Iterator, TypeVar

from .errors import EdgekdError, InputError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object, with a lookup error that lists what is known.

    ``error`` is the exception class raised for an unknown name, so a recipe's unknown loss raises
    a RecipeError and a target's unknown backend a TargetError.
    """

    def __init__(self, kind: str, error: type[EdgekdError] = InputError) -> None:
        self.kind = kind
        self.error = error
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise self.error(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)


def import_named(spec: str, what: str, error: type[EdgekdError] = InputError, expected: str = "package.module:function") -> Any:
    """The object a ``package.module:function`` string names, imported: how a recipe points at the user's
    own code (an arch factory, a data factory, a metric). Errors name ``what`` (e.g. ``metric``) and the
    form expected; the callable is not called here."""
    import importlib

    module, _, attr = (spec or "").partition(":")
    if not module or not attr:
        raise error(f"{what} {spec!r}: expected {expected}")
    try:
        found = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        raise error(f"{what} {spec!r}: cannot import {module}.{attr} ({exc}); expected {expected}") from None
    if not callable(found):
        raise error(f"{what} {spec!r}: {module}.{attr} is a {type(found).__name__}, not a function")
    return found
