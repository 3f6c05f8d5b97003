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

Only the standard library: the rollout CLI imports this. Pure arithmetic: it knows nothing of
Prometheus, Kubernetes, the model server or how counts are read.
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
    return _mixture_ratio(p2 - p1, variance, tau)


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


@dataclass(frozen=True)
class Values:
    """One variant's numeric outcomes, as counters keep them: count, sum, sum of squares."""

    count: int
    total: float
    squares: float

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    @property
    def variance(self) -> float:
        """The sample variance (n - 1), from the sums; 0 below two values."""
        if self.count < 2:
            return 0.0
        return max(0.0, (self.squares - self.total * self.total / self.count) / (self.count - 1))


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (Lentz's method)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return result


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_two_sided(t: float, df: float) -> float:
    """P(|T| > |t|) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        return 1.0
    return min(1.0, _incomplete_beta(df / 2, 0.5, df / (df + t * t)))


@dataclass(frozen=True)
class MeanComparison:
    control_mean: float
    treatment_mean: float
    lift: float
    """Treatment mean minus control mean."""
    lift_low: float
    lift_high: float
    """The 95% interval of ``lift`` (Welch: t quantile found by bisection)."""
    relative_lift: float | None
    t: float
    df: float
    p_value: float
    """Two-sided Welch t-test (1.0 without two values per side)."""


def _t_quantile(df: float, two_sided_p: float = 0.05) -> float:
    """The t with P(|T| > t) = ``two_sided_p`` (bisection on ``student_t_two_sided``)."""
    low, high = 0.0, 1000.0
    for _ in range(100):
        middle = (low + high) / 2
        if student_t_two_sided(middle, df) > two_sided_p:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def compare_means(control: Values, treatment: Values) -> MeanComparison:
    """Treatment's mean against control's: Welch's t-test and its 95% interval."""
    m1, m2 = control.mean, treatment.mean
    lift = m2 - m1
    relative = lift / m1 if m1 > 0 else None
    if control.count < 2 or treatment.count < 2:
        return MeanComparison(m1, m2, lift, -math.inf, math.inf, relative, 0.0, 0.0, 1.0)
    a, b = control.variance / control.count, treatment.variance / treatment.count
    error = math.sqrt(a + b)
    if error == 0:
        p_value = 1.0 if lift == 0 else 0.0
        return MeanComparison(m1, m2, lift, lift, lift, relative, 0.0, math.inf, p_value)
    df = (a + b) ** 2 / (a * a / (control.count - 1) + b * b / (treatment.count - 1))
    t = lift / error
    margin = _t_quantile(df) * error
    return MeanComparison(
        m1, m2, lift, lift - margin, lift + margin, relative, t, df, student_t_two_sided(t, df)
    )


def msprt_means(control: Values, treatment: Values, tau: float) -> float:
    """The always-valid p-value of a difference of means at this look: 1 / the mixture
    likelihood ratio (normal approximation; the prior's standard deviation is ``tau`` times
    the pooled standard deviation, so ``tau`` is an effect size)."""
    if control.count < 2 or treatment.count < 2:
        return 1.0
    variance = control.variance / control.count + treatment.variance / treatment.count
    pooled_sd = math.sqrt(
        ((control.count - 1) * control.variance + (treatment.count - 1) * treatment.variance)
        / (control.count + treatment.count - 2)
    )
    if variance <= 0 or pooled_sd <= 0:
        return 1.0
    return min(1.0, 1.0 / _mixture_ratio(treatment.mean - control.mean, variance, tau * pooled_sd))


def _mixture_ratio(difference: float, variance: float, tau: float) -> float:
    tau2 = tau * tau
    exponent = tau2 * difference * difference / (2 * variance * (variance + tau2))
    return math.sqrt(variance / (variance + tau2)) * math.exp(min(exponent, 700.0))


def relative_interval(control: Arm, treatment: Arm) -> tuple[float, float] | None:
    """95% interval of the relative lift (treatment rate / control rate - 1), by the delta
    method on the ratio; None when either rate is 0."""
    p1, p2 = control.rate, treatment.rate
    if p1 <= 0 or p2 <= 0 or control.exposures == 0 or treatment.exposures == 0:
        return None
    ratio = p2 / p1
    variance = (
        ratio
        * ratio
        * ((1 - p1) / (p1 * control.exposures) + (1 - p2) / (p2 * treatment.exposures))
    )
    margin = Z_95 * math.sqrt(variance)
    return ratio - 1 - margin, ratio - 1 + margin
