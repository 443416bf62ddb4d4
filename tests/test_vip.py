"""VIP: KKT relaxation vs cvxpy, Algorithm-2 rounding vs brute force, the GP, the allocator."""
from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit

import allocators
from allocators.base import PromptInfo, PromptStats, Rollout, Setting, StepBudget
from allocators.embeddings import hashed_embedding
from allocators.vip import (VIP, PassRateGP, greedy_round, median_pairwise_distance,
                            objective_curve, relaxed_counts, skip_small_counts, vip_counts,
                            vip_objective)


def brute_force_optimum(pass_rate, total, lower, upper, objective):
    """Smallest objective over every integer allocation (tiny instances only)."""
    best = None
    for head in itertools.product(range(lower, upper + 1), repeat=len(pass_rate) - 1):
        last = total - sum(head)
        if lower <= last <= upper:
            value = vip_objective(list(head) + [last], pass_rate, objective)
            best = value if best is None else min(best, value)
    return best


def pass_rates_for(a):
    """Pass rates whose variance p(1-p) is ``a`` (the root below 1/2)."""
    return (1.0 - np.sqrt(1.0 - 4.0 * np.asarray(a, dtype=np.float64))) / 2.0


# ----------------------------------------------------------------------------------------------
# The objective and its continuous relaxation
# ----------------------------------------------------------------------------------------------

def test_drgrpo_curve_is_the_paper_form_from_three_and_its_tangent_below():
    n = np.array([3.0, 4.0, 8.0, 16.0])
    assert np.allclose(objective_curve(n, "grpo"), (n - 1) / n**2)
    # tangent at 3: value 2/9, slope -1/27
    assert objective_curve(np.array([2.0]), "grpo")[0] == pytest.approx(2 / 9 + 1 / 27)
    assert objective_curve(np.array([1.0]), "grpo")[0] == pytest.approx(2 / 9 + 2 / 27)
    grid = np.linspace(1, 20, 400)
    second_diff = np.diff(objective_curve(grid, "grpo"), 2)
    assert np.all(second_diff >= -1e-15)                      # convex on the whole range
    assert np.all(np.diff(objective_curve(grid, "grpo")) < 0)  # and decreasing
    assert np.allclose(objective_curve(n, "rloo"), 1 / (n - 1))


def test_rloo_relaxation_hand_case():
    # a = (1/4, 1/16): n - 1 proportional to sqrt(a), so n1 - 1 = 2 (n2 - 1); n1 + n2 = 11
    p = pass_rates_for([0.25, 0.0625])
    assert relaxed_counts(p, 11, lower=2, upper=10, objective="rloo") == pytest.approx([7, 4])
    assert vip_counts(p, 11, lower=2, upper=10, objective="rloo").tolist() == [7, 4]


def test_drgrpo_relaxation_satisfies_the_kkt_conditions():
    rng = np.random.default_rng(3)
    p = rng.uniform(0.02, 0.98, 40)
    lower, upper, total = 4, 16, 320
    n = relaxed_counts(p, total, lower=lower, upper=upper, objective="grpo")
    a = p * (1 - p)
    assert n.sum() == pytest.approx(total)
    marginal = a * (n - 2) / n**3                       # a g(n) = lambda for interior prompts
    interior = (n > lower + 1e-6) & (n < upper - 1e-6)
    assert interior.sum() >= 10
    lam = np.median(marginal[interior])
    assert np.allclose(marginal[interior], lam, rtol=1e-6)
    assert np.all(a[n <= lower + 1e-6] * (lower - 2) / lower**3 <= lam * (1 + 1e-6))
    assert np.all(a[n >= upper - 1e-6] * (upper - 2) / upper**3 >= lam * (1 - 1e-6))


CVXPY_CASES = [("grpo", 4, 16, 30, 240), ("grpo", 2, 16, 20, 80), ("grpo", 1, 4, 24, 48),
               ("grpo", 3, 7, 12, 70), ("rloo", 4, 16, 30, 240), ("rloo", 2, 8, 20, 80)]


@pytest.mark.parametrize("objective,lower,upper,prompts,total", CVXPY_CASES)
def test_kkt_and_cvxpy_relaxations_agree(objective, lower, upper, prompts, total):
    rng = np.random.default_rng(prompts + total)
    p = rng.uniform(0, 1, prompts)
    p[:2] = [0.0, 1.0]                                   # zero-variance prompts included
    kkt = relaxed_counts(p, total, lower=lower, upper=upper, objective=objective)
    conic = relaxed_counts(p, total, lower=lower, upper=upper, objective=objective,
                           solver="cvxpy")
    for n in (kkt, conic):
        assert n.sum() == pytest.approx(total, abs=1e-6)
        assert n.min() >= lower - 1e-7 and n.max() <= upper + 1e-7
    best = vip_objective(kkt, p, objective)
    assert vip_objective(conic, p, objective) == pytest.approx(best, rel=2e-5)
    assert best <= vip_objective(conic, p, objective) * (1 + 1e-9)
    integer_kkt = vip_counts(p, total, lower=lower, upper=upper, objective=objective)
    integer_conic = vip_counts(p, total, lower=lower, upper=upper, objective=objective,
                               solver="cvxpy")
    assert vip_objective(integer_conic, p, objective) == pytest.approx(
        vip_objective(integer_kkt, p, objective), rel=1e-3)


# ----------------------------------------------------------------------------------------------
# Integer rounding
# ----------------------------------------------------------------------------------------------

def _tiny_instances(count, seed):
    rng = np.random.default_rng(seed)
    for i in range(count):
        objective = ("grpo", "rloo")[i % 2]
        prompts = int(rng.integers(2, 5))
        lower = int(rng.integers(1 if objective == "grpo" else 2, 5))
        upper = lower + int(rng.integers(1, 7))
        total = int(rng.integers(prompts * lower, prompts * upper + 1))
        p = np.round(rng.uniform(0, 1, prompts), 2)
        yield p, total, lower, upper, objective


def test_marginal_allocation_from_lower_is_exactly_optimal():
    """Greedy +1 from L (convex objective) equals the brute-force optimum."""
    for p, total, lower, upper, objective in _tiny_instances(150, seed=11):
        start = np.full(len(p), float(lower))
        greedy = greedy_round(start, p, total, lower=lower, upper=upper, objective=objective)
        assert vip_objective(greedy, p, objective) == pytest.approx(
            brute_force_optimum(p, total, lower, upper, objective), rel=1e-12, abs=1e-15)


def test_algorithm2_rounding_is_near_optimal():
    """Floor + greedy (the paper's Algorithm 2) is a heuristic: within 0.2 % of the optimum."""
    optimal = 0
    instances = list(_tiny_instances(150, seed=12))
    for p, total, lower, upper, objective in instances:
        counts = vip_counts(p, total, lower=lower, upper=upper, objective=objective)
        best = brute_force_optimum(p, total, lower, upper, objective)
        value = vip_objective(counts, p, objective)
        assert best - 1e-15 <= value <= best * (1 + 2e-3) + 1e-15
        optimal += value <= best * (1 + 1e-12) + 1e-15
    assert optimal >= 0.9 * len(instances)


def test_algorithm2_rounding_is_not_always_optimal():
    p = np.array([0.45, 0.66, 0.58, 0.41])
    counts = vip_counts(p, 14, lower=2, upper=4, objective="grpo")
    assert counts.tolist() == [4, 3, 4, 3]
    best = brute_force_optimum(p, 14, 2, 4, "grpo")
    assert vip_objective([4, 2, 4, 4], p, "grpo") == pytest.approx(best)
    assert vip_objective(counts, p, "grpo") > best * (1 + 1e-4)


@settings(max_examples=80, deadline=None)
@given(prompts=st.integers(1, 60), lower=st.integers(1, 6), width=st.integers(0, 30),
       fill=st.floats(0, 1), objective=st.sampled_from(["grpo", "rloo"]),
       seed=st.integers(0, 2**31 - 1), zeros=st.floats(0, 1))
def test_counts_sum_exactly_and_respect_bounds(prompts, lower, width, fill, objective, seed,
                                               zeros):
    if objective == "rloo":
        lower = max(lower, 2)
    upper = lower + width
    total = prompts * lower + int(round(fill * prompts * width))
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 1, prompts)
    p[rng.uniform(size=prompts) < zeros] = rng.choice([0.0, 1.0])
    counts = vip_counts(p, total, lower=lower, upper=upper, objective=objective)
    assert counts.dtype.kind == "i"
    assert int(counts.sum()) == total
    assert counts.min() >= lower and counts.max() <= upper


def test_equal_pass_rates_give_the_uniform_split():
    for objective in ("grpo", "rloo"):
        assert vip_counts(np.full(16, 0.3), 128, lower=4, upper=16,
                          objective=objective).tolist() == [8] * 16
        counts = vip_counts(np.full(16, 0.7), 130, lower=4, upper=16, objective=objective)
        assert counts.sum() == 130 and counts.max() - counts.min() <= 1


def test_no_variance_anywhere_gives_an_even_valid_split():
    p = np.array([0.0, 1.0, 0.0, 1.0, 1.0])
    counts = vip_counts(p, 23, lower=2, upper=8)
    assert counts.sum() == 23 and counts.max() - counts.min() <= 1 and counts.min() >= 2


def test_zero_variance_prompts_get_the_lower_bound():
    p = np.array([0.0, 0.5, 1.0, 0.3, 0.6])
    counts = vip_counts(p, 30, lower=2, upper=12)
    assert counts[0] == 2 and counts[2] == 2
    assert counts[1] >= counts[3] and counts.sum() == 30


def test_more_variance_gets_more_rollouts():
    p = np.array([0.5, 0.3, 0.1, 0.03])
    for objective in ("grpo", "rloo"):
        counts = vip_counts(p, 40, lower=4, upper=16, objective=objective)
        assert np.all(np.diff(counts) <= 0) and counts[0] > counts[-1]


def test_infeasible_problems_raise():
    with pytest.raises(ValueError, match="below"):
        vip_counts(np.full(4, 0.5), 7, lower=2, upper=8)
    with pytest.raises(ValueError, match="exceeds"):
        vip_counts(np.full(4, 0.5), 33, lower=2, upper=8)
    with pytest.raises(ValueError, match="lower >= 2"):
        vip_counts(np.full(4, 0.5), 8, lower=1, upper=8, objective="rloo")
    with pytest.raises(ValueError, match="objective"):
        vip_counts(np.full(4, 0.5), 8, lower=1, upper=8, objective="ppo")


def test_skip_small_counts_refills_the_largest():
    # 1, 3 and 2 are below 4: six rollouts freed; 8 -> 10 (upper), then 6 -> 10
    counts = skip_small_counts([1, 6, 3, 8, 2], threshold=4, upper=10)
    assert counts.tolist() == [0, 10, 0, 10, 0]


# ----------------------------------------------------------------------------------------------
# The Gaussian process
# ----------------------------------------------------------------------------------------------

def test_median_heuristic_on_a_hand_example():
    # points 0, 1, 3 on a line: distances 1, 3, 2 -> median 2
    x = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    assert median_pairwise_distance(x) == pytest.approx(2.0)
    assert PassRateGP(x).length_scale == pytest.approx(2.0)
    assert PassRateGP(x, length_scale=0.4).length_scale == 0.4
    assert median_pairwise_distance(np.zeros((5, 3))) == 1.0


def test_kriging_update_pins_the_batch_and_moves_neighbours():
    x = np.array([[0.0], [0.1], [5.0], [0.05]])
    gp = PassRateGP(x, length_scale=0.5, prior_mean=-5.0)
    assert gp.predict([0, 1, 2]) == pytest.approx(expit(-5.0))
    gp.update([0, 1, 0], [0.5, 0.75, 0.5])                  # duplicate rows are averaged
    assert gp.mean[0] == pytest.approx(0.0) and gp.mean[1] == pytest.approx(np.log(3.0))
    assert gp.predict([0])[0] == pytest.approx(0.5)
    assert gp.mean[2] == pytest.approx(-5.0, abs=1e-6)      # far away: prior
    assert 0.0 < gp.mean[3] < np.log(3.0)                   # between its two neighbours
    gp.update([2], [1.0])                                   # clipped at 1 - 1e-6
    assert gp.mean[2] == pytest.approx(np.log((1 - 1e-6) / 1e-6))


def _exact_gp_prediction(x, rows, rates, length_scale, prior_mean, jitter=1e-4, eps=1e-6):
    """One kriging update in float64 from explicit pairwise differences (no norm expansion)."""
    d2 = ((x[:, None, :] - x[None, rows, :]) ** 2).sum(-1)
    k_all = np.exp(-d2 / (2 * length_scale ** 2))
    gram = k_all[rows] + jitter * np.eye(len(rows))
    observed = np.log(np.clip(rates, eps, 1 - eps) / (1 - np.clip(rates, eps, 1 - eps)))
    mean = prior_mean + k_all @ np.linalg.solve(gram, observed - prior_mean)
    mean[rows] = observed
    return expit(mean)


def test_gp_matches_an_exact_float64_gp_on_near_duplicate_prompts():
    # 64 near-duplicate unit vectors in 384 dimensions (paraphrases under MiniLM): K(B, B) is
    # within 1e-5 of all-ones, so the solve amplifies any rounding in the Gram matrix by the
    # condition number (~6e5): with float32 embeddings this case was off by 0.34
    rng = np.random.default_rng(0)
    base = rng.normal(size=384)
    x = base + 1e-3 * rng.normal(size=(96, 384))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rows = np.arange(64)
    rates = rng.integers(0, 9, size=64) / 8
    gp = PassRateGP(x, length_scale=0.4, prior_mean=-5.0)
    gp.update(rows, rates)
    exact = _exact_gp_prediction(x, rows, rates, 0.4, -5.0)
    assert np.max(np.abs(gp.predict(np.arange(96)) - exact)) < 1e-6
    gram = gp.kernel(rows, rows)
    assert gram.dtype == np.float64 and np.linalg.cond(gram + 1e-4 * np.eye(64)) > 1e5


def _smooth_pass_rate_problem(dim, seed, pool=800, held_out=200):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(pool, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    return rng, x, expit(3.0 * x @ direction), np.arange(pool - held_out, pool)


def _held_out_errors(gp, rng, truth, held, steps, group=8, batch=64):
    prior = np.abs(gp.predict(held) - truth[held]).mean()
    for _ in range(steps):
        rows = rng.choice(held[0], batch, replace=False)
        observed = truth[rows] if group is None else rng.binomial(group, truth[rows]) / group
        gp.update(rows, observed)
    return prior, np.abs(gp.predict(held) - truth[held]).mean()


def test_gp_recovers_a_smooth_function_from_exact_pass_rates():
    rng, x, truth, held = _smooth_pass_rate_problem(dim=6, seed=0)
    prior, fitted = _held_out_errors(PassRateGP(x), rng, truth, held, steps=6, group=None)
    assert prior > 0.15 and fitted < 0.02


def test_gp_recovers_a_smooth_function_from_noisy_groups():
    # median-heuristic bandwidth; 8 Bernoulli draws per observed prompt
    rng, x, truth, held = _smooth_pass_rate_problem(dim=2, seed=1)
    prior, fitted = _held_out_errors(PassRateGP(x), rng, truth, held, steps=6)
    assert fitted < 0.6 * prior


def test_gp_with_a_local_kernel_beats_the_prior_in_more_dimensions():
    rng, x, truth, held = _smooth_pass_rate_problem(dim=6, seed=2)
    prior, fitted = _held_out_errors(PassRateGP(x, length_scale=0.3), rng, truth, held, steps=6)
    assert fitted < 0.85 * prior


# ----------------------------------------------------------------------------------------------
# Embeddings
# ----------------------------------------------------------------------------------------------

def test_hashed_embedding_is_deterministic_unit_norm_and_lexical():
    texts = ["What is 12 + 30?", "What is 12 + 31?", "Sort the list [b, a, c] alphabetically.",
             ""]
    first, second = hashed_embedding(texts), hashed_embedding(texts)
    assert first.shape == (4, 384) and first.dtype == np.float32
    assert np.array_equal(first, second)
    assert np.linalg.norm(first[:3], axis=1) == pytest.approx(1.0, abs=1e-6)
    assert not first[3].any()
    assert first[0] @ first[1] > first[0] @ first[2] + 0.3
    assert hashed_embedding(texts[:1], dim=16).shape == (1, 16)
    with pytest.raises(TypeError):
        hashed_embedding("one string")


# ----------------------------------------------------------------------------------------------
# The allocator
# ----------------------------------------------------------------------------------------------

def _setting(prompts=16, group=8, fraction=1.0, seed=0, pool=64):
    return Setting(prompts_per_step=prompts, group_size=group, budget_fraction=fraction,
                   max_response_tokens=64, steps=10, seed=seed, pool_size=pool)


def _pool(size=64):
    texts = [f"Compute {i % 7} + {i} times {i % 3}" for i in range(size)]
    vectors = hashed_embedding(texts)
    return [PromptInfo(pid=i, text=t, token_ids=(i,), features={"embedding": vectors[i]})
            for i, t in enumerate(texts)]


def _budget(setting):
    return StepBudget(rollouts=setting.rollouts_per_step, tokens=0.0, mean_length=0.0)


def _groups(step, pass_rates_by_pid, size=8):
    rows = []
    for group, (pid, rate) in enumerate(pass_rates_by_pid.items()):
        successes = int(round(rate * size))
        for i in range(size):
            rows.append(Rollout(pid=pid, group=group, tag="main", step=step, round=0,
                                tokens=np.zeros(3, dtype=np.int64),
                                logprobs=np.zeros(3, dtype=np.float32), finish="eos",
                                reward=float(i < successes)))
    return allocators.base.group_rows(rows)


def test_vip_is_registered_and_needs_embeddings():
    assert allocators.get("vip") is VIP
    assert set(VIP(_setting()).needs().features) == {"embedding"}
    vip = VIP(_setting())
    with pytest.raises(ValueError, match="embedding"):
        vip.attach_pool([PromptInfo(pid=0, text="x", token_ids=(1,))])


def test_default_bounds_follow_the_budget():
    assert VIP(_setting()).count_bounds(16, 128) == (4, 16)
    assert VIP(_setting(fraction=0.5)).count_bounds(16, 64) == (2, 8)
    assert VIP(_setting(fraction=0.25)).count_bounds(16, 32) == (1, 4)
    assert VIP(_setting(fraction=0.25), objective="rloo").count_bounds(16, 32) == (2, 2)
    assert VIP(_setting(), lower=1, upper=32).count_bounds(16, 128) == (1, 32)
    assert VIP(_setting(prompts=3), lower=1).count_bounds(3, 24) == (1, 16)   # 2C/M = 16 fits
    assert VIP(_setting(prompts=3), lower=7).count_bounds(3, 24) == (7, 10)   # C - (M-1) L
    with pytest.raises(ValueError):
        VIP(_setting(), lower=9)


def test_plan_is_uniform_before_any_observation_and_adapts_after():
    setting = _setting()
    pool = _pool()
    vip = VIP(setting)
    vip.attach_pool(pool)
    candidates = pool[:16]
    first = vip.plan(0, candidates, PromptStats(), _budget(setting))
    assert [r.n for r in first] == [8] * 16 and [r.pid for r in first] == list(range(16))
    rates = {pid: (0.5 if pid < 4 else 1.0) for pid in range(16)}
    vip.observe(0, _groups(0, rates), PromptStats())
    second = vip.plan(1, candidates, PromptStats(), _budget(setting))
    counts = np.array([r.n for r in second])
    assert counts.sum() == 128 and counts.min() >= 4 and counts.max() <= 16
    assert counts[:4].min() > counts[4:].max()
    assert vip.gp.predict([0])[0] == pytest.approx(0.5)


def test_skip_below_lower_is_the_code_form():
    setting = _setting()
    pool = _pool()
    vip = VIP(setting, skip_below_lower=True)
    vip.attach_pool(pool)
    rates = {pid: (0.5 if pid < 8 else 1.0) for pid in range(16)}
    vip.observe(0, _groups(0, rates), PromptStats())
    counts = np.array([r.n for r in vip.plan(1, pool[:16], PromptStats(), _budget(setting))])
    assert counts.sum() == 128 and counts.max() <= 16
    assert (counts == 0).any() and counts[counts > 0].min() >= 4


def test_vip_pickles_with_its_state():
    setting = _setting()
    pool = _pool()
    vip = VIP(setting, objective="rloo", prior_mean=-5.0)
    vip.attach_pool(pool)
    vip.observe(0, _groups(0, {pid: (pid % 5) / 4 for pid in range(16)}), PromptStats())
    clone = pickle.loads(pickle.dumps(vip))
    assert np.array_equal(clone.gp.mean, vip.gp.mean)
    stats, budget = PromptStats(), _budget(setting)
    assert ([(r.pid, r.n) for r in clone.plan(1, pool[8:24], stats, budget)]
            == [(r.pid, r.n) for r in vip.plan(1, pool[8:24], stats, budget)])
    options = vip.resolved_options()
    assert options["objective"] == "rloo" and options["length_scale_rule"] == "median"
    assert options["lower"] == 4 and options["upper"] == 16
