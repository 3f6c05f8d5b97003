"""The canary decision: a pure function from (state, measurements, policy) to (action, reasons).

It knows nothing of Kubernetes or Prometheus: the adapters measure and act, this decides, so its
rules are tested as a table. Flagger's analysis is the model, fitted to KServe's
``canaryTrafficPercent``:

- Prometheus unreachable halts (it never promotes on missing evidence); so does "no data".
- A treatment revision that is not ready waits, and is rolled back after ``ready_deadline``.
- Too little traffic on either side holds at the current step (keep running, count nothing).
- Otherwise every check runs; a round with a failed check counts, and ``threshold`` failed rounds
  roll back. A clean round moves to the next step, and after the last step promotes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum
from statistics import NormalDist


class Action(StrEnum):
    """What the rollout does next."""

    STEP = "step"
    """Set canaryTrafficPercent to the next step."""
    PROMOTE = "promote"
    """Remove canaryTrafficPercent: the treatment takes all traffic."""
    HOLD = "hold"
    """Stay at this step and analyse again after the interval."""
    ROLLBACK = "rollback"
    """canaryTrafficPercent 0: all traffic back to the control revision."""
    HALT = "halt"
    """Stop without changing the split: a person must look (no data, Prometheus down)."""


@dataclass(frozen=True)
class Policy:
    """How a canary is stepped and judged (ROLLOUT_* settings feed it)."""

    steps: tuple[int, ...] = (10, 25, 50, 100)
    min_requests: int = 100
    """Fewest requests per side in the analysis window before a verdict."""
    threshold: int = 2
    """Failed rounds before rolling back."""
    max_error_ratio: float = 0.01
    """Treatment's 5xx share may not exceed this..."""
    max_error_ratio_increase: float = 0.005
    """...nor control's share by more than this."""
    max_p95_seconds: float = 0.2
    max_p99_seconds: float = 0.5
    max_latency_ratio: float = 1.5
    """Treatment's p95 may not exceed control's times this (plus ``latency_slack_seconds``)."""
    latency_slack_seconds: float = 0.01
    accuracy_confidence: float = 0.95
    """Confidence of the two-proportion z-test on live accuracy (feedback)."""
    min_feedback: int = 50
    """Fewest feedback outcomes per side before accuracy is judged."""
    ready_deadline_seconds: float = 600.0

    def __post_init__(self) -> None:
        if not self.steps or any(not 0 < s <= 100 for s in self.steps):
            raise ValueError(f"steps must be percentages in 1..100, got {self.steps}")
        if list(self.steps) != sorted(set(self.steps)):
            raise ValueError(f"steps must increase, got {self.steps}")
        if self.threshold < 1:
            raise ValueError("threshold must be at least 1")


@dataclass(frozen=True)
class Side:
    """What Prometheus says of one side (control or treatment) over the analysis window."""

    requests: float
    errors: float
    p95_seconds: float | None
    p99_seconds: float | None
    correct: float = 0.0
    incorrect: float = 0.0

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Custom:
    """A user's own PromQL check, already evaluated: its value and whether it passed."""

    name: str
    value: float | None
    passed: bool


@dataclass(frozen=True)
class Measurements:
    prometheus_up: bool = True
    treatment_ready: bool = True
    waited_for_ready_seconds: float = 0.0
    control: Side | None = None
    treatment: Side | None = None
    custom: tuple[Custom, ...] = ()
    window: str | None = None
    """The analysis window the sides were measured over (a PromQL duration)."""


@dataclass(frozen=True)
class Requests:
    """How many requests each side answered over the analysis window (None: no series)."""

    control: float | None
    treatment: float | None
    window: str | None = None


@dataclass(frozen=True)
class State:
    """Where a rollout is: the step it is at (-1 before the first) and failed rounds so far."""

    step_index: int = -1
    failed_rounds: int = 0


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Decision:
    action: Action
    state: State
    percent: int | None
    """canaryTrafficPercent to set (None: remove the field; unchanged for hold and halt)."""
    reasons: tuple[str, ...]
    checks: tuple[Check, ...] = field(default=())
    requests: Requests | None = None
    """The traffic the decision saw, when Prometheus answered."""


def milliseconds(seconds: float) -> str:
    """A latency in milliseconds with the digits that matter: ``0.42 ms``, ``4.2 ms``,
    ``42 ms``, ``420 ms`` (a sub-millisecond latency is not ``0 ms``)."""
    ms = seconds * 1000
    return f"{ms:.0f} ms" if ms == 0 or abs(ms) >= 10 else f"{ms:.2g} ms"


def z_test(treatment: Side, control: Side, confidence: float) -> tuple[str, float]:
    """Two-proportion z-test of live accuracy: ("ship" | "rollback" | "keep running", z)."""
    n1, n2 = treatment.correct + treatment.incorrect, control.correct + control.incorrect
    p1, p2 = treatment.correct / n1, control.correct / n2
    pooled = (treatment.correct + control.correct) / (n1 + n2)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if spread == 0:
        return ("ship", 0.0) if p1 >= p2 else ("rollback", -math.inf)
    z = (p1 - p2) / spread
    critical = NormalDist().inv_cdf(confidence)
    if z <= -critical:
        return "rollback", z
    if z >= -critical / 2:
        return "ship", z
    return "keep running", z


def _checks(t: Side, c: Side, policy: Policy) -> tuple[list[Check], bool]:
    """The checks of one round, and whether accuracy asks to keep running."""
    checks = [
        Check(
            "error ratio",
            t.error_ratio <= policy.max_error_ratio,
            f"treatment {t.error_ratio:.2%} (limit {policy.max_error_ratio:.2%})",
        ),
        Check(
            "error ratio vs control",
            t.error_ratio <= c.error_ratio + policy.max_error_ratio_increase,
            f"treatment {t.error_ratio:.2%} vs control {c.error_ratio:.2%} "
            f"(+{policy.max_error_ratio_increase:.2%} allowed)",
        ),
    ]
    for name, value, limit in (
        ("p95 latency", t.p95_seconds, policy.max_p95_seconds),
        ("p99 latency", t.p99_seconds, policy.max_p99_seconds),
    ):
        if value is not None:
            checks.append(
                Check(name, value <= limit, f"{milliseconds(value)} (limit {milliseconds(limit)})")
            )
    if t.p95_seconds is not None and c.p95_seconds is not None:
        bound = c.p95_seconds * policy.max_latency_ratio + policy.latency_slack_seconds
        checks.append(
            Check(
                "p95 latency vs control",
                t.p95_seconds <= bound,
                f"treatment {milliseconds(t.p95_seconds)} vs control "
                f"{milliseconds(c.p95_seconds)} (limit {milliseconds(bound)})",
            )
        )
    keep_running = False
    feedback = min(t.correct + t.incorrect, c.correct + c.incorrect)
    if feedback >= policy.min_feedback:
        verdict, z = z_test(t, c, policy.accuracy_confidence)
        keep_running = verdict == "keep running"
        checks.append(Check("live accuracy", verdict != "rollback", f"z={z:.2f}: {verdict}"))
    return checks, keep_running


def decide(state: State, measured: Measurements, policy: Policy) -> Decision:
    """The next action of a canary at ``state`` given this round's ``measured`` evidence,
    with the requests each side answered in the window (when Prometheus answered)."""
    decision = _decide(state, measured, policy)
    if not measured.prometheus_up:
        return decision
    t, c = measured.treatment, measured.control
    return replace(
        decision,
        requests=Requests(
            control=c.requests if c else None,
            treatment=t.requests if t else None,
            window=measured.window,
        ),
    )


def _decide(state: State, measured: Measurements, policy: Policy) -> Decision:
    if not measured.prometheus_up:
        return Decision(Action.HALT, state, None, ("Prometheus is unreachable: no evidence",))
    if not measured.treatment_ready:
        if measured.waited_for_ready_seconds >= policy.ready_deadline_seconds:
            return Decision(
                Action.ROLLBACK,
                state,
                0,
                (f"treatment revision not ready within {policy.ready_deadline_seconds:.0f}s",),
            )
        return Decision(
            Action.HOLD, state, None, ("waiting for the treatment revision to be ready",)
        )
    if state.step_index < 0:
        return Decision(
            Action.STEP, replace(state, step_index=0), policy.steps[0], ("starting the canary",)
        )
    t, c = measured.treatment, measured.control
    if t is None or c is None:
        missing = "treatment" if t is None else "control"
        return Decision(Action.HALT, state, None, (f"no data for the {missing}",))
    if min(t.requests, c.requests) < policy.min_requests:
        return Decision(
            Action.HOLD,
            state,
            None,
            (
                f"too little traffic: treatment {t.requests:.0f}, control {c.requests:.0f} "
                f"requests (need {policy.min_requests} each)",
            ),
        )
    checks, keep_running = _checks(t, c, policy)
    checks += [Check(f"custom {x.name}", x.passed, f"value {x.value}") for x in measured.custom]
    failed = [x for x in checks if not x.passed]
    if failed:
        rounds = state.failed_rounds + 1
        new_state = replace(state, failed_rounds=rounds)
        reasons = tuple(f"{x.name} failed: {x.detail}" for x in failed)
        if rounds >= policy.threshold:
            return Decision(
                Action.ROLLBACK,
                new_state,
                0,
                (*reasons, f"{rounds} failed rounds (threshold {policy.threshold})"),
                tuple(checks),
            )
        return Decision(
            Action.HOLD,
            new_state,
            None,
            (*reasons, f"{rounds} of {policy.threshold} failed rounds"),
            tuple(checks),
        )
    if keep_running:
        return Decision(
            Action.HOLD, state, None, ("live accuracy is not conclusive yet",), tuple(checks)
        )
    nxt = state.step_index + 1
    if nxt >= len(policy.steps) or policy.steps[nxt] >= 100:
        # 100% leaves control no traffic to compare with: the last step's pass promotes.
        return Decision(
            Action.PROMOTE,
            replace(state, step_index=len(policy.steps) - 1),
            None,
            (f"step {policy.steps[state.step_index]}% passed; every step passed",),
            tuple(checks),
        )
    return Decision(
        Action.STEP,
        replace(state, step_index=nxt),
        policy.steps[nxt],
        (f"step {policy.steps[state.step_index]}% passed",),
        tuple(checks),
    )
