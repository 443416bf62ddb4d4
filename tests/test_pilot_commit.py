"""Pilot-Commit: split and band, buffer ordering and staleness, eviction at the next epoch, training
groups of pilot + commit rows, and the round limit, driven by a scripted stand-in for the shared
loop (no model)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import allocators
from allocators.base import (FollowUpContext, PromptInfo, PromptStats,
                             Rollout, Setting, StepBudget)
from allocators.pilot_commit import PilotEntry, classify_pilot, effective_band, pilot_split


from tests.scripted_loop import Loop, ScriptedPool  # noqa: E402


def by_class(pid: int, i: int) -> float:
    """pid % 3: 0 -> alternating rewards (pilot mean 0.5), 1 -> always solved, 2 -> never."""
    return (float(i % 2), 1.0, 0.0)[pid % 3]


def setting(m=4, g=8, b=1.0, seed=0):
    return Setting(prompts_per_step=m, group_size=g, budget_fraction=b, max_response_tokens=64,
                   steps=10, seed=seed, pool_size=0)


def pilot_commit(m=4, **options):
    return allocators.get("pilot-commit")(setting(m=m), **options)


# -- split, band ---------------------------------------------------------------------------------
def test_pilot_split():
    assert pilot_split(8) == (2, 6)
    assert pilot_split(4) == (2, 2)              # n/4 = 1 is raised to the floor of 2
    assert pilot_split(64) == (16, 48)
    assert pilot_split(128) == (32, 96)
    assert pilot_split(16) == (4, 12)
    assert pilot_split(8, pilot_size=4, commit_size=4) == (4, 4)
    assert pilot_split(3) == (2, 1)
    with pytest.raises(ValueError):
        pilot_split(2)                            # no commit rollout left
    with pytest.raises(ValueError):
        allocators.get("pilot-commit")(setting(g=8, b=0.25))


def test_effective_band_on_the_pilot_grid():
    assert effective_band(2, 0.125, 0.75) == [0.5]
    assert effective_band(4, 0.125, 0.75) == [0.25, 0.5, 0.75]
    assert effective_band(8, 0.125, 0.75) == [k / 8 for k in range(1, 7)]
    assert effective_band(16, 0.125, 0.75) == [k / 16 for k in range(2, 13)]
    assert effective_band(1, 0.125, 0.75) == []
    with pytest.raises(ValueError):
        pilot_commit(pilot_size=1, commit_size=7)
    assert pilot_commit().resolved_options()["effective_band"] == [0.5]
    assert pilot_commit(pilot_size=4, commit_size=4).resolved_options()["effective_band"] == [
        0.25, 0.5, 0.75]


def test_classify_pilot_edges():
    assert classify_pilot(0.75, 0.125, 0.75) == "in_band"
    assert classify_pilot(0.125, 0.125, 0.75) == "in_band"
    assert classify_pilot(0.8125, 0.125, 0.75) == "too_correct"
    assert classify_pilot(1.0, 0.125, 0.75) == "too_correct"
    assert classify_pilot(0.0625, 0.125, 0.75) == "too_incorrect"


# -- the step ------------------------------------------------------------------------------------
def test_groups_are_stale_pilots_plus_fresh_commits():
    alloc = pilot_commit()
    loop = Loop(alloc, ScriptedPool(1000), by_class)
    rows, groups, rounds = loop.step(0)
    assert not any(r.flags for g in groups for r in g)        # same-step pilots: nothing stale
    # round 0 pilots 0..11 (in band: 0,3,6,9); round 1 commits them and pilots 12..23
    assert rounds == 2
    assert all(r.tag == "pilot" for r in rows if r.round == 0)
    assert len(rows) == 24 * 2 + 4 * 6
    assert [g[0].pid for g in groups] == [0, 3, 6, 9]
    for group in groups:
        assert len(group) == 8 and len({r.pid for r in group}) == 1
        assert [r.tag for r in group] == ["pilot"] * 2 + ["commit"] * 6
        assert all(r.round == 0 for r in group[:2]) and all(r.round == 1 for r in group[2:])
    assert sorted(alloc.buffer) == [12, 15, 18, 21]
    # step 1 commits step 0's pilots in its first round: rows of two steps in one group
    rows, groups, rounds = loop.step(1)
    assert rounds == 1 and [g[0].pid for g in groups] == [12, 15, 18, 21]
    for group in groups:
        assert [r.step for r in group] == [0] * 2 + [1] * 6
        assert all(r.logprobs[0] == 0.0 for r in group[:2])     # pilot keeps its sampler's logprobs
        # step 0's pilots are flagged for the loop's recompute (the release's old_log_prob);
        # step 1's commits, sampled by the current policy, are not
        flagged = [r.recompute_logprobs for r in group]
        assert flagged == [True] * 2 + [False] * 6
    assert alloc.step_metrics["stale_rows"] == 8
    # rows sampled this step (commits, new pilots) are never flagged
    assert not any(r.recompute_logprobs for r in rows if r.step == 1)


def test_sampler_logprobs_option_flags_nothing():
    alloc = pilot_commit(stale_logprobs="sampler")
    loop = Loop(alloc, ScriptedPool(1000), by_class)
    loop.step(0)
    _, groups, _ = loop.step(1)
    assert groups and not any(r.recompute_logprobs for g in groups for r in g)
    assert alloc.step_metrics["stale_rows"] == 8
    with pytest.raises(ValueError, match="stale_logprobs"):
        pilot_commit(stale_logprobs="current")


def test_commits_are_never_for_the_same_round():
    alloc = pilot_commit(m=6)
    loop = Loop(alloc, ScriptedPool(500), by_class)
    for step in range(6):
        _, groups, _ = loop.step(step)
        for group in groups:
            pilots = [(r.step, r.round) for r in group if r.tag == "pilot"]
            commits = [(r.step, r.round) for r in group if r.tag == "commit"]
            assert len(pilots) == 2 and len(commits) == 6
            assert max(pilots) < min(commits)
        assert len(groups) <= 6


def test_round_limit_without_in_band_pilots():
    alloc = pilot_commit(max_rounds=3)
    loop = Loop(alloc, ScriptedPool(10_000), lambda pid, i: 0.0)
    rows, groups, rounds = loop.step(0)
    assert rounds == 3 and groups == [] and len(rows) == 3 * 12 * 2
    loop = Loop(pilot_commit(), ScriptedPool(10_000), lambda pid, i: 0.0, max_rounds=5)
    assert loop.step(0)[2] == 5                       # the loop's limit applies too


def test_max_variance_order_and_ties():
    alloc = pilot_commit()
    rows = []
    for pid, std, step in [(1, 0.5, 1), (2, 0.4, 3), (3, 0.5, 2), (4, 0.5, 2), (5, 0.3, 4)]:
        alloc.buffer[pid] = PilotEntry(step=step, std=std, rows=rows)
    taken = [pid for pid, _ in alloc.take_commits(3)]
    assert taken == [3, 4, 1]                          # std, then newer step, then buffer order
    assert list(alloc.buffer) == [2, 5]
    assert [pid for pid, _ in alloc.take_commits(9)] == [2, 5] and alloc.buffer == {}


def test_random_buffer_sampling_is_seeded():
    picks = []
    for _ in range(2):
        alloc = pilot_commit(buffer_sampling="random")
        for pid in range(20):
            alloc.buffer[pid] = PilotEntry(step=0, std=0.5, rows=[])
        picks.append([pid for pid, _ in alloc.take_commits(5)])
    assert picks[0] == picks[1] and len(set(picks[0])) == 5
    with pytest.raises(ValueError):
        pilot_commit(buffer_sampling="best")


def test_buffer_drops_entries_older_than_four_steps():
    alloc = pilot_commit(m=1)
    loop = Loop(alloc, ScriptedPool(100_000), by_class)
    loop.step(0)
    # M = 1: 3 candidates per round, one in band, one committed each later round
    leftover = {pid: entry.step for pid, entry in alloc.buffer.items()}
    assert leftover and set(leftover.values()) == {0}
    alloc.buffer = {7: PilotEntry(step=3, std=0.5, rows=[]),
                    8: PilotEntry(step=2, std=0.5, rows=[])}
    assert alloc.drop_stale(6) == 0 and len(alloc.buffer) == 2     # 6 - 2 = 4: kept
    assert alloc.drop_stale(7) == 1 and list(alloc.buffer) == [7]  # 7 - 2 = 5 > 4: dropped
    loop = Loop(pilot_commit(m=1, buffer_max_off_steps=1), ScriptedPool(100_000),
                lambda pid, i: float(i % 2))
    loop.step(0)
    assert loop.allocator.buffer and loop.allocator.step_metrics["stale_dropped"] == 0
    loop.step(1)                                       # 1 - 0 = 1 step old: still kept
    assert {e.step for e in loop.allocator.buffer.values()} == {0, 1}
    loop.step(2)
    assert all(e.step >= 1 for e in loop.allocator.buffer.values())
    assert loop.allocator.step_metrics["stale_dropped"] > 0


def test_eviction_takes_effect_at_next_epoch():
    alloc = pilot_commit()
    loop = Loop(alloc, ScriptedPool(24), by_class)
    loop.step(0)                                       # epoch 0: pilots 0..23
    assert alloc.evict_next_epoch == {pid for pid in range(24) if pid % 3 == 1}
    assert alloc.evicted == set() and alloc.buffer
    loop.step(1)                                       # epoch 1 starts at the first candidate
    assert alloc.evicted == {pid for pid in range(24) if pid % 3 == 1}
    pilots = [r.pid for r in loop.first_requests if r.tag == "pilot"]
    assert pilots == [pid for pid in range(12) if pid % 3 != 1]
    assert [r for r in loop.first_requests if r.tag == "commit"] == []   # buffer emptied
    assert alloc.step_metrics["not_piloted_evicted"] >= 4


def test_buffer_survives_epoch_end_when_asked():
    alloc = pilot_commit(flush_buffer_at_epoch_end=False)
    loop = Loop(alloc, ScriptedPool(24), by_class)
    loop.step(0)
    loop.step(1)
    assert [r.pid for r in loop.first_requests if r.tag == "commit"] == [12, 15, 18, 21]


def test_pilot_from_a_past_epoch_skips_the_emptied_buffer():
    alloc = pilot_commit()
    alloc.epochs.epoch = 1
    alloc.pilot_epoch = {(0, 5): 0, (0, 6): 1}
    alloc.step_metrics = {"in_band": 0, "too_correct": 0, "too_incorrect": 0}

    def pilot_rows(pid, rewards):
        return [Rollout(pid=pid, group=pid, tag="pilot", step=3, round=0,
                        tokens=np.zeros(2, np.int64), logprobs=np.zeros(2, np.float32),
                        finish="eos", reward=r) for r in rewards]

    alloc.classify_group(3, pilot_rows(5, [1.0, 0.0]))
    alloc.classify_group(3, pilot_rows(6, [1.0, 0.0]))
    assert list(alloc.buffer) == [6]
    alloc.classify_group(3, pilot_rows(5, [1.0, 1.0]))
    alloc.classify_group(3, pilot_rows(6, [1.0, 1.0]))
    assert alloc.evicted == {5} and alloc.evict_next_epoch == {6}


def test_options_validated():
    with pytest.raises(ValueError):
        pilot_commit(nonsense=1)
    alloc = pilot_commit(evict_threshold=None)
    loop = Loop(alloc, ScriptedPool(24), by_class)
    loop.step(0)
    assert alloc.evict_next_epoch == set()


def test_pickle_round_trip_mid_run():
    alloc = pilot_commit()
    loop = Loop(alloc, ScriptedPool(1000), by_class)
    loop.step(0)
    clone = pickle.loads(pickle.dumps(alloc))
    twin = Loop(clone, ScriptedPool(1000), by_class)
    twin.pool.cursor, twin.next_group = loop.pool.cursor, loop.next_group
    for step in (1, 2):
        _, groups, rounds = loop.step(step)
        _, twin_groups, twin_rounds = twin.step(step)
        assert rounds == twin_rounds
        assert ([[(r.pid, r.tag, r.step, r.round) for r in g] for g in groups]
                == [[(r.pid, r.tag, r.step, r.round) for r in g] for g in twin_groups])


def test_candidates_capped_by_pool_and_step_state_released():
    alloc = pilot_commit(m=8)
    assert alloc.candidates_per_step() == 24
    alloc.attach_pool([PromptInfo(pid=i, text="", token_ids=()) for i in range(20)])
    assert alloc.candidates_per_step() == 20
    alloc = pilot_commit()
    loop = Loop(alloc, ScriptedPool(1000), by_class)
    loop.step(0)
    assert alloc.committed == [] and alloc.commit_rows == {}  # observe released the step's rows
    assert alloc.buffer                                         # the cross-step buffer stays
