"""Experiment arithmetic against hand-computed and scipy-computed values, and the sequential
test's error rate by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from rollout.experiment_stats import (
    Arm,
    compare,
    decide,
    msprt,
    sample_ratio,
)
from serving_common.experiment import assign

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
