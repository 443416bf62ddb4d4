"""Named run presets, collected from the testbeds that declare them (``trainer/testbeds/``, one
module per testbed: task mix, presets, warm start, gate; docs/EXTENDING.md adds one): the
embedded CPU ones (``smoke`` for tests, ``noisy-chain`` the default of every command,
``noisy-chain-steps`` its per-step protocol, ``tiny`` the first default, kept while results made
with it are committed) and real-model presets (``qwen3-1.7b-math``, ``qwen3-0.6b-math``); the
type is :class:`trainer.config.Preset`.  ``python -m bench.calibrate`` judges a testbed.

A preset fixes everything but the method, budget fraction and seed, so that every method of a
comparison runs on the same policy, data, optimizer, evaluation and accounting.

Any field can also be overridden per sweep with ``--config`` (``{"preset": {"model_dir": ...}}``)
or ``--set preset.FIELD=VALUE``; each field declares its type and range (``option``), checked
before any work (:mod:`bench.overrides`).
"""
from __future__ import annotations

from dataclasses import replace

from core.options import check_values

from trainer.config import Preset
from trainer.testbeds import testbeds

PRESETS: dict[str, Preset] = {p.name: p for testbed in testbeds() for p in testbed.presets}


# What every command runs when no --preset is given.
DEFAULT_PRESET = "noisy-chain"


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]


def with_overrides(preset: Preset, **overrides) -> Preset:
    """``preset`` with ``overrides``, each checked against its field (OptionError otherwise)."""
    return replace(preset, **check_values(Preset, overrides, "preset", "field"))
