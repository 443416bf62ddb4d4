"""Tasks (disjoint splits, worked solutions), the verifier pool (timeouts, crashes), the ledger."""
import time

import numpy as np
import pytest

from allocators.base import Rollout
from trainer.ledger import Ledger
from trainer.tasks import build_splits, extract_boxed, worked_solution
from trainer.verifier import REASONING_GYM, VerifierPool

GOLD = {"answer": "16", "metadata": {"source_dataset": "chain_sum"}}


def test_training_and_held_out_sets_share_no_question():
    train, held_out = build_splits(60, 20)
    assert not {t.prompt for t in train} & {t.prompt for t in held_out}
    assert len({t.prompt for t in train}) == len(train)
    assert {t.bucket for t in held_out} == {t.bucket for t in train}
    assert len(held_out) == 4 * 20


def test_worked_solution_is_a_chain_of_partial_sums_that_scores_one():
    assert worked_solution("12 + 7 - 3") == "12+7=19\n19-3=16\n\\boxed{16}"
    assert worked_solution("2 - 6") == "2-6=-4\n\\boxed{-4}"
    train, _ = build_splits(20, 5)
    with VerifierPool(workers=1) as pool:
        report = pool.score([(t.scorer, t.solution, t.gold) for t in train])
    assert report.rewards.tolist() == [1.0] * len(train)


def test_noisy_chain_solutions_err_at_their_rate_and_the_check_line_keeps_the_answer():
    from trainer.tasks import get_mix
    expression = "3 + 4 - 5 + 1 - 2"
    exact = worked_solution(expression)
    rng = np.random.default_rng(0)
    assert worked_solution(expression, rng, 0.0, 0.0) == exact
    checked = worked_solution(expression, rng, 0.0, 1.0)
    assert checked == exact + "\ncheck 3+4-5+1-2=1"
    always_wrong = [worked_solution(expression, rng, 1.0, 0.0) for _ in range(50)]
    # every step miswritten: each written partial sum differs from the one its line implies
    for text in always_wrong:
        for line in text.split("\n")[:-1]:
            left, written = line.rsplit("=", 1)
            assert eval(left) != int(written)
    # each of the 4 steps is miswritten with probability 0.3, independently
    steps = [line for _ in range(1000) for line in
             worked_solution(expression, rng, 0.3, 0.0).split("\n")[:-1]]
    miswritten = np.mean([eval(line.rsplit("=", 1)[0]) != int(line.rsplit("=", 1)[1])
                          for line in steps])
    assert len(steps) == 4000 and abs(miswritten - 0.3) < 0.025
    mix = get_mix("noisy_chain")
    from trainer.tasks import build_pool
    # two one-digit terms have 200 distinct questions: a balanced warm start cycles them
    t2 = mix.buckets[:1]
    assert len(build_pool(300, t2)) == 200
    cycled = build_pool(300, t2, cycle=True)
    assert len(cycled) == 300 and len({t.prompt for t in cycled}) == 200
    train, held_out = build_splits(30, 10, "noisy_chain")
    assert {t.bucket for t in train} == {b.name for b in mix.buckets}
    assert not {t.prompt for t in train} & {t.prompt for t in held_out}
    with VerifierPool(workers=1) as pool:
        report = pool.score([(t.scorer, worked_solution(t.prompt.rstrip(" =\n"), rng, 0.0, 1.0),
                              t.gold) for t in train])
    assert report.rewards.tolist() == [1.0] * len(train)


def test_extract_boxed_takes_the_last_balanced_box():
    assert extract_boxed("\\boxed{1} then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert extract_boxed("\\boxed{12") is None
    assert extract_boxed("no marker") is None


def test_timeouts_and_crashes_score_zero_are_counted_and_spare_neighbours():
    items = [("tests.hostile_scorers:sleepy", "hang", GOLD),
             ("tests.hostile_scorers:sleepy", "16", GOLD),
             ("tests.hostile_scorers:crashy", "crash", GOLD),
             ("tests.hostile_scorers:crashy", "raise", GOLD),
             ("tests.hostile_scorers:crashy", "16", GOLD),
             (REASONING_GYM, "so \\boxed{16}", GOLD),
             (REASONING_GYM, "so \\boxed{15}", GOLD)]
    with VerifierPool(workers=2, timeout=1.0) as pool:
        report = pool.score(items)
        assert report.rewards.tolist() == [0, 1, 0, 0, 1, 1, 0]
        assert report.status == ["timeout", "ok", "crash", "error", "ok", "ok", "ok"]
        assert report.timeouts == 1 and report.failures == 2
        # the pool survives and keeps scoring
        assert pool.score([(REASONING_GYM, "\\boxed{16}", GOLD)]).rewards.tolist() == [1.0]


def test_ledger_counts_equal_the_sum_over_rollouts():
    ledger = Ledger()
    ledger.begin_step()
    rows = [Rollout(0, 0, "main", 0, 0, np.zeros(n, np.int64), np.zeros(n, np.float32), "eos")
            for n in (3, 7, 11)]
    ledger.plan(3, 30.0)
    ledger.charge(rows[:2])
    ledger.charge(rows[2:])
    rec = ledger.step_record()
    assert rec["tokens"] == 21 and rec["rollouts"] == 3 and rec["cum_tokens"] == 21
    ledger.begin_step()
    ledger.charge(rows[:1])
    assert ledger.step_record()["tokens"] == 3 and ledger.cumulative_tokens == 24
    assert ledger.cumulative_rollouts == 4


def test_phases_charge_their_own_clock_even_when_the_body_raises(monkeypatch):
    import trainer.ledger as ledger_module
    clock = iter([10.0, 12.5, 20.0, 20.25, 30.0, 31.0])   # start/stop pairs, in seconds
    monkeypatch.setattr(ledger_module.time, "perf_counter", lambda: next(clock))
    ledger = Ledger()
    ledger.begin_step()
    with ledger.phase("generate"):
        pass
    try:
        with ledger.phase("reward"):
            raise RuntimeError("verifier blew up")
    except RuntimeError:
        pass
    with ledger.phase("evaluate"):
        pass
    rec = ledger.step_record()
    assert rec["seconds"]["generate"] == 2.5 and rec["seconds"]["reward"] == 0.25
    assert rec["seconds"]["evaluate"] == 1.0 and rec["seconds"]["update"] == 0.0
    assert rec["cum_train_seconds"] == 2.75              # evaluation is not training time
    ledger.begin_step()
    assert ledger.step_record()["seconds"]["generate"] == 0.0
    assert ledger.cumulative_seconds["generate"] == 2.5


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_ledger_charges_cpu_seconds_of_children_and_nested_phases_once():
    import subprocess
    import sys
    import time as _time

    from trainer.ledger import shared_machine
    ledger = Ledger()
    ledger.begin_step()
    outer = _time.perf_counter()
    with ledger.phase("generate"):
        _spin(0.2)
        with ledger.phase("logprob"):          # e.g. the vLLM engine's recompute
            _spin(0.3)
    outer = _time.perf_counter() - outer
    with ledger.phase("reward"):              # a child process burning CPU, as a verifier does
        subprocess.run([sys.executable, "-c",
                        "import time\nend = time.process_time() + 0.4\n"
                        "while time.process_time() < end: pass"], check=True)
    with ledger.phase("other"):
        _time.sleep(0.3)                       # waiting costs wall seconds, not CPU seconds
    rec = ledger.step_record()
    cpu = rec["cpu_seconds"]
    assert 0.18 <= cpu["generate"] < 0.29 and 0.28 <= cpu["logprob"] < 0.45
    assert cpu["reward"] >= 0.38
    assert cpu["other"] < 0.05 <= rec["seconds"]["other"] - 0.25
    wall = ledger.cumulative_seconds                # the inner phase is not charged twice
    assert outer - 0.5 < wall["generate"] + wall["logprob"] <= outer
    assert rec["cum_train_cpu_seconds"] == pytest.approx(sum(cpu.values()), abs=1e-3)
    timing = ledger.timing(threads=1)
    assert timing["clock"] == "cpu" and timing["cpu_logprob"] == pytest.approx(cpu["logprob"], abs=1e-3)
    assert shared_machine(10.0, 4.0, threads=2) and not shared_machine(10.0, 19.0, threads=2)
    with pytest.raises(ValueError):
        with ledger.phase("logprobs"):
            pass
