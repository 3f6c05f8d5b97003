"""The champion gate: register a candidate only if it is not worse than production."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Basis = Literal["no-champion", "same-holdout", "recorded-metrics"]


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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    """Accept when ``candidate`` is no worse than ``champion`` by more than ``tolerance``.

    With no champion (no ``production`` alias yet) the candidate is accepted.
    """
    if champion is None or champion_version is None:
        return GateDecision(
            True,
            f"no production version to compare with; {metric}={candidate:.4f}",
            metric,
            candidate,
        )
    shortfall = (champion - candidate) if higher_is_better else (candidate - champion)
    direction = "higher" if higher_is_better else "lower"
    numbers = (
        f"{metric} {candidate:.4f} vs production {champion_version} {champion:.4f} "
        f"({direction} is better, tolerance {tolerance:g}, compared on {basis})"
    )
    if shortfall > tolerance:
        return GateDecision(
            False,
            f"worse than production by {shortfall:.4f}: {numbers}",
            metric,
            candidate,
            champion,
            champion_version,
            basis,
        )
    return GateDecision(
        True,
        f"not worse than production: {numbers}",
        metric,
        candidate,
        champion,
        champion_version,
        basis,
    )
