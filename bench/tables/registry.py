"""One registry of tables: the standard tables every sweep writes and the papers' tables that
``bench.run --table NAME`` runs, each one :class:`TableSpec` under its name.

A standard table (``standard=True``) is rendered for every sweep, in ``order``; a paper table
names the methods and budgets it needs (``bench.run --table NAME`` runs them) and renders in the
paper's layout.  Both render from one :class:`Context`.  Adding a table is one
:func:`register` call beside its builder (``bench.tables.builders``, ``bench.headline``,
``bench.paper_tables``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from bench.tables.cells import Table


@dataclass
class Context:
    """Everything a renderer reads: the sweep's frames (``bench.tables.sweep``) and options."""

    sweep_dir: Path
    preset: str | None
    summaries: pd.DataFrame
    curves: pd.DataFrame
    steps: pd.DataFrame | None = None
    target: float | None = None


@dataclass(frozen=True)
class TableSpec:
    name: str
    summary: str                                  # one line for --table list
    methods: tuple[str, ...]
    budgets: tuple[float, ...]
    render: Callable[[Context], "Table | list[Table] | None"]
    figure: Callable[[Context], object] | None = None
    measure: Callable[[Path], None] | None = None  # non-training work, run before rendering
    standard: bool = False                        # written for every sweep (in ``order``)
    order: float = 0                              # unique among standard tables

    @property
    def trains(self) -> bool:
        return bool(self.methods)

    def tables(self, ctx: Context) -> list[Table]:
        out = self.render(ctx)
        return [t for t in (out if isinstance(out, list) else [out]) if t is not None]


TABLES: dict[str, TableSpec] = {}


def register(spec: TableSpec) -> TableSpec:
    if spec.name in TABLES and TABLES[spec.name] != spec:
        raise ValueError(f"table {spec.name!r} registered twice")
    # two standard tables at one order would be written in import order, which differs between
    # commands (bench.run, bench.report, bench.calibrate import the builders' modules in turn)
    clash = [t.name for t in TABLES.values() if t.standard and spec.standard
             and t.order == spec.order and t.name != spec.name]
    if clash:
        raise ValueError(f"standard table {spec.name!r} has the order {spec.order} of "
                         f"{clash[0]!r}")
    TABLES[spec.name] = spec
    return spec


def standard(name: str, order: float, summary: str = ""):
    """Decorator: ``build(ctx)`` is the standard table ``name``, written ``order``-th."""

    def wrap(build):
        register(TableSpec(name, summary or name, (), (), build, standard=True, order=order))
        return build

    return wrap


def standard_specs() -> list[TableSpec]:
    return sorted((t for t in TABLES.values() if t.standard), key=lambda t: t.order)
