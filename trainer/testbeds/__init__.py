"""Testbeds: one module each, the one place that says what a testbed is.

A testbed module (``trainer/testbeds/<name>.py``) declares, in one :func:`register` call:

* its **task mix** (``trainer.mixes.TaskMix``: difficulty buckets, injected error rates), if it
  uses the embedded tasks (a real-model testbed reads JSONL data instead and declares none);
* its **presets** (``trainer.config.Preset``), each fixing everything but method, budget and
  seed, with the **warm start** (``WarmStartConfig``) they start from;
* its **gate** (:class:`Gate`): the seed count at which ``bench.calibrate`` judges it by default
  and the smallest effect each criterion must show.

Every module of this package (except private ones) is imported on first use, in name order, so
a new testbed is one new file; ``bench.presets`` collects the presets for the command-line
tools, ``trainer.mixes`` the task mixes for the loop.  docs/EXTENDING.md is the recipe.

A module is imported eagerly and its errors are not swallowed (unlike a method module, see
``core.registry``): a broken testbed would change which presets exist, and a run must not
silently resolve a preset differently.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field

from trainer.config import Preset
from trainer.mixes import TaskMix, register_mix


@dataclass(frozen=True)
class Gate:
    """How ``bench.calibrate`` judges a testbed's presets.

    ``seeds``: the default seed count (``--seeds`` absent: seeds 0..seeds-1), the one at which
    the gate passes robustly -- chosen from the spread of the paired differences
    (``bench.calibrate`` prints, per criterion, the seed count that gives 80% power at the SD it
    observed), not from one lucky draw.  The four minima are the criteria's thresholds on the
    mean: learning is judged on its mean alone, the three paired criteria also need their
    interval to exclude 0."""

    seeds: int = 3
    learning: float = 0.10            # GRPO b=1 curve average - step-0 accuracy
    budget_sensitivity: float = 0.0   # GRPO b=1 - GRPO b=0.5 (token protocol: acc at T - at T/2)
    headroom: float = 0.0             # oracle - GRPO, b=0.5
    negative_control: float = 0.0     # GRPO - anti-oracle, b=0.5
    # budgets at which the oracle's headroom is measured; the criterion passes at any of them
    # (issue 27: "at b = 0.5 or 0.25"), and the table shows each
    headroom_budgets: tuple[float, ...] = (0.5,)
    # the control whose headroom is gated (allocators/controls.py): ``oracle`` allocates the
    # step's M candidates; ``screening-oracle`` picks from k M of them, the reference where
    # learning is limited by how many informative prompts a step trains on (leg-facts)
    oracle: str = "oracle"

    def __post_init__(self):
        if self.seeds < 2:      # a t interval needs two paired values
            raise ValueError(f"Gate.seeds = {self.seeds}: the gate's intervals need at least 2")
        if not self.headroom_budgets or not all(0 < b <= 1 for b in self.headroom_budgets):
            raise ValueError(f"Gate.headroom_budgets = {self.headroom_budgets}: budget "
                             f"fractions in (0, 1], at least one")


@dataclass(frozen=True)
class Testbed:
    name: str
    description: str
    presets: tuple[Preset, ...]
    mix: TaskMix | None = None
    gate: Gate = field(default_factory=Gate)


TESTBEDS: dict[str, Testbed] = {}
_DISCOVERED = False


def register(testbed: Testbed) -> Testbed:
    """Declare ``testbed`` (its mix goes to ``trainer.mixes``); returns it."""
    if testbed.name in TESTBEDS:
        raise ValueError(f"testbed {testbed.name!r} registered twice")
    for preset in testbed.presets:
        for other in TESTBEDS.values():
            if any(p.name == preset.name for p in other.presets):
                raise ValueError(f"preset {preset.name!r} declared by testbeds "
                                 f"{other.name!r} and {testbed.name!r}")
        if preset.model_dir is None and preset.task_mix != getattr(testbed.mix, "name", None) \
                and preset.task_mix not in {t.mix.name for t in TESTBEDS.values() if t.mix}:
            raise ValueError(f"preset {preset.name!r} uses task mix {preset.task_mix!r}, "
                             f"which testbed {testbed.name!r} does not declare")
    if testbed.mix is not None:
        register_mix(testbed.mix)
    TESTBEDS[testbed.name] = testbed
    return testbed


def discover() -> None:
    """Import every testbed module once (name order, so presets keep a stable order)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


def testbeds() -> list[Testbed]:
    discover()
    return list(TESTBEDS.values())


def testbed_of(preset_name: str) -> Testbed:
    """The testbed that declares the preset named ``preset_name`` (KeyError if none)."""
    for testbed in testbeds():
        if any(p.name == preset_name for p in testbed.presets):
            return testbed
    raise KeyError(f"no testbed declares preset {preset_name!r}")
