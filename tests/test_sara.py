"""SARA: the posterior probability of the informative band on hand-computed counts, the
sequential test's thresholds and truncation, and a scripted step in which abandoned prompts'
budget probes a fresh prompt that commits - every row charged, only committed groups trained,
the step's spend within C."""
from __future__ import annotations

import pytest

import allocators
from allocators.base import Setting
from allocators.sara import (ABANDONED, COMMITTED, UNDECIDED, informative_probability,
                             sequential_decision)
from tests.scripted_loop import Loop, ScriptedPool


def setting(m=2, g=8, b=1.0):
    return Setting(prompts_per_step=m, group_size=g, budget_fraction=b, max_response_tokens=16,
                   steps=3, seed=0)


def test_band_probability_on_hand_computed_posteriors():
    # Beta(2, 2): CDF 3x^2 - 2x^3; P(0.1 <= p <= 0.9) = 1 - 2 (0.03 - 0.002) = 0.944
    assert informative_probability(1, 2, lower=0.1, upper=0.9) == pytest.approx(0.944)
    # Beta(1, 3): P(p >= x) = (1 - x)^3 -> 0.9^3 - 0.1^3
    assert informative_probability(0, 2, lower=0.1, upper=0.9) == pytest.approx(0.728)
    # Beta(1, 5) (four failures) and Beta(5, 1) (four successes): 0.9^5 - 0.1^5
    assert informative_probability(0, 4, lower=0.1, upper=0.9) == pytest.approx(0.59048, rel=1e-9)
    assert informative_probability(4, 4, lower=0.1, upper=0.9) == pytest.approx(0.59048, rel=1e-9)


def test_sequential_decision_thresholds_and_truncation():
    kw = dict(commit=0.9, abandon=0.6)
    assert sequential_decision(0.944, truncated=False, **kw) == COMMITTED
    assert sequential_decision(0.59, truncated=False, **kw) == ABANDONED
    assert sequential_decision(0.728, truncated=False, **kw) == UNDECIDED
    # truncated: the nearer threshold (midpoint 0.75)
    assert sequential_decision(0.728, truncated=True, **kw) == ABANDONED
    assert sequential_decision(0.80, truncated=True, **kw) == COMMITTED


def test_abandoned_budget_probes_a_fresh_prompt_that_commits():
    # M = 2, G = 8: C = 16, n = 8, probes of 2.  Prompts 0 and 1 are always solved, prompt 2
    # alternates 1, 0.  Round 0 probes 0 and 1 (4 rows, 12 reserved); round 1 probes them again
    # (0.728 is undecided); round 2 abandons both (four of four: 0.590) which frees 2 x 4 = 8 =
    # one group: prompt 2 is probed; round 3 commits it (one of two: 0.944) with 6 more rows.
    alloc = allocators.get("sara")(setting())
    loop = Loop(alloc, ScriptedPool(6), lambda pid, i: 1.0 if pid < 2 else float(i % 2 == 0))
    rows, groups, rounds = loop.step(0)
    assert rounds == 4
    assert len(rows) == 16 == setting().rollouts_per_step        # every row charged, C exactly
    assert [len(g) for g in groups] == [8] and {r.pid for r in groups[0]} == {2}
    assert [r.tag for r in groups[0]] == ["probe"] * 2 + ["commit"] * 6
    assert sum(r.pid in (0, 1) for r in rows) == 8               # abandoned rows: charged only
    m = alloc.step_metrics
    assert (m["probed"], m["fresh"], m["committed"], m["abandoned"]) == (3, 1, 1, 2)
    assert m["spent"] == 16 and m["unspent"] == 0


def test_mixed_probes_commit_at_once_and_the_step_never_exceeds_c():
    alloc = allocators.get("sara")(setting(m=4))
    loop = Loop(alloc, ScriptedPool(40), lambda pid, i: float((pid + i) % 3 == 0))
    for step in range(4):
        rows, groups, _ = loop.step(step)
        assert len(rows) <= 32
        assert all(len(g) == 8 for g in groups) and len(groups) <= 4
        assert len({g[0].pid for g in groups}) == len(groups)


def test_a_group_too_small_for_a_probe_fails_at_construction():
    with pytest.raises(ValueError, match="no room after a probe"):
        allocators.get("sara")(setting(g=2))
    with pytest.raises(ValueError, match="abandon"):
        allocators.get("sara")(setting(), commit=0.5, abandon=0.7)
