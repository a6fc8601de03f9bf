"""The noise and the test that decides a keep (pure; scipy's t distribution)."""

from __future__ import annotations

import math
import statistics

import pytest
from scipy import stats

from actors.research.significance import Noise, compare, p_value, pooled_noise


def test_pooled_noise_is_the_anova_within_group_spread():
    groups = [[3.30, 3.32, 3.31], [3.10, 3.14], [2.9]]  # a group of one adds nothing
    noise = pooled_noise(groups)
    ss = sum((v - statistics.fmean(g)) ** 2 for g in groups for v in g)
    assert noise.df == 3 and noise.sd == pytest.approx(math.sqrt(ss / 3))
    assert pooled_noise([[1.0], [2.0]]) is None


def test_p_value_matches_a_two_sample_t_test_with_the_pooled_spread():
    best, cand = [3.30, 3.32, 3.31, 3.29], [3.27, 3.28, 3.26]
    noise = pooled_noise([best, cand])
    # With only these two groups the pooled test is Student's t-test, one-sided.
    expected = stats.ttest_ind(cand, best, equal_var=True, alternative="less").pvalue
    assert p_value(cand, best, noise) == pytest.approx(expected, rel=1e-9)
    # A required gain makes the same runs less convincing.
    assert p_value(cand, best, noise, min_gain=0.02) > p_value(cand, best, noise)


def test_a_clear_gain_is_kept_a_loss_discarded_a_small_gain_sent_to_more_seeds():
    noise = Noise(0.01, 4)
    base = [3.30, 3.31, 3.29]
    assert compare([3.10], base, noise).status == "keep"
    assert compare([3.35], base, noise).status == "discard"
    small = compare([3.295], base, noise)
    assert small.status == "more" and small.more_of == "candidate" and 0.05 < small.p < 0.5
    # More runs of the candidate than of the best: the best gets the next seed.
    assert compare([3.295, 3.296, 3.294, 3.297], base, noise).more_of == "best"
    # The seeds run out: the gain was not proven.
    out = compare([3.299] * 5, base, noise, max_seeds=5)
    assert out.status == "discard" and "5 seeds" in out.why


def test_parameter_golf_record_rule_asks_for_0_005_at_p_0_01():
    noise = Noise(0.001, 10)
    best = [1.2200, 1.2210, 1.2190]
    near = [1.2170, 1.2172, 1.2168]  # beats the best by 0.003: significant, but less than 0.005
    assert compare(near, best, noise, alpha=0.01).status == "keep"
    assert compare(near, best, noise, alpha=0.01, min_gain=0.005, max_seeds=3).status == "discard"
    record = [1.2120, 1.2125, 1.2115]  # 0.008 better
    kept = compare(record, best, noise, alpha=0.01, min_gain=0.005)
    assert kept.status == "keep" and kept.p < 0.01


def test_identical_reruns_make_the_comparison_exact_and_simplifications_may_cost_a_little():
    noise = pooled_noise([[2.5, 2.5, 2.5]])
    assert noise.sd == 0.0
    assert compare([2.4999], [2.5], noise).status == "keep"
    assert compare([2.5], [2.5], noise).status == "discard"
    assert compare([3.305], [3.30, 3.31], Noise(0.01, 2), simplification=True).status == "keep"
    assert compare([3.35], [3.30, 3.31], Noise(0.01, 2), simplification=True).status == "discard"
