"""A/B experiment arithmetic: sticky assignment, two-proportion statistics, sample-ratio
mismatch, and an always-valid sequential test so a decision read every day stays honest.

- assignment (the variant of a user key) is ``serving_common.experiment.assign``, which the
  model server runs.
- ``compare``: per-variant rates, absolute and relative lift with a 95% interval (unpooled
  standard error), and the two-sided p-value of the two-proportion z-test (pooled).
- ``sample_ratio``: the chi-square test of the observed split against the configured percent.
- ``msprt``: the mixture sequential probability ratio test for a difference of proportions
  (normal approximation; Johari, Pekelis and Walsh, "Always valid inference", 2017), whose
  p-value may be read after every look without inflating the false-positive rate. With the
  observed difference d ~ N(theta, V) and a N(0, tau^2) mixture over theta, the ratio is
  sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2))); it is a non-negative martingale
  under "no difference", so by Ville's inequality it ever reaches 1/alpha with probability at
  most alpha. ``decide`` turns it into ``ship``, ``rollback`` or ``keep-running``.

Only the standard library: the rollout CLI imports this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Decision = Literal["ship", "rollback", "keep-running"]
Z_95 = 1.959963984540054
"""The standard normal's 97.5th percentile: a two-sided 95% interval."""


def _normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2))


@dataclass(frozen=True)
class Arm:
    """One variant's exposures (users or requests counted) and conversions among them."""

    exposures: int
    conversions: int

    def __post_init__(self) -> None:
        if self.exposures < 0 or not 0 <= self.conversions <= self.exposures:
            raise ValueError(
                f"conversions must be between 0 and exposures, got {self.conversions} of "
                f"{self.exposures}"
            )

    @property
    def rate(self) -> float:
        return self.conversions / self.exposures if self.exposures else 0.0


@dataclass(frozen=True)
class Comparison:
    control_rate: float
    treatment_rate: float
    lift: float
    """Treatment rate minus control rate."""
    lift_low: float
    lift_high: float
    """The 95% interval of ``lift`` (unpooled standard error)."""
    relative_lift: float | None
    """``lift`` over the control rate (None when the control rate is 0)."""
    z: float
    p_value: float
    """Two-sided, two-proportion z-test with the pooled standard error (1.0 without data)."""


def compare(control: Arm, treatment: Arm) -> Comparison:
    """Treatment against control, as a fixed-horizon test reads it (once, at the end)."""
    p1, p2 = control.rate, treatment.rate
    lift = p2 - p1
    n1, n2 = control.exposures, treatment.exposures
    if n1 == 0 or n2 == 0:
        return Comparison(p1, p2, lift, -math.inf, math.inf, None, 0.0, 1.0)
    unpooled = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    pooled_rate = (control.conversions + treatment.conversions) / (n1 + n2)
    pooled = math.sqrt(pooled_rate * (1 - pooled_rate) * (1 / n1 + 1 / n2))
    z = lift / pooled if pooled > 0 else 0.0
    return Comparison(
        control_rate=p1,
        treatment_rate=p2,
        lift=lift,
        lift_low=lift - Z_95 * unpooled,
        lift_high=lift + Z_95 * unpooled,
        relative_lift=lift / p1 if p1 > 0 else None,
        z=z,
        p_value=min(1.0, 2 * _normal_sf(abs(z))),
    )


def sample_ratio(control: int, treatment: int, treatment_percent: float) -> tuple[float, float]:
    """Chi-square statistic and p-value (1 degree of freedom) of the observed split against
    the configured one. A tiny p-value (e.g. below 0.001) means assignment or logging is broken:
    no lift from that experiment can be trusted."""
    total = control + treatment
    share = treatment_percent / 100
    if total == 0 or not 0 < share < 1:
        return 0.0, 1.0
    expected = (total * (1 - share), total * share)
    statistic = sum(
        (observed - wanted) ** 2 / wanted
        for observed, wanted in zip((control, treatment), expected, strict=True)
    )
    # Chi-square with one degree of freedom is a squared standard normal.
    return statistic, min(1.0, 2 * _normal_sf(math.sqrt(statistic)))


def msprt_likelihood_ratio(control: Arm, treatment: Arm, tau: float) -> float:
    """The mixture likelihood ratio of "the rates differ" against "they do not", the
    difference's prior being normal with standard deviation ``tau`` (on the rate scale)."""
    n1, n2 = control.exposures, treatment.exposures
    if n1 == 0 or n2 == 0:
        return 1.0
    p1, p2 = control.rate, treatment.rate
    pooled_rate = (control.conversions + treatment.conversions) / (n1 + n2)
    variance = pooled_rate * (1 - pooled_rate) * (1 / n1 + 1 / n2)
    if variance <= 0:
        return 1.0
    tau2 = tau * tau
    exponent = tau2 * (p2 - p1) ** 2 / (2 * variance * (variance + tau2))
    return math.sqrt(variance / (variance + tau2)) * math.exp(min(exponent, 700.0))


def msprt(looks: list[tuple[Arm, Arm]], tau: float = 0.05) -> float:
    """The always-valid p-value after every look so far (cumulative counts at each look):
    the running minimum of 1 / likelihood ratio, capped at 1."""
    p_value = 1.0
    for control, treatment in looks:
        p_value = min(p_value, 1.0 / msprt_likelihood_ratio(control, treatment, tau))
    return p_value


def decide(always_valid_p: float, lift: float, alpha: float = 0.05) -> Decision:
    """``ship`` or ``rollback`` once the always-valid p-value is at most ``alpha`` (by the
    lift's sign), else ``keep-running``."""
    if always_valid_p > alpha:
        return "keep-running"
    return "ship" if lift > 0 else "rollback"
