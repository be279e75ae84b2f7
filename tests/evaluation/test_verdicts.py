"""The over-seeds decision rule every claim uses: it must be able to say no."""

import math

import pytest

from adaptflow.evaluation.verdicts import (
    FAILS,
    FEW_SEEDS,
    HOLDS,
    NOISE,
    all_of,
    holm,
    paired_verdict,
)


def test_one_seed_is_never_enough_even_with_a_huge_gain():
    r = paired_verdict([0.99], [0.10])
    assert r.verdict == FEW_SEEDS and r.n == 1 and math.isnan(r.se)


def test_consistent_gain_holds_and_reversed_gain_fails():
    assert paired_verdict([0.80, 0.82, 0.81], [0.70, 0.71, 0.69]).verdict == HOLDS
    assert paired_verdict([0.70, 0.71, 0.69], [0.80, 0.82, 0.81]).verdict == FAILS


def test_three_seeds_need_the_t_interval_not_two_standard_errors():
    # gains +0.10, +0.02, +0.06: mean 0.06, SE 0.0231 -> 2 SE = 0.046 (would "hold"),
    # t(0.975, 2) * SE = 4.303 * 0.0231 = 0.099 > 0.06: not shown
    r = paired_verdict([0.80, 0.72, 0.76], [0.70, 0.70, 0.70])
    assert r.se == pytest.approx(0.02309, abs=1e-4)
    assert r.half_width == pytest.approx(4.3027 * r.se, rel=1e-3)
    assert r.verdict == NOISE
    assert "95 % CI, 3 seeds" in r.describe()


def test_gain_smaller_than_its_spread_is_noise():
    # mean gain +0.01, but the per-seed gains are +0.10, -0.08, +0.01: SE ~ 0.052
    r = paired_verdict([0.80, 0.62, 0.71], [0.70, 0.70, 0.70])
    assert r.verdict == NOISE
    assert r.mean_diff == pytest.approx(0.01)
    assert r.se == pytest.approx(0.0520, abs=1e-3)


def test_lower_is_better_flips_the_orientation():
    mse_method, mse_base = [0.010, 0.011, 0.012], [0.020, 0.021, 0.019]
    assert paired_verdict(mse_method, mse_base, higher_is_better=False).verdict == HOLDS
    assert paired_verdict(mse_method, mse_base, higher_is_better=True).verdict == FAILS


def test_margin_demands_a_practical_gain():
    a, b = [0.71, 0.715, 0.712], [0.70, 0.70, 0.70]  # gain ~0.012, tiny spread
    assert paired_verdict(a, b).verdict == HOLDS
    assert paired_verdict(a, b, margin=0.05).verdict == NOISE


def test_pairing_is_by_seed_not_pooled():
    # unpaired, the two lists overlap completely; paired, every seed gains exactly +0.01 +- tiny
    base = [0.50, 0.70, 0.90]
    method = [0.511, 0.709, 0.910]
    assert paired_verdict(method, base).verdict == HOLDS


def test_all_of_combines_conservatively():
    assert all_of([HOLDS, HOLDS]) == HOLDS
    assert all_of([HOLDS, NOISE]) == NOISE
    assert all_of([HOLDS, FAILS, NOISE]) == FAILS
    assert all_of([HOLDS, FEW_SEEDS]) == FEW_SEEDS
    assert all_of([]) == FEW_SEEDS


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="equal 1-d shapes"):
        paired_verdict([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="margin"):
        paired_verdict([1, 2], [1, 2], margin=-1)


def test_p_value_agrees_with_the_interval_rule():
    # the CI rule "holds" is the one-sided t-test at 2.5 %: same t statistic, same decision
    for a, b in [
        ([0.80, 0.82, 0.81], [0.70, 0.71, 0.69]),
        ([0.80, 0.72, 0.76], [0.70, 0.70, 0.70]),
        ([0.71, 0.69, 0.72, 0.70], [0.70, 0.70, 0.70, 0.70]),
    ]:
        r = paired_verdict(a, b)
        assert (r.p_value < 0.025) == (r.verdict == HOLDS)
    # hand value: gains 0.06, 0.02, 0.10 -> t = 0.06 / 0.02309 = 2.598, df 2 -> p = 0.0608
    assert paired_verdict([0.76, 0.72, 0.80], [0.70, 0.70, 0.70]).p_value == pytest.approx(
        0.0608, abs=5e-4
    )
    assert math.isnan(paired_verdict([0.9], [0.1]).p_value)


def test_holm_keeps_strong_claims_and_demotes_marginal_ones():
    strong = paired_verdict([0.90, 0.91, 0.92], [0.50, 0.50, 0.51])  # p ~ 1e-4
    # gains 0.030, 0.036, 0.024: t = 8.66, p = 0.0065 < 0.025 holds alone, but not beside
    # five other claims (0.0065 > 0.025 / 5 at the second step)
    marginal = paired_verdict([0.730, 0.736, 0.724], [0.70, 0.70, 0.70])
    fails = paired_verdict([0.50, 0.51, 0.52], [0.90, 0.91, 0.92])
    few = paired_verdict([0.9], [0.1])
    assert marginal.verdict == HOLDS and marginal.p_value == pytest.approx(0.0065, abs=1e-4)
    assert holm([strong, marginal, fails]) == [HOLDS, HOLDS, FAILS]  # 0.0065 <= 0.025 / 2
    out = holm([strong, marginal, fails, few, fails, fails, fails])
    assert out == [HOLDS, NOISE, FAILS, FEW_SEEDS, FAILS, FAILS, FAILS]
    assert holm([]) == []
