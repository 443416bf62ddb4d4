"""Rollout-length control, registered by decorator; torch-free like ``allocators``.

``max_len`` runs every rollout to EOS or the maximum response length; ``duet`` is DUET's
marker-gated abort and confidence stop; ``arrol`` is ARRoL's online pruning (a quality head
scores each row at ``l_detect`` and prunes rows of each group toward balanced correctness).  A new rule is one new file with ``@register("name")``.
As in ``allocators``, a module that fails to import is reported by name (:func:`import_errors`)
and the others still load.
"""
from __future__ import annotations

from allocators._discovery import import_submodules


from lengthctl.base import LengthController

_REGISTRY: dict[str, type[LengthController]] = {}
_IMPORT_ERRORS: dict[str, str] = {}
_DISCOVERED = False


def register(name: str):
    def wrap(cls: type[LengthController]) -> type[LengthController]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"length controller {name!r} registered twice")
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
    _discover()
    return sorted(_REGISTRY)


def get(name: str) -> type[LengthController]:
    _discover()
    if name not in _REGISTRY:
        message = f"unknown length controller {name!r}; known: {', '.join(available())}"
        if _IMPORT_ERRORS:
            message += "; not loaded: " + "; ".join(f"{m} ({e})" for m, e in _IMPORT_ERRORS.items())
        raise KeyError(message)
    return _REGISTRY[name]
