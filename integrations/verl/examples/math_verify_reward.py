"""verl custom reward: math-verify on the response against the gold answer (the preset's rule:
``trainer.verifier.score_math_verify``).  Needs ``pip install math-verify`` in the verl env."""
from verl.utils.reward_score import math_verify


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    return float(math_verify.compute_score(solution_str, ground_truth))
