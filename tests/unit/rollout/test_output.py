"""What the canary loop prints: each side's requests with every decision, latencies with the
digits that matter, and one final line saying what serves."""

from __future__ import annotations

import io
import json

from rollout.controller import RolloutState, outcome
from rollout.decision import (
    Measurements,
    Policy,
    Requests,
    Side,
    State,
    decide,
    milliseconds,
)
from rollout.output import Printer


def test_small_latencies_keep_their_digits() -> None:
    assert [milliseconds(s) for s in (0.00042, 0.0042, 0.0015, 0.012, 0.2, 0.0)] == [
        "0.42 ms",
        "4.2 ms",
        "1.5 ms",
        "12 ms",
        "200 ms",
        "0 ms",
    ]
    fast = Side(requests=500, errors=0, p95_seconds=0.00042, p99_seconds=0.0009)
    decision = decide(State(step_index=0), Measurements(treatment=fast, control=fast), Policy())
    details = {c.name: c.detail for c in decision.checks}
    assert details["p95 latency"] == "0.42 ms (limit 200 ms)"
    assert details["p95 latency vs control"] == (
        "treatment 0.42 ms vs control 0.42 ms (limit 11 ms)"
    )


def test_every_decision_line_shows_the_requests_of_each_side() -> None:
    treatment = Side(requests=95, errors=0, p95_seconds=0.001, p99_seconds=0.002)
    control = Side(requests=812, errors=0, p95_seconds=0.001, p99_seconds=0.002)
    measured = Measurements(treatment=treatment, control=control, window="1m")
    decision = decide(State(step_index=0), measured, Policy(min_requests=50))
    assert decision.requests == Requests(control=812, treatment=95, window="1m")
    out = io.StringIO()
    state = RolloutState(model="churn", control_version="v1", treatment_version="v2", percent=25)
    Printer("text", out).decision(state, decision)
    assert "decision: STEP at 25% (requests over 1m: control 812, treatment 95)" in out.getvalue()
    json_out = io.StringIO()
    Printer("json", json_out).decision(state, decision)
    assert json.loads(json_out.getvalue())["requests"] == {
        "control": 812,
        "treatment": 95,
        "window": "1m",
    }
    # A side with no series says so; without Prometheus there are no counts to show.
    missing = decide(State(step_index=0), Measurements(control=control, window="1m"), Policy())
    assert missing.requests == Requests(control=812, treatment=None, window="1m")
    out = io.StringIO()
    Printer("text", out).decision(state, missing)
    assert "(requests over 1m: control 812, treatment none)" in out.getvalue()
    down = decide(State(step_index=0), Measurements(prometheus_up=False), Policy())
    assert down.requests is None
    out = io.StringIO()
    Printer("text", out).decision(state, down)
    assert "requests" not in out.getvalue().splitlines()[0]


def test_the_final_line_says_what_serves_once() -> None:
    state = RolloutState(model="churn", control_version="v1", treatment_version="v2")
    state.phase = "promoted"
    assert outcome(state) == "churn serves v2 to all traffic"
    state.phase = "rolled_back"
    assert outcome(state) == "churn serves v1 to all traffic again; v2 is rejected"
    state.phase, state.percent = "halted", 10
    assert outcome(state) == "churn stays at 10%: a person must look"
