"""Champion gate decisions as a table, and what each says."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.gate import decide, tolerance_needed

CASES = [
    # metric, higher_is_better, candidate, champion, tolerance, accepted
    ("roc_auc", True, 0.90, None, 0.0, True),
    ("roc_auc", True, 0.90, 0.90, 0.0, True),
    ("roc_auc", True, 0.91, 0.90, 0.0, True),
    ("roc_auc", True, 0.89, 0.90, 0.0, False),
    ("roc_auc", True, 0.89, 0.90, 0.02, True),
    ("roc_auc", True, 0.87, 0.90, 0.02, False),
    ("rmse", False, 10.0, 10.0, 0.0, True),
    ("rmse", False, 9.0, 10.0, 0.0, True),
    ("rmse", False, 11.0, 10.0, 0.0, False),
    ("rmse", False, 11.0, 10.0, 1.5, True),
]


@pytest.mark.parametrize(
    ("metric", "higher", "candidate", "champion", "tolerance", "accepted"), CASES
)
def test_gate(  # noqa: PLR0917 (one parameter per table column)
    metric: str,
    higher: bool,
    candidate: float,
    champion: float | None,
    tolerance: float,
    accepted: bool,
) -> None:
    decision = decide(
        metric=metric,
        higher_is_better=higher,
        candidate=candidate,
        champion=champion,
        champion_version="v1" if champion is not None else None,
        tolerance=tolerance,
        basis="same-holdout" if champion is not None else "no-champion",
    )
    assert decision.accepted is accepted
    assert metric in decision.reason
    assert ("--force registers anyway" in decision.remedy) is not accepted


HOLDOUT = "both scored on this run's held-out rows"
WORDING = [
    # candidate, champion, tolerance, verdict, reason
    (
        0.799,
        0.790,
        0.0,
        "better",
        f"better than production v3 by 0.009: roc_auc 0.7990 vs 0.7900 (higher is better; "
        f"{HOLDOUT})",
    ),
    (
        0.790,
        0.790,
        0.0,
        "equal",
        f"equal to production v3: roc_auc 0.7900 (higher is better; {HOLDOUT})",
    ),
    (
        0.786,
        0.790,
        0.01,
        "within-tolerance",
        "worse than production v3 by 0.004, within tolerance 0.01: roc_auc 0.7860 vs 0.7900 "
        f"(higher is better; {HOLDOUT})",
    ),
    (
        0.781,
        0.790,
        0.0,
        "rejected",
        "roc_auc 0.7810 is worse than production v3's 0.7900 by 0.009, past the tolerance 0 "
        f"(higher is better; {HOLDOUT})",
    ),
]


@pytest.mark.parametrize(("candidate", "champion", "tolerance", "verdict", "reason"), WORDING)
def test_each_decision_says_how_the_two_compare(
    candidate: float, champion: float, tolerance: float, verdict: str, reason: str
) -> None:
    decision = decide(
        metric="roc_auc",
        higher_is_better=True,
        candidate=candidate,
        champion=champion,
        champion_version="v3",
        tolerance=tolerance,
        basis="same-holdout",
    )
    assert decision.verdict == verdict
    assert decision.reason == reason
    assert "not worse" not in decision.reason


def test_a_rejection_names_the_flags_that_would_register_it() -> None:
    decision = decide(
        metric="roc_auc",
        higher_is_better=True,
        candidate=0.781,
        champion=0.790,
        champion_version="v3",
        tolerance=0.0,
        basis="same-holdout",
    )
    assert not decision.accepted
    assert decision.tolerance_needed == 0.009
    assert decision.remedy == "--tolerance 0.009 allows that much, --force registers anyway"
    assert decision.as_dict()["tolerance_needed"] == 0.009


def test_lower_is_better_and_recorded_metrics_are_said() -> None:
    decision = decide(
        metric="rmse",
        higher_is_better=False,
        candidate=52.5,
        champion=50.3,
        champion_version="v7",
        tolerance=1.0,
        basis="recorded-metrics",
    )
    assert decision.reason == (
        "rmse 52.5000 is worse than production v7's 50.3000 by 2.2, past the tolerance 1 "
        "(lower is better; production's recorded score: the feature schemas differ)"
    )
    assert decision.remedy == "--tolerance 2.2 allows that much, --force registers anyway"


def test_the_last_bits_of_a_float_are_not_worse() -> None:
    decision = decide(
        metric="roc_auc",
        higher_is_better=True,
        candidate=0.1 + 0.2 - 1e-16,
        champion=0.3 + 1e-16,
        champion_version="v1",
        tolerance=0.0,
        basis="same-holdout",
    )
    assert decision.accepted
    assert decision.verdict == "equal"


@pytest.mark.parametrize(
    ("shortfall", "needed"),
    [
        (0.009, 0.009),
        (0.790 - 0.781, 0.009),  # 0.009000000000000008
        (0.0093, 0.0093),
        (0.00931, 0.0094),
        (0.0999, 0.1),
        (2.2, 2.2),
        (1234.0, 1300.0),
        (3e-12, 3e-12),
    ],
)
def test_tolerance_needed_is_round_and_enough(shortfall: float, needed: float) -> None:
    assert tolerance_needed(round(shortfall, 12)) == needed


@settings(deadline=None, database=None)
@given(
    champion=st.floats(min_value=-1e6, max_value=1e6),
    shortfall=st.floats(min_value=1e-9, max_value=1e3),
    higher=st.booleans(),
)
def test_the_tolerance_a_rejection_names_lets_the_candidate_in(
    champion: float, shortfall: float, higher: bool
) -> None:
    candidate = champion - shortfall if higher else champion + shortfall
    common = {
        "metric": "m",
        "higher_is_better": higher,
        "candidate": candidate,
        "champion": champion,
        "champion_version": "v1",
        "basis": "same-holdout",
    }
    rejected = decide(tolerance=0.0, **common)  # type: ignore[arg-type]
    if rejected.accepted:  # the shortfall vanished in rounding
        return
    assert rejected.tolerance_needed is not None
    assert decide(tolerance=rejected.tolerance_needed, **common).accepted  # type: ignore[arg-type]
