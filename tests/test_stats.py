"""bench.stats on hand-computed examples."""
import math

import numpy as np
import pytest

from bench import stats

# Student-t quantiles from printed tables
T975_2, T80_2 = 4.302653, 1.060660
T975_4, T80_4 = 2.776445, 0.940965


def test_curve_average_is_the_trapezoid_after_step_0_over_its_span():
    # steps 10, 20, 40 (uneven): area = 10 * (0.2 + 0.4) / 2 + 20 * (0.4 + 0.3) / 2 = 10
    assert stats.curve_average([0, 10, 20, 40], [0.9, 0.2, 0.4, 0.3]) == pytest.approx(10 / 30)
    assert stats.curve_average([20, 0, 10], [0.4, 0.9, 0.2]) == pytest.approx(0.3)   # unsorted
    assert stats.curve_average([0, 8], [0.1, 0.5]) == 0.5           # one evaluation after 0
    assert math.isnan(stats.curve_average([0], [0.1]))


def test_curve_average_on_a_token_grid():
    # (0, 0.2) -> (100, 0.4) -> (300, 0.6); up to 200: 100*0.3 + 100*0.45 = 75 over 200
    assert stats.curve_average_upto([0, 100, 300], [0.2, 0.4, 0.6], 200) == pytest.approx(0.375)
    assert stats.curve_average_upto([0, 100], [0.2, 0.4], 100) == pytest.approx(0.3)
    assert math.isnan(stats.curve_average_upto([0, 100], [0.2, 0.4], 150))


def test_paired_interval_probability_of_improvement_and_mde():
    d = [0.01, 0.03, -0.01, 0.03, 0.0]
    mean, half = stats.t_interval(d)
    sd = np.std(d, ddof=1)                       # 0.0178885
    assert mean == pytest.approx(0.012)
    assert half == pytest.approx(T975_4 * sd / math.sqrt(5), rel=1e-5)
    assert stats.prob_improvement(d) == pytest.approx((3 + 0.5) / 5)
    assert stats.mde(0.015, 3) == pytest.approx((T975_2 + T80_2) * 0.015 / math.sqrt(3),
                                                 rel=1e-5)
    assert stats.mde(sd, 5) == pytest.approx((T975_4 + T80_4) * sd / math.sqrt(5), rel=1e-5)
    assert math.isnan(stats.mde(0.01, 1))


def test_seeds_for_mde_is_the_fewest_seeds_reaching_the_target():
    # sd 0.01: n = 4 gives (3.182446 + 0.978472) 0.01 / 2 = 0.0208 > 0.02, n = 5 gives
    # (2.776445 + 0.940965) 0.01 / sqrt 5 = 0.0166 (printed t quantiles)
    assert stats.mde(0.01, 4) == pytest.approx((3.182446 + 0.978472) * 0.01 / 2, rel=1e-5)
    assert stats.seeds_for_mde(0.01) == 5
    assert stats.mde(0.01, 4) > stats.TARGET_MDE >= stats.mde(0.01, 5)
    assert stats.seeds_for_mde(0.01, target=0.05) == 3      # 5.3634 * 0.01 / sqrt 3 = 0.031
    assert stats.seeds_for_mde(float("nan")) is None
    assert stats.seeds_for_mde(1.0, most=10) is None


def test_pooled_sd_and_mde_note():
    # two comparisons of 3 seeds (variances 0.0001 and 0.0004) and one of 2 (variance 0.0002):
    # the footer pools the 3-seed ones only, so the noisier short row cannot move it
    groups = [[0.0, 0.01, 0.02], [0.0, 0.02, 0.04], [0.0, 0.02], [0.5]]
    sd, n, k = stats.pooled_sd(groups)
    assert sd == pytest.approx(math.sqrt((0.0001 + 0.0004) / 2)) and n == 3 and k == 2
    note = stats.mde_note(groups)
    assert "n = 3 seeds" in note and "1 comparison(s) with another seed count left out" in note
    assert f"{stats.mde(sd, 3):.3f}" in note
    # a tie in counts goes to the larger seed count
    assert stats.pooled_sd([[0.0, 0.02], [0.0, 0.01, 0.02]])[1:] == (3, 1)
    assert "needs at least 2" in stats.mde_note([[0.1]])


def test_interquartile_mean_from_five_seeds():
    assert math.isnan(stats.interquartile_mean([1, 2, 3, 4]))
    # 8 values, 25% trimmed each side: mean of 3, 4, 5, 6
    assert stats.interquartile_mean([100, 1, 2, 3, 4, 5, 6, -50]) == pytest.approx(3.5)


def test_normalised_score_and_its_bootstrap_interval():
    score, low, high = stats.normalised_score([0.01, 0.02, 0.03], [0.04, 0.04, 0.04])
    assert score == pytest.approx(0.5)
    assert 0.25 <= low <= score <= high <= 0.75     # resamples range over 0.25 .. 0.75
    assert stats.normalised_score([0.01, 0.02, 0.03], [0.04, 0.04, 0.04]) == (score, low, high)
    assert all(math.isnan(v) for v in stats.normalised_score([0.1], [0.0]))
    # an oracle behind the reference on average: no share of a headroom that is not there
    assert all(math.isnan(v) for v in stats.normalised_score([-0.02, -0.04], [-0.01, 0.0]))


def test_a_headroom_whose_interval_reaches_zero_is_not_divided_by():
    # mean +0.0067 above the reference, but t(0.975, 2) 4.303 x SD 0.0252 / sqrt 3 = 0.0626 wide: the
    # oracle is not detectably above it, so +0.02 would otherwise read "+3 oracles"
    assert not stats.headroom_detected([0.03, -0.02, 0.01])
    assert all(math.isnan(v) for v in stats.normalised_score([0.01, 0.02, 0.03],
                                                             [0.03, -0.02, 0.01]))
    # the same mean, tight: detected
    assert stats.headroom_detected([0.006, 0.007, 0.007])
    assert stats.normalised_score([0.01, 0.02, 0.03], [0.006, 0.007, 0.007])[0] == \
        pytest.approx(0.02 / (0.02 / 3))
    assert stats.headroom_detected([0.01])          # one seed: the mean alone
    assert not stats.headroom_detected([]) and not stats.headroom_detected([0.0, 0.0])
