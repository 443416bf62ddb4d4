"""SPEED-RL: the screening rule, the screen/continue split, groups of screening + continuation rows,
the carried-over queue (a step that trains without generating), the round limit, and charging of
every screened row, driven by a scripted stand-in for the shared loop (no model)."""
from __future__ import annotations

import pickle

import pytest

import allocators
from allocators.base import PromptInfo, Setting
from allocators.speed_rl import speed_screen, speed_split
from tests.scripted_loop import Loop, ScriptedPool


def setting(m=4, g=8, b=1.0, seed=0):
    return Setting(prompts_per_step=m, group_size=g, budget_fraction=b, max_response_tokens=64,
                   steps=10, seed=seed, pool_size=0)


def by_class(pid: int, i: int) -> float:
    """pid % 3: 0 -> alternating (mixed), 1 -> always solved, 2 -> never."""
    return (float(i % 2), 1.0, 0.0)[pid % 3]


def test_screen_rule_by_hand():
    assert speed_screen([[0, 1], [1, 1], [0, 0], [0.5, 0.5], [0.2, 0.7], []]).tolist() == [
        True, False, False, False, True, False]


def test_split():
    assert speed_split(24) == (4, 20)              # the released 4 + 20
    assert speed_split(8) == (2, 6)                # 8/6 rounds to 1, raised to the floor of 2
    assert speed_split(4) == (2, 2)
    with pytest.raises(ValueError):
        speed_split(2)
    assert speed_split(8, screen_size=4, continue_size=4) == (4, 4)


def test_groups_are_screens_plus_continuations_and_every_row_is_charged():
    alloc = allocators.get("speed-rl")(setting(m=4))
    loop = Loop(alloc, ScriptedPool(1000), by_class)
    rows, groups, rounds = loop.step(0)
    # round 0 screens 16 candidates (2 rows each); 1 in 3 qualifies (pids 0, 3, ..., 15: 6);
    # round 1 continues all 6 (6 rows each) and screens 16 more; 6 >= M groups complete
    assert rounds == 2
    assert len(rows) == 16 * 2 + 6 * 6 + 16 * 2
    assert len(groups) == 4
    for g in groups:
        assert [r.tag for r in g] == ["screen"] * 2 + ["continue"] * 6
        assert {r.pid for r in g} == {g[0].pid} and g[0].pid % 3 == 0
        assert [r.round for r in g] == [0, 0] + [1] * 6
    # two completed groups and the second round's qualifiers (18, 21, 24, 27, 30) carry over
    assert len(alloc.ready) == 2
    assert [rows[0].pid for rows in alloc.waiting] == [18, 21, 24, 27, 30]


def test_a_full_queue_trains_without_generating():
    alloc = allocators.get("speed-rl")(setting(m=2))
    loop = Loop(alloc, ScriptedPool(1000), by_class)
    loop.step(0)           # 8 screened -> 3 qualify -> continued in round 1 -> 3 ready, 1 left
    assert len(alloc.ready) == 1
    loop.step(1)           # round 0 continues the 3 waiting: 1 + 3 >= 2 after one more round
    ready_before = len(alloc.ready)
    assert ready_before >= 2
    assert alloc.candidates_per_step() == 0
    rows, groups, rounds = loop.step(2)
    assert rows == [] and len(groups) == 2 and len(alloc.ready) == ready_before - 2
    assert all(r.step == 1 for g in groups for r in g if r.tag == "continue")


def test_round_limit_when_nothing_qualifies():
    alloc = allocators.get("speed-rl")(setting(m=4), max_rounds=3)
    loop = Loop(alloc, ScriptedPool(1000), lambda pid, i: 1.0)
    rows, groups, rounds = loop.step(0)
    assert rounds == 3 and groups == [] and len(rows) == 3 * 16 * 2


def test_candidates_capped_by_pool_and_pickle_round_trip():
    alloc = allocators.get("speed-rl")(setting(m=8))
    assert alloc.candidates_per_step() == 32
    alloc.attach_pool([PromptInfo(pid=i, text="", token_ids=()) for i in range(20)])
    assert alloc.candidates_per_step() == 20
    alloc = allocators.get("speed-rl")(setting(m=4))
    loop = Loop(alloc, ScriptedPool(1000), by_class)
    loop.step(0)
    clone = pickle.loads(pickle.dumps(alloc))
    twin = Loop(clone, ScriptedPool(1000), by_class)
    twin.pool.cursor, twin.next_group = loop.pool.cursor, loop.next_group
    for step in (1, 2):
        a, b = loop.step(step), twin.step(step)
        assert ([[(r.pid, r.tag, r.step, r.round) for r in g] for g in a[1]]
                == [[(r.pid, r.tag, r.step, r.round) for r in g] for g in b[1]])
