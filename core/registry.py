"""One registry by decorator, shared by the method packages (``allocators``, ``lengthctl``).

A package makes one :class:`Registry` and re-exports its methods; every module of the package
(except ``base`` and private ones) is imported on the first lookup, so a new entry is one new
file with ``@register("name")``.  A module whose import fails (a missing optional dependency, a
bug) does not take the others down: its error is kept by module name (:meth:`import_errors`)
and named again when an entry it would have registered is asked for.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Iterable


def import_submodules(package: str, path: Iterable[str]) -> dict[str, str]:
    """Import ``package``'s modules except ``base`` and private ones; {module: "Error: message"}."""
    errors: dict[str, str] = {}
    for module in pkgutil.iter_modules(path):
        if module.name == "base" or module.name.startswith("_"):
            continue
        name = f"{package}.{module.name}"
        try:
            importlib.import_module(name)
        except Exception as exc:        # one broken module must not hide the others
            errors[name] = f"{type(exc).__name__}: {exc}"
    return errors


class Registry:
    """Named classes of one package, discovered on first lookup.

    ``package`` is the package object itself: discovery reads its ``__path__`` at lookup time
    (tests extend it) and keeps its state in the package's ``_DISCOVERED`` / ``_IMPORT_ERRORS``
    attributes, so that resetting those two re-runs discovery."""

    def __init__(self, package, kind: str, order: Callable[[str], object] = lambda n: n) -> None:
        self.package, self.kind, self.order = package, kind, order
        self.entries: dict[str, type] = {}
        package._DISCOVERED = False
        package._IMPORT_ERRORS = {}

    def register(self, name: str):
        """Class decorator: make ``cls`` available as ``name`` (its ``name`` attribute)."""

        def wrap(cls: type) -> type:
            if name in self.entries and self.entries[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            cls.name = name
            self.entries[name] = cls
            return cls

        return wrap

    def discover(self) -> None:
        pkg = self.package
        if pkg._DISCOVERED:
            return
        pkg._IMPORT_ERRORS.update(import_submodules(pkg.__name__, pkg.__path__))
        pkg._DISCOVERED = True

    def import_errors(self) -> dict[str, str]:
        """Modules of the package that failed to import: {module: "ErrorType: message"}."""
        self.discover()
        return dict(self.package._IMPORT_ERRORS)

    def available(self) -> list[str]:
        self.discover()
        return sorted(self.entries, key=self.order)

    def get(self, name: str) -> type:
        self.discover()
        if name not in self.entries:
            message = f"unknown {self.kind} {name!r}; known: {', '.join(self.available())}"
            errors = self.package._IMPORT_ERRORS
            if errors:
                message += "; not loaded: " + "; ".join(f"{m} ({e})" for m, e in errors.items())
            raise KeyError(message)
        return self.entries[name]
