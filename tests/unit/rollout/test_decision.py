"""The canary decision engine, as a table: state + measurements + policy -> action."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rollout.decision import (
    Action,
    Custom,
    Decision,
    Measurements,
    Policy,
    Side,
    State,
    decide,
    z_test,
)

POLICY = Policy()
HEALTHY = Side(requests=1000, errors=1, p95_seconds=0.02, p99_seconds=0.04)
CONTROL = Side(requests=4000, errors=4, p95_seconds=0.02, p99_seconds=0.04)


def measured(
    treatment: Side | None = HEALTHY, control: Side | None = CONTROL, **kw: object
) -> Measurements:
    return Measurements(treatment=treatment, control=control, **kw)  # type: ignore[arg-type]


def run_rounds(rounds: list[Measurements], policy: Policy = POLICY) -> list[Decision]:
    """Apply decisions in sequence from a fresh rollout, as the loop does."""
    state, decisions = State(), []
    for m in rounds:
        decision = decide(state, m, policy)
        decisions.append(decision)
        state = decision.state
        if decision.action in {Action.PROMOTE, Action.ROLLBACK, Action.HALT}:
            break
    return decisions


def test_healthy_canary_is_promoted_through_every_step() -> None:
    decisions = run_rounds([measured()] * 10)
    assert [(d.action, d.percent) for d in decisions] == [
        (Action.STEP, 10),
        (Action.STEP, 25),
        (Action.STEP, 50),
        (Action.PROMOTE, None),
    ]
    assert all(c.passed for d in decisions for c in d.checks)


@pytest.mark.parametrize(
    ("name", "rounds", "policy", "expected"),
    [
        (
            "error spike rolled back after threshold rounds",
            [
                measured(),
                measured(replace(HEALTHY, errors=300)),
                measured(replace(HEALTHY, errors=300)),
            ],
            POLICY,
            [Action.STEP, Action.HOLD, Action.ROLLBACK],
        ),
        (
            "threshold 1 rolls back on the first failed round",
            [measured(), measured(replace(HEALTHY, errors=300))],
            replace(POLICY, threshold=1),
            [Action.STEP, Action.ROLLBACK],
        ),
        (
            "latency regression rolled back",
            [measured()] + [measured(replace(HEALTHY, p95_seconds=0.35, p99_seconds=0.6))] * 2,
            POLICY,
            [Action.STEP, Action.HOLD, Action.ROLLBACK],
        ),
        (
            "slower than control (within absolute limits) rolled back",
            [measured()] + [measured(replace(HEALTHY, p95_seconds=0.08))] * 2,
            POLICY,
            [Action.STEP, Action.HOLD, Action.ROLLBACK],
        ),
        (
            "too little traffic holds without counting a failure",
            [measured(), *[measured(replace(HEALTHY, requests=20, errors=10))] * 5],
            POLICY,
            [Action.STEP, *[Action.HOLD] * 5],
        ),
        (
            "no data halts",
            [measured(), measured(treatment=None)],
            POLICY,
            [Action.STEP, Action.HALT],
        ),
        (
            "no control data halts",
            [measured(), measured(control=None)],
            POLICY,
            [Action.STEP, Action.HALT],
        ),
        (
            "Prometheus down halts, even when the canary looked healthy",
            [measured(), measured(), Measurements(prometheus_up=False)],
            POLICY,
            [Action.STEP, Action.STEP, Action.HALT],
        ),
        (
            "revision not ready waits, then is rolled back at the deadline",
            [
                measured(treatment_ready=False, waited_for_ready_seconds=10),
                measured(treatment_ready=False, waited_for_ready_seconds=300),
                measured(treatment_ready=False, waited_for_ready_seconds=600),
            ],
            POLICY,
            [Action.HOLD, Action.HOLD, Action.ROLLBACK],
        ),
        (
            "a failed custom check counts like any other",
            [measured(), *[measured(custom=(Custom("business", 0.2, passed=False),))] * 2],
            POLICY,
            [Action.STEP, Action.HOLD, Action.ROLLBACK],
        ),
    ],
)
def test_decision_table(
    name: str, rounds: list[Measurements], policy: Policy, expected: list[Action]
) -> None:
    decisions = run_rounds(rounds, policy)
    assert [d.action for d in decisions] == expected, name
    last = decisions[-1]
    if last.action is Action.ROLLBACK:
        assert last.percent == 0
    if last.action in {Action.HOLD, Action.HALT}:
        assert last.percent is None  # the split is left as it is
    assert last.reasons


def test_failed_round_reasons_name_the_check() -> None:
    state = State(step_index=0)
    decision = decide(state, measured(replace(HEALTHY, errors=300)), POLICY)
    assert decision.action is Action.HOLD
    assert decision.state.failed_rounds == 1
    assert any(r.startswith("error ratio failed: treatment 30.00%") for r in decision.reasons)
    assert "1 of 2 failed rounds" in decision.reasons


def test_live_accuracy_z_test() -> None:
    good = replace(HEALTHY, correct=950, incorrect=50)
    bad = replace(HEALTHY, correct=800, incorrect=200)
    control = replace(CONTROL, correct=950, incorrect=50)
    assert z_test(good, control, 0.95)[0] == "ship"
    verdict, z = z_test(bad, control, 0.95)
    assert verdict == "rollback"
    assert z < -1.645
    slightly = replace(HEALTHY, correct=41, incorrect=9)  # 82% vs 90%: z about -1.15
    assert z_test(slightly, replace(CONTROL, correct=45, incorrect=5), 0.95)[0] == "keep running"
    # Through the engine: worse accuracy fails the round; too little feedback is not judged.
    decision = decide(State(step_index=0), measured(bad, control), POLICY)
    assert decision.action is Action.HOLD
    assert any("live accuracy failed" in r for r in decision.reasons)
    few = replace(HEALTHY, correct=5, incorrect=5)
    assert decide(State(step_index=0), measured(few, control), POLICY).action is Action.STEP


@pytest.mark.parametrize(
    "kwargs",
    [{"steps": ()}, {"steps": (10, 5)}, {"steps": (0, 50)}, {"steps": (10, 150)}, {"threshold": 0}],
)
def test_bad_policies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"steps|threshold"):
        Policy(**kwargs)  # type: ignore[arg-type]
