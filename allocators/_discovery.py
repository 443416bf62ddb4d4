"""Import every method module of a registry package, one failure at a time (torch-free).

Shared by ``allocators`` and ``lengthctl``: a module whose import fails (e.g. a missing optional
dependency) is recorded by name with its error, and the other modules still register.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Iterable


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
