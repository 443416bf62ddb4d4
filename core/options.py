"""Declared options: every option of a method (and every preset field) written once.

A method declares one frozen dataclass of its options; each field is made with :func:`option`,
which holds its default, a help string and what is allowed (bounds, choices).  That one
declaration drives construction (:meth:`Options.parse`), the ``resolved_options`` logged in
``config.json``, ``bench.run --list`` and the rejection of unknown keys and bad values, each with
a one-line :class:`OptionError` naming the field, the value and what is allowed::

    @dataclass(frozen=True)
    class MyOptions(Options):
        alpha: float = option(0.9, "smoothing of the pass-rate estimate", ge=0, le=1)

    @register("my-method")
    class MyMethod(Allocator):
        Options = MyOptions          # read as self.opts.alpha

Types come from the field annotations: ``int`` (a bool is not an int), ``float`` (an int is
accepted and converted; never inf or nan), ``bool``, ``str``, ``X | None``, ``tuple[T, ...]`` (a JSON list is
accepted), ``dict``.  Plain dataclasses such as the run presets use :func:`check_values` and
:func:`check_instance` with the same metadata.  Torch-free and at the bottom of the import order (``core``), so ``allocators``, ``lengthctl``,
``trainer`` and ``bench`` all import it.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from dataclasses import MISSING, dataclass, field
from functools import cache
from typing import Any

import numpy as np


class OptionError(ValueError):
    """A bad option or preset value, as one line naming the field, the value and what is allowed."""


def option(default: Any = MISSING, help: str = "", *, ge=None, gt=None, le=None, lt=None,
           choices=None, default_factory: Any = MISSING):
    """A dataclass field with its help and range: ``ge``/``gt``/``le``/``lt`` bound numbers,
    ``choices`` lists the allowed values, or is a function returning them (a registry filled
    after the type is defined, such as the testbeds' task mixes)."""
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt,
            "choices": choices if choices is None or callable(choices) else tuple(choices)}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def choices_of(meta) -> tuple | None:
    """A field's allowed values (None: any), calling a deferred ``choices``."""
    choices = meta.get("choices")
    return tuple(choices()) if callable(choices) else choices


@cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _declared(cls) -> list:
    return [f for f in dataclasses.fields(cls) if f.init]


def _strip_none(annotation) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), \
            len(args) < len(typing.get_args(annotation))
    return annotation, False


def _type_word(annotation) -> str:
    base, _ = _strip_none(annotation)
    origin = typing.get_origin(base)
    if base is int:
        word = "an integer"
    elif base is float:
        word = "a number"
    elif base is bool:
        word = "true or false"
    elif base is str:
        word = "a string"
    elif origin is tuple or base is tuple:
        args = typing.get_args(base)
        # the element's word without its article ("an integer" -> "integers")
        word = f"a list of {_type_word(args[0]).split(' ', 1)[1]}s" if len(args) == 2 and args[1] is Ellipsis \
            else "a list"
    elif base is dict or origin is dict:
        word = "an object"
    else:
        word = "a value"
    return word


def allowed(annotation, meta) -> str:
    """What a field accepts, in words (for errors and ``--list``)."""
    null = ", or null" if _strip_none(annotation)[1] else ""
    if choices_of(meta):
        return "one of " + ", ".join(repr(c) for c in choices_of(meta)) + null
    word = _type_word(annotation)
    low = ("[", meta["ge"]) if meta.get("ge") is not None else \
        ("(", meta["gt"]) if meta.get("gt") is not None else None
    high = ("]", meta["le"]) if meta.get("le") is not None else \
        (")", meta["lt"]) if meta.get("lt") is not None else None
    if low and high:
        return f"{word} in {low[0]}{_number(low[1])}, {_number(high[1])}{high[0]}{null}"
    if low:
        return f"{word} {'>=' if low[0] == '[' else '>'} {_number(low[1])}{null}"
    if high:
        return f"{word} {'<=' if high[0] == ']' else '<'} {_number(high[1])}{null}"
    return word + null


def _number(bound) -> str:
    """A bound as a reader writes it: 1000000, not 1e+06; 1e-06 and 0.2 as :g has them."""
    return str(int(bound)) if float(bound).is_integer() and abs(bound) < 1e15 else f"{bound:g}"


def _coerce(value, annotation):
    """``value`` as the annotated type, or raise TypeError."""
    base, optional = _strip_none(annotation)
    if value is None:
        if optional:
            return None
        raise TypeError
    origin = typing.get_origin(base)
    if base is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
    elif base is int:               # numpy integers too; a bool is not an int
        if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
            return int(value)
    elif base is float:
        if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
            return float(value)
    elif base is str:
        if isinstance(value, str):
            return value
    elif origin is tuple or base is tuple:
        if isinstance(value, (list, tuple)):
            args = typing.get_args(base)
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_coerce(v, args[0]) for v in value)
            if args and len(args) != len(value):
                raise TypeError
            return tuple(_coerce(v, a) for v, a in zip(value, args)) if args else tuple(value)
    elif base is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
    else:
        return value
    raise TypeError


def check_value(owner: str, name: str, value, annotation, meta):
    """``value`` checked and converted, or an :class:`OptionError` naming ``owner.name``."""
    given = value

    def fail():
        return OptionError(f"{owner}.{name} = {given!r}: expected {allowed(annotation, meta)}")

    try:
        value = _coerce(value, annotation)
    except TypeError:
        raise fail() from None
    if value is None:
        return value
    if choices_of(meta) is not None and value not in choices_of(meta):
        raise fail()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        # no option means "unbounded" by infinity: inf overflowed timers and optimizers
        # into silently wrong runs (issue 29); nan compares false with every bound
        if isinstance(value, float) and not math.isfinite(value):
            raise fail()
        for key, holds in (("ge", value.__ge__), ("gt", value.__gt__), ("le", value.__le__),
                           ("lt", value.__lt__)):
            if meta.get(key) is not None and not holds(meta[key]):
                raise fail()
    return value


def check_values(cls, values: dict, owner: str, what: str = "option") -> dict:
    """``values`` (field name -> value) checked against dataclass ``cls``; unknown names fail."""
    declared = {f.name: f for f in _declared(cls)}
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise OptionError(f"{owner}: unknown {what}(s) {', '.join(unknown)}; known: "
                          f"{', '.join(declared) or 'none'}")
    hints = _hints(cls)
    return {name: check_value(owner, name, value, hints[name], declared[name].metadata)
            for name, value in values.items()}


def check_instance(obj, owner: str, skip: tuple[str, ...] = ()) -> None:
    """Every declared field of dataclass instance ``obj`` checked (fields with metadata only)."""
    hints = _hints(type(obj))
    for f in _declared(type(obj)):
        if f.name not in skip and "help" in f.metadata:
            check_value(owner, f.name, getattr(obj, f.name), hints[f.name], f.metadata)


def describe(cls, skip=()) -> list[tuple[str, Any, str, str]]:
    """(name, default, help, allowed) of each declared field of ``cls`` not in ``skip``."""
    hints = _hints(cls)
    rows = []
    for f in _declared(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not MISSING else \
            f.default_factory() if f.default_factory is not MISSING else None
        rows.append((f.name, default, f.metadata.get("help", ""),
                     allowed(hints[f.name], f.metadata)))
    return rows


def plain(value):
    """Tuples as lists, so that a dict equals its own JSON round trip (config.json)."""
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Options:
    """Base of every method's options (none of its own)."""

    @classmethod
    def parse(cls, values: dict, owner: str) -> "Options":
        return cls(**check_values(cls, values, owner))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in _declared(cls))

    def to_dict(self) -> dict:
        return {f.name: plain(getattr(self, f.name)) for f in _declared(type(self))}
