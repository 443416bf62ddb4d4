"""Rewards are exact-match, and the verifier timeout is a bound no item can overrun."""
import pytest

from trainer.verifier import (MATH_VERIFY, REASONING_GYM, AnswerTooLarge, VerifierPool,
                              check_magnitude, score_reasoning_gym)

CHAIN_SUM_3 = {"answer": "3", "metadata": {"source_dataset": "chain_sum"}}
HOSTILE = ["\\boxed{\\frac{9^{999999}}{7^{999999}}}", "\\boxed{\\left(9^{9}\\right)^{9^{9}}}",
           "\\boxed{9^{(9^{9})}}", "\\boxed{9^{\\,9^{9}}}"]


@pytest.mark.parametrize("response, expected", [
    ("\\boxed{-3}", 0.0), ("\\boxed{13}", 0.0),       # reasoning-gym alone gives 0.5 to both
    ("\\boxed{33}", 0.0), ("\\boxed{3}", 1.0),
    ("\\boxed{+03}", 1.0), ("\\boxed{3.0}", 1.0),    # its parsing is kept
])
def test_chain_sum_reward_is_exact_match(response, expected):
    assert score_reasoning_gym(response, CHAIN_SUM_3) == expected


@pytest.mark.parametrize("text", HOSTILE + ["9^{9^{9}+1}", "{(9^9)}^{9^9}", "9^{2\\cdot 9^{9}}",
                                            "2^{\\big(3^{20}\\big)}"])
def test_power_spellings_are_refused_by_the_size_guard(text):
    with pytest.raises(AnswerTooLarge):
        check_magnitude(text)


@pytest.mark.parametrize("text", ["\\left(2^{3}\\right)^{2}", "3^{2}+4^{2}", "\\frac{1}{2^{10}}",
                                  "x^{2 n}", "10^{-3}", "(1.5)^{2}"])
def test_ordinary_powers_pass_the_size_guard(text):
    check_magnitude(text)


def test_no_item_holds_a_worker_longer_than_timeout_plus_margin():
    """An item stuck in C code that no alarm interrupts, and math-verify without the guard on the
    spellings above, are killed from the parent; their neighbours keep their scores."""
    # timeout: a fresh worker's first math-verify call imports sympy (~1 s on a loaded machine);
    # slack: the parent's poll interval and a loaded machine
    timeout, margin, slack = 3.0, 0.5, 1.5
    gold = {"answer": "3"}
    items = [("tests.hostile_scorers:c_hang", "hang", gold),
             ("tests.hostile_scorers:c_hang", "3", gold),
             *[("tests.hostile_scorers:unguarded_math_verify", text, gold) for text in HOSTILE],
             (REASONING_GYM, "\\boxed{3}", CHAIN_SUM_3),
             *[(MATH_VERIFY, text, gold) for text in HOSTILE],
             (MATH_VERIFY, "\\boxed{3}", gold)]
    with VerifierPool(workers=2, timeout=timeout, kill_margin=margin) as pool:
        report = pool.score(items)
        assert report.rewards.tolist() == [0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]
        assert report.status[0] == "timeout"
        assert all(s in ("timeout", "error") for s in report.status[2:6])
        assert report.status[7:11] == ["error"] * 4           # refused by the guard up front
        assert max(report.seconds) <= timeout + margin + slack, report.seconds.tolist()
        # fresh workers took over and score again
        assert pool.score([(MATH_VERIFY, "\\boxed{3}", gold)] * 3).rewards.tolist() == [1, 1, 1]
