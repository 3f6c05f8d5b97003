"""``model-rollout rehearse``: the same analysis loop, on this machine, before a cluster.

Two registry versions run as local model servers (control and treatment; the treatment may be
given faults), a local Prometheus scrapes both every second, and a bounded locust load splits
its requests between them by the canary's current percent. The loop steps that percent and
decides exactly as it would on Kubernetes. A rehearsal is run for an expected outcome
(``--expect``: by default a rollback when the treatment is given faults, else a promotion) and
exits 0 when that outcome comes. ``make demo`` runs it. It knows nothing of Kubernetes, the
commands or the experiment rehearsal; what it shares with the latter is in ``rollout.local``.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

from rollout.controller import RolloutState, run_loop
from rollout.local import (
    ROOT,
    ChildExited,
    Children,
    RehearsalError,
    add_version_arguments,
    prometheus_binary,
    ready_detail,
    resolve_versions,
    start_prometheus,
)
from rollout.output import EXIT_ERROR, EXIT_HALTED, EXIT_PROMOTED, EXIT_ROLLED_BACK, Printer
from rollout.prometheus import Prometheus, PrometheusError
from rollout.settings import RolloutSettings
from serving_common.net import free_port

# Rehearsal defaults where the user gave none: seconds, not the minutes a cluster wants.
QUICK: dict[str, Any] = {"interval_seconds": 10.0, "analysis_window": "1m", "min_requests": 50}
QUICK_HELP = textwrap.fill(
    "Unless set, a rehearsal uses "
    + ", ".join(
        f"--{k.replace('_', '-')} {v:g}" if isinstance(v, float) else f"--{k.replace('_', '-')} {v}"
        for k, v in QUICK.items()
    )
    + " (a cluster's defaults are minutes).",
    88,
)
SERVERS_SECONDS = 120.0
"""How long the servers may take to load their versions."""
FIRST_LOAD_SECONDS = 60.0
"""How long until Prometheus must have scraped a request of each side."""
OUTCOMES = {EXIT_PROMOTED: "promote", EXIT_ROLLED_BACK: "rollback", EXIT_HALTED: "halt"}
DONE = {"promote": "promoted", "rollback": "rolled back", "halt": "halted"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("rehearsal")
    add_version_arguments(group, "version in production, e.g. v1", "version to canary, e.g. v2")
    group.add_argument(
        "--treatment-fault-error-ratio", type=float, default=0.0, help="inject 500s (0..1)"
    )
    group.add_argument(
        "--treatment-fault-latency-ms", type=float, default=0.0, help="inject latency"
    )
    group.add_argument(
        "--expect",
        choices=["promote", "rollback"],
        help="the outcome this rehearsal shows: exit 0 when it comes (default: rollback when "
        "a treatment fault is given, else promote)",
    )
    group.add_argument("--users", type=int, default=6, help="locust users (6)")
    group.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the work directory with every process's log when the rehearsal ends well "
        "too (it is kept, and each log named, when it fails)",
    )


def faults_given(args: argparse.Namespace) -> str:
    """What the treatment was given, in words: ``the treatment was given 30% errors``."""
    parts = []
    if args.treatment_fault_error_ratio > 0:
        parts.append(f"{args.treatment_fault_error_ratio * 100:g}% errors")
    if args.treatment_fault_latency_ms > 0:
        parts.append(f"{args.treatment_fault_latency_ms:g} ms of added latency")
    return "the treatment was given " + (" and ".join(parts) or "no faults")


def expected(args: argparse.Namespace) -> str:
    """``--expect``, or what the faults call for: any fault should be rolled back."""
    if args.expect:
        return str(args.expect)
    faulty = args.treatment_fault_error_ratio > 0 or args.treatment_fault_latency_ms > 0
    return "rollback" if faulty else "promote"


def judge(code: int, expect: str, given: str, printer: Printer) -> int:
    """The rehearsal's exit code: 0 when the loop's outcome is the one expected; else the
    outcome's own code, and 1 (error) for a promotion where a rollback was expected."""
    outcome = OUTCOMES.get(code)
    if outcome is None:  # an error, said already
        return code
    if outcome == expect:
        printer.event(
            "outcome", f"{DONE[outcome]}, as intended: {given}", expected=expect, outcome=outcome
        )
        return EXIT_PROMOTED
    printer.event(
        "outcome",
        f"{DONE[outcome]}, but a {expect} was expected: {given}",
        expected=expect,
        outcome=outcome,
    )
    return EXIT_ERROR if code == EXIT_PROMOTED else code


class LocalTarget:
    """The rehearsal's traffic split: a percentage in a file the locust users read."""

    def __init__(self, split_file: Path) -> None:
        self.split_file = split_file
        self.state: dict[str, Any] | None = None
        self.set_percent(0)

    def set_percent(self, percent: int | None) -> None:
        self.split_file.write_text(str(100 if percent is None else percent))

    def treatment_ready(self) -> bool:
        return True

    def record(self, reason: str, message: str, warning: bool = False) -> None:
        del reason, message, warning  # the printer already shows every decision

    def save_state(self, state: dict[str, Any]) -> None:
        self.state = state

    def load_state(self) -> dict[str, Any] | None:
        return self.state


def rehearse(args: argparse.Namespace, settings: RolloutSettings, printer: Printer) -> int:
    prometheus_bin = prometheus_binary()
    if prometheus_bin is None:
        return EXIT_ERROR
    try:
        versions = resolve_versions(
            args.registry_uri, args.model, {"control": args.control, "treatment": args.treatment}
        )
    except RehearsalError as error:
        print(f"model-rollout: error: {error}", file=sys.stderr)
        return error.code
    quick = {k: v for k, v in QUICK.items() if k not in settings.model_fields_set}
    settings = settings.model_copy(update=quick)
    with Children("rehearse-", keep=args.keep_logs) as children:
        code = _run(
            args=args,
            versions=versions,
            settings=settings,
            printer=printer,
            prometheus_bin=prometheus_bin,
            children=children,
        )
        if code == EXIT_HALTED:  # no data or no Prometheus: something here went wrong
            children.keep(children.exited())
        return judge(code, expected(args), faults_given(args), printer)


def _run(
    *,
    args: argparse.Namespace,
    versions: dict[str, str],
    settings: RolloutSettings,
    printer: Printer,
    prometheus_bin: str,
    children: Children,
) -> int:
    work = children.work
    servers: dict[str, str] = {}
    for side, version in versions.items():
        port = free_port()
        command = [
            sys.executable, "-m", "model_server", "--registry-uri", args.registry_uri,
            "--model-name", args.model, "--model-version", version,
            "--host", "127.0.0.1", "--http-port", str(port),
        ]  # fmt: skip
        if side == "treatment":
            command += ["--fault-error-ratio", str(args.treatment_fault_error_ratio)]
            command += ["--fault-latency-ms", str(args.treatment_fault_latency_ms)]
        children.start(side, command)
        servers[side] = f"http://127.0.0.1:{port}"

    def loading() -> str | None:
        pending = {s: ready_detail(f"{u}/v2/models/{args.model}/ready") for s, u in servers.items()}
        return "; ".join(f"{s}: {d}" for s, d in pending.items() if d is not None) or None

    printer.event(
        "servers",
        f"loading {args.model} {versions['control']} (control) and {versions['treatment']} "
        f"(treatment) from {args.registry_uri}",
    )
    why = children.wait("servers loading", loading, printer, SERVERS_SECONDS)
    if why is not None:
        late = next(
            (s for s, u in servers.items() if ready_detail(f"{u}/v2/models/{args.model}/ready")),
            None,
        )
        return children.fail(f"the servers did not start: {why}", children.exited() or late)
    for side, url in servers.items():
        printer.event("server", f"{side} {args.model} {versions[side]} on {url}")

    prometheus = start_prometheus(prometheus_bin, list(servers.values()), children, printer)
    if isinstance(prometheus, int):
        return prometheus
    printer.event("prometheus", f"scraping both every second on {prometheus}")

    target = LocalTarget(work / "split")
    bound = settings.interval_seconds * (settings.max_rounds + 1) + 60
    duration = min(
        bound, settings.interval_seconds * (len(settings.steps) + settings.threshold + 4) + 60
    )
    env = {
        **os.environ,
        "CONTROL_URL": servers["control"],
        "TREATMENT_URL": servers["treatment"],
        "SPLIT_FILE": str(work / "split"),
        "LOADTEST_REGISTRY_URI": args.registry_uri,
        "LOADTEST_MODEL": args.model,
        "LOADTEST_VERSION": versions["control"],
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    children.start(
        "locust",
        [
            sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "split.py"),
            "--headless", "--host", servers["control"], "--users", str(args.users),
            "--spawn-rate", str(args.users), "--run-time", f"{int(duration)}s",
            "--stop-timeout", "5", "--only-summary",
        ],
        env,
    )  # fmt: skip
    printer.event("load", f"locust, {args.users} users, at most {int(duration)}s")

    state = RolloutState(
        model=args.model,
        control_version=versions["control"],
        treatment_version=versions["treatment"],
        percent=settings.steps[0],
    )
    target.set_percent(state.percent)
    printer.event(
        "start",
        f"{state.treatment_version} at {state.percent}% against {state.control_version}; "
        f"expecting a {expected(args)} ({faults_given(args)})",
    )
    with Prometheus(prometheus) as evidence:
        # Count from the first scraped request of each side: a side nobody has called yet has
        # no series, which the analysis rightly reads as "no data".
        seen = 'count(model_server_requests_total{model_name="%s", model_version="%s"})'

        def unseen() -> str | None:
            try:
                missing = [
                    side
                    for side, version in versions.items()
                    if not evidence.query(seen % (args.model, version))
                ]
            except PrometheusError as error:
                return str(error)
            return f"no request to the {' or '.join(missing)} scraped yet" if missing else None

        why = children.wait("the first requests", unseen, printer, FIRST_LOAD_SECONDS)
        if why is not None:
            return children.fail(
                f"no load reached the servers: {why}", children.exited() or "locust"
            )
        try:
            return run_loop(target, evidence, settings, state, printer, sleep=children.sleep)
        except ChildExited as gone:
            why = f" (locust runs {int(duration)}s at most)" if gone.name == "locust" else ""
            return children.fail(f"{gone} before a verdict{why}", gone.name)
