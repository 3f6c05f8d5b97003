"""Experiment arithmetic against hand-computed and scipy-computed values, and the sequential
test's error rate by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from rollout.experiment_stats import (
    Arm,
    Values,
    compare,
    compare_means,
    decide,
    msprt,
    msprt_means,
    relative_interval,
    sample_ratio,
    student_t_two_sided,
)
from serving_common.experiment import assign, hashed_user

USERS = [f"user-{i}" for i in range(100_000)]


def test_assignment_is_stable_and_salted_by_the_experiment() -> None:
    first = [assign(u, "checkout-v2", 30) for u in USERS]
    assert first == [assign(u, "checkout-v2", 30) for u in USERS]  # every replica agrees
    share = first.count("treatment") / len(USERS)
    bound = 4 * math.sqrt(0.3 * 0.7 / len(USERS))  # 4 binomial standard deviations
    assert abs(share - 0.3) < bound
    other = [assign(u, "checkout-v3", 30) for u in USERS]
    moved = sum(a != b for a, b in zip(first, other, strict=True)) / len(USERS)
    # Independent draws move 2 x 0.3 x 0.7 = 42% of users; the same salt would move none.
    assert abs(moved - 0.42) < 4 * math.sqrt(0.42 * 0.58 / len(USERS))


def test_assignment_ends() -> None:
    assert {assign(u, "e", 0) for u in USERS[:1000]} == {"control"}
    assert {assign(u, "e", 100) for u in USERS[:1000]} == {"treatment"}
    with pytest.raises(ValueError, match="0 to 100"):
        assign("u", "e", 101)


def test_two_proportions_as_computed_by_hand_and_by_scipy() -> None:
    result = compare(Arm(1000, 100), Arm(1000, 130))
    # By hand: pooled rate 0.115, pooled SE sqrt(0.115 * 0.885 * 2 / 1000) = 0.0142671.
    assert result.z == pytest.approx(0.03 / 0.0142671, rel=1e-5)
    assert result.p_value == pytest.approx(2 * stats.norm.sf(result.z), rel=1e-12)
    assert result.p_value == pytest.approx(0.03549, abs=5e-5)
    unpooled = math.sqrt(0.1 * 0.9 / 1000 + 0.13 * 0.87 / 1000)
    assert result.lift == pytest.approx(0.03)
    assert result.lift_low == pytest.approx(0.03 - stats.norm.ppf(0.975) * unpooled, rel=1e-9)
    assert result.lift_high == pytest.approx(0.03 + stats.norm.ppf(0.975) * unpooled, rel=1e-9)
    assert result.relative_lift == pytest.approx(0.3)


def test_no_data_is_no_evidence() -> None:
    result = compare(Arm(0, 0), Arm(10, 3))
    assert result.p_value == 1.0
    assert result.relative_lift is None
    with pytest.raises(ValueError, match="between 0 and exposures"):
        Arm(10, 11)


@pytest.mark.parametrize(("control", "treatment", "percent"), [(5000, 5000, 50), (7100, 2900, 30),
                                                                (5200, 4800, 50)])  # fmt: skip
def test_sample_ratio_mismatch_matches_scipy(control: int, treatment: int, percent: float) -> None:
    total = control + treatment
    expected = [total * (1 - percent / 100), total * percent / 100]
    reference = stats.chisquare([control, treatment], f_exp=expected)
    statistic, p_value = sample_ratio(control, treatment, percent)
    assert statistic == pytest.approx(reference.statistic, rel=1e-9)
    assert p_value == pytest.approx(reference.pvalue, rel=1e-6)


def _simulate(
    rng: np.random.Generator, rates: tuple[float, float], experiments: int, days: int, daily: int
) -> tuple[float, float, float]:
    """Share of experiments where the naive daily z-test, and mSPRT, ever said ship or
    rollback (each read after every day), and where mSPRT said ship."""
    conversions = rng.binomial(daily, rates, size=(experiments, days, 2)).cumsum(axis=1)
    naive = sequential = shipped = 0
    for experiment in conversions:
        looks = [
            (Arm(daily * (d + 1), int(c[0])), Arm(daily * (d + 1), int(c[1])))
            for d, c in enumerate(experiment)
        ]
        naive += any(compare(*look).p_value <= 0.05 for look in looks)
        verdict = "keep-running"
        for day in range(1, days + 1):
            verdict = decide(msprt(looks[:day]), compare(*looks[day - 1]).lift)
            if verdict != "keep-running":
                break
        sequential += verdict != "keep-running"
        shipped += verdict == "ship"
    return naive / experiments, sequential / experiments, shipped / experiments


def test_daily_looks_keep_msprt_at_alpha_where_the_naive_test_inflates() -> None:
    """2,000 A/A experiments (both variants convert at 10%), read every day for 14 days."""
    naive, sequential, _ = _simulate(np.random.default_rng(7), (0.10, 0.10), 2000, 14, 200)
    assert naive > 0.15  # peeking at a fixed-horizon test: three times its alpha or worse
    assert sequential <= 0.05


def test_msprt_ships_a_real_lift() -> None:
    """10% -> 13% conversion, 500 users per variant per day: found within 14 days."""
    _, _, shipped = _simulate(np.random.default_rng(11), (0.10, 0.13), 300, 14, 500)
    assert shipped > 0.8


def test_hashed_user_keys_are_stable_per_experiment_and_not_the_key() -> None:
    assert hashed_user("user-1", "e") == hashed_user("user-1", "e")
    assert hashed_user("user-1", "e") != hashed_user("user-1", "f")
    assert len(hashed_user("user-1", "e")) == 16
    assert "user-1" not in hashed_user("user-1", "e")


@pytest.mark.parametrize(("t", "df"), [(0.5, 3), (2.1, 10), (1.96, 1000), (4.0, 5.5), (0.01, 2)])
def test_student_t_matches_scipy(t: float, df: float) -> None:
    assert student_t_two_sided(t, df) == pytest.approx(2 * stats.t.sf(t, df), rel=1e-9)


def test_welch_t_test_and_interval_match_scipy() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.exponential(10, 200), rng.exponential(12, 150)
    ours = compare_means(
        Values(len(a), float(a.sum()), float((a * a).sum())),
        Values(len(b), float(b.sum()), float((b * b).sum())),
    )
    reference = stats.ttest_ind(b, a, equal_var=False)
    interval = reference.confidence_interval(0.95)
    assert ours.t == pytest.approx(reference.statistic, rel=1e-9)
    assert ours.df == pytest.approx(reference.df, rel=1e-9)
    assert ours.p_value == pytest.approx(reference.pvalue, rel=1e-9)
    assert ours.lift_low == pytest.approx(interval.low, rel=1e-6)
    assert ours.lift_high == pytest.approx(interval.high, rel=1e-6)


def test_relative_interval_by_the_delta_method() -> None:
    low, high = relative_interval(Arm(2000, 200), Arm(2000, 300)) or (0.0, 0.0)
    # Var(R) = 1.5^2 x (0.9 / (0.1 x 2000) + 0.85 / (0.15 x 2000)) = 0.016500.
    margin = stats.norm.ppf(0.975) * math.sqrt(2.25 * (0.9 / 200 + 0.85 / 300))
    assert (low, high) == pytest.approx((0.5 - margin, 0.5 + margin), rel=1e-9)
    assert relative_interval(Arm(100, 0), Arm(100, 5)) is None


def test_msprt_on_means_holds_alpha_under_daily_looks_and_finds_a_shift() -> None:
    """A/A numeric outcomes (exponential, mean 10) read daily for 14 days: the running
    minimum of the always-valid p stays under alpha; a 10% shift in the mean is found."""
    rng = np.random.default_rng(5)

    def decided(shift: float, experiments: int) -> float:
        count = 0
        for _ in range(experiments):
            sums = np.zeros((2, 3))
            for _ in range(14):
                days = [rng.exponential(10 * (1 + shift * side), 300) for side in (0, 1)]
                for side, values in enumerate(days):
                    sums[side] += (len(values), values.sum(), (values * values).sum())
                arms = [Values(int(n), float(t), float(q)) for n, t, q in sums]
                if msprt_means(arms[0], arms[1], tau=0.1) <= 0.05:
                    count += 1
                    break
        return count / experiments

    assert decided(0.0, 400) <= 0.05
    assert decided(0.1, 100) > 0.8
