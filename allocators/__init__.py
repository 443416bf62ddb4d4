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
when a method it would have registered is asked for (the one registry of :mod:`core.registry`).
"""
from __future__ import annotations

import sys

from core.registry import Registry

_REGISTRY = Registry(sys.modules[__name__], "method", order=lambda n: (n != "grpo", n))
register = _REGISTRY.register
import_errors = _REGISTRY.import_errors
available = _REGISTRY.available      # registered method names, uniform GRPO first
get = _REGISTRY.get


def main_methods() -> list[str]:
    """What ``--methods all`` runs: every registered method that is neither an ablation nor a
    control (controls run when named, and in ``bench.calibrate``)."""
    return [n for n in available() if not get(n).ablation and not get(n).control]


def control_methods() -> list[str]:
    """The registered controls (reference rows of every table, never contenders)."""
    return [n for n in available() if get(n).control]
