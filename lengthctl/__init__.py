"""Rollout-length control, registered by decorator; torch-free like ``allocators``.

``max_len`` runs every rollout to EOS or the maximum response length; ``duet`` is DUET's
marker-gated abort and confidence stop.  A new rule is one new file with ``@register("name")``.
"""
from __future__ import annotations

import importlib
import pkgutil

from lengthctl.base import LengthController

_REGISTRY: dict[str, type[LengthController]] = {}
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
    if not _DISCOVERED:
        for module in pkgutil.iter_modules(__path__):
            if module.name != "base" and not module.name.startswith("_"):
                importlib.import_module(f"{__name__}.{module.name}")
        _DISCOVERED = True


def available() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get(name: str) -> type[LengthController]:
    _discover()
    if name not in _REGISTRY:
        raise KeyError(f"unknown length controller {name!r}; known: {', '.join(available())}")
    return _REGISTRY[name]
