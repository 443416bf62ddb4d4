"""The leg_counting family (trainer/legs.py) behind the leg-facts testbed: exact worked solutions
that reasoning-gym's verifier accepts, buckets holding exactly their number of hard facts,
disjoint splits, and warm-start noise at the declared rates."""
import numpy as np
import pytest

from trainer import legs
from trainer.mixes import HardFact, LegBucket, LegMix, get_mix
from trainer.tasks import build_splits, warm_start_examples
from trainer.verifier import score_reasoning_gym


def test_worked_solution_by_hand():
    # 3 spiders (8 legs), 2 woodlouses (14), 1 praying mantis (6): 24 + 28 + 6 = 58
    assert legs.parse_prompt("3 spiders, 2 woodlouses, 1 praying mantis\n") == \
        [(3, "spider"), (2, "woodlouse"), (1, "praying mantis")]
    assert legs.worked_solution("3 spiders, 2 woodlouses, 1 praying mantis\n") == \
        "3*8=24\n2*14=28\n1*6=6\n24+28=52\n52+6=58\n\\boxed{58}"
    assert legs.parse_prompt("4 praying mantiss\n") == [(4, "praying mantis")]
    with pytest.raises(ValueError, match="unknown animal"):
        legs.parse_prompt("2 unicorns\n")


def test_a_certain_decoy_is_written_and_the_chain_goes_on_from_it():
    mix = LegMix("t", (LegBucket("h", 2, 1),), (HardFact("woodlouse", 8, 1.0),))
    text = legs.worked_solution("3 spiders, 2 woodlouses\n", mix, np.random.default_rng(0))
    assert text == "3*8=24\n2*8=16\n24+16=40\n\\boxed{40}"


def test_decoy_rate_matches_the_declared_rate():
    mix = LegMix("t", (LegBucket("h", 1, 1),), (HardFact("crab", 8, 0.72),))
    wrong = [legs.worked_solution("1 crab\n", mix, np.random.default_rng([7, i])) != "1*10=10\n"
             "\\boxed{10}" for i in range(4000)]
    assert abs(np.mean(wrong) - 0.72) < 0.025         # 3.5 binomial SDs


def test_leg_facts_splits_buckets_and_verifier():
    mix = get_mix("leg_facts")
    hard = {f.animal for f in mix.hard_facts}
    train, held_out = build_splits(20, 10, "leg_facts")
    assert len(train) == 80 and len(held_out) == 40
    assert not {t.prompt for t in train} & {t.prompt for t in held_out}
    wanted = {b.name: (b.animals, b.hard) for b in mix.buckets}
    for task in train + held_out:
        items = legs.parse_prompt(task.prompt)
        assert (len(items), sum(a in hard for _, a in items)) == wanted[task.bucket]
        assert score_reasoning_gym(task.solution, task.gold) == 1.0
        assert score_reasoning_gym("\\boxed{-1}", task.gold) == 0.0
    # the same call gives the same questions (seeded), interleaved bucket by bucket
    assert [t.prompt for t in build_splits(20, 10, "leg_facts")[0]] == [t.prompt for t in train]
    assert [t.bucket for t in train[:4]] == [b.name for b in mix.buckets]


def test_pool_weights_scale_the_training_buckets_and_leave_the_held_out_set_alone():
    train, held_out = build_splits(20, 10, "leg_facts")
    weighted, held_out_w = build_splits(20, 10, "leg_facts", (3, 2, 1, 0))
    assert [t.prompt for t in held_out_w] == [t.prompt for t in held_out]
    counts = {b: sum(t.bucket == b for t in weighted) for b in ("e2", "e3", "h1", "h2")}
    assert counts == {"e2": 60, "e3": 40, "h1": 20, "h2": 0}
    # a bucket's questions are the head of its own stream: weighting up adds, never replaces
    for bucket in ("e2", "e3", "h1"):
        assert [t.prompt for t in train if t.bucket == bucket] == \
            [t.prompt for t in weighted if t.bucket == bucket][:20]
    assert not {t.prompt for t in weighted} & {t.prompt for t in held_out}
    assert len({t.prompt for t in weighted}) == 120
    # interleaved while every bucket lasts, then the larger buckets' remainder
    assert [t.bucket for t in weighted[:3]] == ["e2", "e3", "h1"]
    assert [t.bucket for t in weighted[-20:]] == ["e2"] * 20
    with pytest.raises(ValueError, match="leg_facts mix has 4 buckets"):
        build_splits(20, 10, "leg_facts", (2, 2, 1))


def test_warm_start_examples_are_noisy_at_about_the_declared_rates():
    _, held_out = build_splits(20, 10, "leg_facts")
    pairs = warm_start_examples("leg_facts", 150, 2_000_000_000,
                                frozenset(t.prompt for t in held_out),
                                lambda i: np.random.default_rng([0, i]))
    assert len(pairs) == 600 and not {p for p, _ in pairs} & {t.prompt for t in held_out}
    exact = {p: legs.worked_solution(p) for p, _ in pairs}
    correct = [s.startswith(exact[p]) for p, s in pairs]       # a check line may follow
    by_bucket = np.array(correct).reshape(150, 4).mean(axis=0)  # interleaved e2, e3, h1, h2
    assert by_bucket[0] > 0.9 and by_bucket[1] > 0.9           # step slips only (0.2% each)
    # one / two half-known facts: decoy rates 0.92-0.70, so about 0.19 and 0.19^2 ~ 0.04
    assert 0.10 < by_bucket[2] < 0.30 and by_bucket[3] < 0.10 and by_bucket[3] < by_bucket[2]
