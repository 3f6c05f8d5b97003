"""Champion gate decisions as a table."""

from __future__ import annotations

import pytest

from trainer.gate import decide

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
    if not accepted:
        assert decision.reason.startswith("worse than production by")
