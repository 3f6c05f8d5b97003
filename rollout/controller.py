"""The analysis loop: wait, measure, decide, act, record; until promoted, rolled back or halted.

The loop drives a :class:`Target` (an InferenceService through the Kubernetes API, or the local
rehearsal's traffic split) and reads evidence from Prometheus. Every round is printed, recorded
(an Event and the NAME-rollout ConfigMap on Kubernetes), and the state is saved so that a restarted
``start`` resumes at the step it was at. It knows nothing of argparse, the commands or the
Kubernetes API: it acts only through the ``Target`` it is given.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from rollout.decision import Action, Decision, State, decide
from rollout.output import EXIT_HALTED, EXIT_PAUSED, EXIT_PROMOTED, EXIT_ROLLED_BACK, Printer
from rollout.prometheus import CustomQuery, Prometheus, measure
from rollout.settings import RolloutSettings

TERMINAL = {
    Action.PROMOTE: ("promoted", EXIT_PROMOTED),
    Action.ROLLBACK: ("rolled_back", EXIT_ROLLED_BACK),
    Action.HALT: ("halted", EXIT_HALTED),
}


class Target(Protocol):
    """Where the canary split lives."""

    def set_percent(self, percent: int | None) -> None:
        """Send ``percent`` to the treatment (None: all of it, 0: none)."""

    def treatment_ready(self) -> bool:
        """The treatment's revision is ready to take traffic."""

    def record(self, reason: str, message: str, warning: bool = False) -> None:
        """Leave an audit record of a step or verdict."""

    def save_state(self, state: dict[str, Any]) -> None:
        """Persist the rollout state (to resume, and for ``status``)."""

    def load_state(self) -> dict[str, Any] | None:
        """The persisted state, if any."""


@dataclass
class RolloutState:
    """What a rollout persists between rounds (the annotation's JSON)."""

    model: str
    control_version: str
    treatment_version: str
    phase: str = "progressing"
    step_index: int = 0
    failed_rounds: int = 0
    rounds: int = 0
    percent: int | None = None
    control_revision: str | None = None
    treatment_uri: str | None = None
    control_uri: str | None = None
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    last_action: str | None = None
    last_reasons: list[str] = field(default_factory=list)
    updated_at: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutState:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def served(self) -> tuple[str, str | None]:
        """(version, storage URI) this rollout left serving: the treatment once promoted, else
        the control (rolled back or halted, the rolled-out revision keeps the rest)."""
        if self.phase == "promoted":
            return self.treatment_version, self.treatment_uri
        return self.control_version, self.control_uri

    @classmethod
    def serving(
        cls, model: str, version: str, uri: str | None, control: tuple[str, str | None], action: str
    ) -> RolloutState:
        """The record of a command other than the loop that made ``version`` (at ``uri``) the
        served one (``promote``, ``experiment stop --ship``): a promoted rollout against
        ``control``, the (version, storage URI) served before."""
        return cls(
            model=model,
            control_version=control[0],
            treatment_version=version,
            phase="promoted",
            control_uri=control[1],
            treatment_uri=uri,
            last_action=action,
            updated_at=datetime.now(UTC).isoformat(),
        )


def parse_custom(items: list[str]) -> tuple[CustomQuery, ...]:
    """``NAME=PROMQL<=MAX`` / ``NAME=PROMQL>=MIN`` into checks; ValueError names a bad one."""
    checks = []
    for item in items:
        name, sep, rest = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--custom-query {item!r}: expected NAME=PROMQL<=MAX or >=MIN")
        if "<=" in rest:
            query, bound = rest.rsplit("<=", 1)
            checks.append(CustomQuery(name, query.strip(), max_value=float(bound)))
        elif ">=" in rest:
            query, bound = rest.rsplit(">=", 1)
            checks.append(CustomQuery(name, query.strip(), min_value=float(bound)))
        else:
            raise ValueError(f"--custom-query {item!r}: give a bound, <=MAX or >=MIN")
    return tuple(checks)


def analyze_once(
    state: RolloutState,
    prometheus: Prometheus,
    settings: RolloutSettings,
    *,
    treatment_ready: bool = True,
    waited_for_ready_seconds: float = 0.0,
    namespace: str | None = None,
) -> Decision:
    """One analysis round: measure both sides, decide. Changes nothing."""
    measured = measure(
        prometheus,
        model=state.model,
        control=state.control_version,
        treatment=state.treatment_version,
        window=settings.analysis_window,
        namespace=namespace,
        custom=parse_custom(settings.custom_query),
        treatment_ready=treatment_ready,
        waited_for_ready_seconds=waited_for_ready_seconds,
    )
    return decide(State(state.step_index, state.failed_rounds), measured, settings.policy())


def apply(target: Target, state: RolloutState, decision: Decision, printer: Printer) -> int | None:
    """Act on ``decision``, record it and save the state; the exit code once it is final."""
    if decision.action is Action.STEP:
        target.set_percent(decision.percent)
        state.percent = decision.percent
    elif decision.action is Action.PROMOTE:
        target.set_percent(None)
        state.percent = None
    elif decision.action is Action.ROLLBACK:
        target.set_percent(0)
        state.percent = 0
    state.step_index = decision.state.step_index
    state.failed_rounds = decision.state.failed_rounds
    state.rounds += 1
    state.last_action = decision.action.value
    state.last_reasons = list(decision.reasons)
    state.updated_at = datetime.now(UTC).isoformat()
    phase_code = TERMINAL.get(decision.action)
    if phase_code is not None:
        state.phase = phase_code[0]
    target.save_state(state.to_dict())
    reason = {
        Action.STEP: "CanaryStep",
        Action.PROMOTE: "CanaryPromoted",
        Action.ROLLBACK: "CanaryRolledBack",
        Action.HOLD: "CanaryHold",
        Action.HALT: "CanaryHalted",
    }[decision.action]
    message = f"{state.treatment_version} vs {state.control_version}: " + "; ".join(
        decision.reasons
    )
    target.record(reason, message, warning=decision.action in {Action.ROLLBACK, Action.HALT})
    printer.decision(state, decision)
    return phase_code[1] if phase_code else None


def outcome(state: RolloutState) -> str:
    """What a final verdict leaves serving, said once (the event's kind names the verdict)."""
    if state.phase == "promoted":
        return f"{state.model} serves {state.treatment_version} to all traffic"
    if state.phase == "rolled_back":
        return (
            f"{state.model} serves {state.control_version} to all traffic again; "
            f"{state.treatment_version} is rejected"
        )
    return f"{state.model} stays at {state.percent}%: a person must look"


def run_loop(
    target: Target,
    prometheus: Prometheus,
    settings: RolloutSettings,
    state: RolloutState,
    printer: Printer,
    *,
    namespace: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Analyse every ``interval_seconds`` until a final verdict; returns the exit code."""
    waiting_since = clock()
    while state.rounds < settings.max_rounds:
        printer.event(
            "wait",
            f"{settings.interval_seconds:g}s at {state.percent}% before the next analysis",
        )
        sleep(settings.interval_seconds)
        persisted = target.load_state()
        if persisted is not None and persisted.get("phase") == "paused":
            printer.event("paused", "the rollout is paused; `model-rollout resume` continues it")
            return EXIT_PAUSED
        ready = target.treatment_ready()
        if ready:
            waiting_since = clock()
        decision = analyze_once(
            state,
            prometheus,
            settings,
            treatment_ready=ready,
            waited_for_ready_seconds=0.0 if ready else clock() - waiting_since,
            namespace=namespace,
        )
        code = apply(target, state, decision, printer)
        if code is not None:
            printer.event(state.phase, outcome(state))
            return code
    state.phase = "halted"
    state.last_reasons = [f"no verdict after {settings.max_rounds} rounds"]
    target.save_state(state.to_dict())
    target.record("CanaryHalted", state.last_reasons[0], warning=True)
    printer.event("halted", state.last_reasons[0])
    return EXIT_HALTED
