"""Rollout-allocation strategies: one module per method, registered by decorator.

A new method is one new file in this folder::

    from allocators import register
    from allocators.base import Allocator

    @register("my-method")
    class MyMethod(Allocator):
        def plan(self, step, candidates, stats, budget): ...

Every module in the package is imported on first lookup, so the method then appears in
``--methods all``, in every table and plot.  Modules here import numpy/scipy/cvxpy/scikit-learn
only, never torch.  A module that fails to import (a missing optional dependency, a bug) does not
take the others down: its error is kept by module name (:func:`import_errors`) and named again
when a method it would have registered is asked for.
"""
from __future__ import annotations

from allocators._discovery import import_submodules


from allocators.base import Allocator

_REGISTRY: dict[str, type[Allocator]] = {}
_IMPORT_ERRORS: dict[str, str] = {}
_DISCOVERED = False


def register(name: str):
    """Class decorator: make ``cls`` available as method ``name``."""

    def wrap(cls: type[Allocator]) -> type[Allocator]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    _IMPORT_ERRORS.update(import_submodules(__name__, __path__))
    _DISCOVERED = True


def import_errors() -> dict[str, str]:
    """Modules of this package that failed to import: {module: "ErrorType: message"}."""
    _discover()
    return dict(_IMPORT_ERRORS)


def available() -> list[str]:
    """Registered method names, uniform GRPO first."""
    _discover()
    return sorted(_REGISTRY, key=lambda n: (n != "grpo", n))


def main_methods() -> list[str]:
    """What ``--methods all`` runs: every registered method that is neither an ablation nor a
    control (controls run when named, and in ``bench.calibrate``)."""
    return [n for n in available() if not _REGISTRY[n].ablation and not _REGISTRY[n].control]


def control_methods() -> list[str]:
    """The registered controls (reference rows of every table, never contenders)."""
    return [n for n in available() if _REGISTRY[n].control]


def get(name: str) -> type[Allocator]:
    _discover()
    if name not in _REGISTRY:
        message = f"unknown method {name!r}; known: {', '.join(available())}"
        if _IMPORT_ERRORS:
            message += "; not loaded: " + "; ".join(f"{m} ({e})" for m, e in _IMPORT_ERRORS.items())
        raise KeyError(message)
    return _REGISTRY[name]
