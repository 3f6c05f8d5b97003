"""What model-rollout tells its caller: the exit codes, and progress lines (``Printer``).

Every command prints through ``Printer``, for people (text) or scripts (one JSON object per
line), and ends with one of these exit codes. It knows nothing of the analysis loop, Kubernetes,
Prometheus or argparse: a decision is printed with the step it was made at, whatever holds it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from rollout.decision import Decision

EXIT_PROMOTED, EXIT_ERROR, EXIT_USAGE, EXIT_ROLLED_BACK, EXIT_HALTED, EXIT_PAUSED = 0, 1, 2, 3, 4, 5
EXIT_CODES_HELP = """\
exit codes:
  0 promoted (or done), 1 error, 2 usage, 3 rolled back, 4 halted (no data, Prometheus down,
  too many rounds), 5 paused"""
REHEARSE_EXIT_CODES_HELP = """\
exit codes:
  0 the outcome expected (--expect; by default rollback when a treatment fault is given, else
    promote), 1 error, or promoted when a rollback was expected, 2 usage, 3 rolled back when a
    promotion was expected, 4 halted (no data, Prometheus down, too many rounds)"""


class Step(Protocol):
    """What :meth:`Printer.decision` reads of a rollout: the step a decision was made at."""

    @property
    def percent(self) -> int | None:
        """The treatment's share of the traffic (None: all of it)."""


class Printer:
    """Progress lines for people (text) or scripts (one JSON object per line)."""

    def __init__(self, output: str, stream: TextIO | None = None) -> None:
        self.output = output
        self.stream = stream or sys.stdout

    def event(self, kind: str, message: str, **fields: Any) -> None:
        if self.output == "json":
            line = json.dumps({"event": kind, "message": message, **fields}, default=str)
        else:
            line = f"[{datetime.now(UTC).strftime('%H:%M:%S')}] {kind}: {message}"
        print(line, file=self.stream, flush=True)

    def decision(self, state: Step, decision: Decision) -> None:
        checks = [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in decision.checks]
        requests = decision.requests
        if self.output == "json":
            self.event(
                "decision",
                decision.action.value,
                step_percent=state.percent,
                reasons=list(decision.reasons),
                checks=checks,
                failed_rounds=decision.state.failed_rounds,
                requests=None if requests is None else asdict(requests),
            )
            return
        where = f"at {state.percent}%" if state.percent is not None else ""
        line = f"{decision.action.value.upper()} {where}".strip()
        if requests is not None:
            over = f" over {requests.window}" if requests.window else ""
            line += (
                f" (requests{over}: control {_count(requests.control)}, "
                f"treatment {_count(requests.treatment)})"
            )
        self.event("decision", line)
        for check in decision.checks:
            mark = "ok  " if check.passed else "FAIL"
            print(f"    {mark} {check.name}: {check.detail}", file=self.stream)
        for reason in decision.reasons:
            print(f"    - {reason}", file=self.stream)
        self.stream.flush()


def _count(requests: float | None) -> str:
    return "none" if requests is None else f"{requests:.0f}"
