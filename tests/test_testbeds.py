"""Testbeds (trainer/testbeds/): moving the presets there changed nothing a run depends on, and
docs/EXTENDING.md names only presets that exist and whose warm start ships."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from bench.presets import PRESETS, get_preset
from trainer import sft
from trainer.mixes import MIXES, get_mix
from trainer.spec import RunSpec
import trainer.testbeds as tb

ROOT = Path(__file__).resolve().parents[1]
# Every preset as main resolved it before the testbeds existed (commit 5f0a2e6, with
# ALLOCBENCH_MODELS / ALLOCBENCH_DATA unset): its config, warm-start key and run identity.
PINNED = json.loads((ROOT / "tests" / "presets_at_main.json").read_text())


def test_the_presets_main_had_are_all_there_in_the_same_order():
    # a new testbed adds presets (leg-facts, issue 27) but removes or reorders none
    assert [name for name in PRESETS if name in PINNED["order"]] == PINNED["order"]


@pytest.mark.parametrize("name", PINNED["order"])
def test_every_preset_resolves_exactly_as_before(name):
    if name.startswith("qwen") and (os.environ.get("ALLOCBENCH_MODELS")
                                    or os.environ.get("ALLOCBENCH_DATA")):
        pytest.skip("real-model paths were pinned with ALLOCBENCH_MODELS/DATA unset")
    preset, pinned = get_preset(name), PINNED["presets"][name]
    assert json.loads(json.dumps(preset.to_dict())) == pinned["to_dict"]
    assert (preset.warm_start.key() if preset.warm_start else None) == pinned["warm_start_key"]
    assert RunSpec("grpo", 1.0, 0, preset).config_sha256() == pinned["grpo_b1_s0_config_sha256"]


def test_the_task_mixes_main_had_are_unchanged():
    from dataclasses import asdict
    assert {name: json.loads(json.dumps(asdict(get_mix(name)))) for name in MIXES
            if name in PINNED["mixes"]} == PINNED["mixes"]


def test_each_preset_belongs_to_one_testbed_and_both_regimes_gate_at_5_seeds():
    owners = [tb.testbed_of(name).name for name in PRESETS]
    assert len(owners) == len(PRESETS)
    assert tb.testbed_of("noisy-chain").gate.seeds == 5 == tb.testbed_of("noisy-chain-steps").gate.seeds
    # leg-facts passes at seeds 0-2, but its headroom's spread over 0-4 needs 5 for 80% power
    assert tb.testbed_of("leg-facts").gate.seeds == 5
    with pytest.raises(KeyError, match="no testbed"):
        tb.testbed_of("no-such-preset")


def test_a_testbed_cannot_redeclare_a_preset_or_use_an_undeclared_mix():
    smoke = get_preset("smoke")
    with pytest.raises(ValueError, match="declared by testbeds"):
        tb.register(tb.Testbed("copy", "", presets=(smoke,)))
    from dataclasses import replace
    with pytest.raises(ValueError, match="does not declare"):
        tb.register(tb.Testbed("orphan", "", presets=(replace(smoke, name="orphan",
                                                        task_mix="nowhere"),)))
    assert {"copy", "orphan"}.isdisjoint(t.name for t in tb.testbeds())
    with pytest.raises(ValueError, match="at least 2"):
        tb.Gate(seeds=1)


def presets_named_in_extending() -> set[str]:
    text = (ROOT / "docs" / "EXTENDING.md").read_text()
    return set(re.findall(r"--preset[ =]([a-z0-9][a-z0-9.-]*)", text))


def test_every_preset_named_in_extending_exists_and_its_warm_start_ships():
    named = presets_named_in_extending()
    assert named, "docs/EXTENDING.md names no preset (the scan would pass vacuously)"
    for name in sorted(named):
        preset = get_preset(name)      # KeyError: the recipe names a preset that does not exist
        assert preset.warm_start is not None, f"{name}: the recipes use embedded presets"
        assert (sft.shipped_dir(preset.warm_start) / "warmstart.json").is_file(), \
            f"{name}: no shipped warm start in trainer/assets/warmstart"
