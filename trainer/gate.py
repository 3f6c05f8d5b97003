"""The champion gate: register a candidate only if it is not worse than production by more than
the tolerance.

Each decision says how the two compare, in the primary metric's units: "better by X", "equal",
"worse by X, within tolerance Y", or rejected, worse by X past the tolerance, with the two flags
that would let it in (``--tolerance`` and how much, ``--force``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

Basis = Literal["no-champion", "same-holdout", "recorded-metrics"]
Verdict = Literal["no-champion", "better", "equal", "within-tolerance", "rejected"]

DIGITS = 12
"""Scores are compared to this many decimals: two computations of the same score can differ in
the last bits of a float, and that is not "worse"."""
BASIS_WORDS: dict[Basis, str] = {
    "no-champion": "",
    "same-holdout": "both scored on this run's held-out rows",
    "recorded-metrics": "production's recorded score: the feature schemas differ",
}


@dataclass(frozen=True)
class GateDecision:
    """Whether the candidate passes, and the numbers behind it."""

    accepted: bool
    reason: str
    metric: str
    candidate: float
    champion: float | None = None
    champion_version: str | None = None
    basis: Basis = "no-champion"
    forced: bool = False
    verdict: Verdict = "no-champion"
    shortfall: float | None = None
    """How much worse than production the candidate is (negative: better), in the metric's
    units."""
    tolerance: float | None = None
    tolerance_needed: float | None = None
    """The smallest round ``--tolerance`` (two significant digits) that would let a rejected
    candidate in."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def remedy(self) -> str:
        """For a rejection, the flags that would register the candidate; else empty."""
        if self.accepted or self.tolerance_needed is None:
            return ""
        return f"--tolerance {self.tolerance_needed:g} allows that much, --force registers anyway"


def tolerance_needed(shortfall: float) -> float:
    """The smallest number of two significant digits that is at least ``shortfall`` (> 0)."""
    exponent = math.floor(math.log10(shortfall)) - 1
    unit = 10.0**exponent
    steps = math.ceil(round(shortfall / unit, 6))
    while True:
        value = float(f"{steps * unit:.{max(0, -exponent)}f}")
        if round(value, DIGITS) >= shortfall:
            return value
        steps += 1


def decide(
    *,
    metric: str,
    higher_is_better: bool,
    candidate: float,
    champion: float | None,
    champion_version: str | None,
    tolerance: float,
    basis: Basis,
) -> GateDecision:
    """Accept when ``candidate`` is no worse than ``champion`` by more than ``tolerance``
    (compared to ``DIGITS`` decimals).

    With no champion (no ``production`` alias yet) the candidate is accepted.
    """
    if champion is None or champion_version is None:
        return GateDecision(
            True,
            f"no production version to compare with; {metric}={candidate:.4f}",
            metric,
            candidate,
        )
    shortfall = round(
        (champion - candidate) if higher_is_better else (candidate - champion), DIGITS
    )
    direction = "higher" if higher_is_better else "lower"
    production = f"production {champion_version}"
    how = f"{direction} is better; {BASIS_WORDS[basis]}"
    numbers = f"{metric} {candidate:.4f} vs {champion:.4f}"
    needed = None
    if shortfall > tolerance:
        verdict: Verdict = "rejected"
        needed = tolerance_needed(shortfall)
        reason = (
            f"{metric} {candidate:.4f} is worse than {production}'s {champion:.4f} by "
            f"{shortfall:.4g}, past the tolerance {tolerance:g} ({how})"
        )
    elif shortfall > 0:
        verdict = "within-tolerance"
        reason = (
            f"worse than {production} by {shortfall:.4g}, within tolerance {tolerance:g}: "
            f"{numbers} ({how})"
        )
    elif shortfall < 0:
        verdict = "better"
        reason = f"better than {production} by {-shortfall:.4g}: {numbers} ({how})"
    else:
        verdict = "equal"
        reason = f"equal to {production}: {metric} {candidate:.4f} ({how})"
    return GateDecision(
        verdict != "rejected",
        reason,
        metric,
        candidate,
        champion,
        champion_version,
        basis,
        verdict=verdict,
        shortfall=shortfall,
        tolerance=tolerance,
        tolerance_needed=needed,
    )
