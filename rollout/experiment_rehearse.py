"""``model-rollout experiment rehearse``: an experiment end to end on this machine.

One real model server in experiment mode (control and treatment versions from a registry), a
local Prometheus scraping it every second, and a bounded locust population of users with stable
ids whose conversion rate in the treatment is the control's times (1 + ``--lift``): the planted
truth. The analysis ``experiment status`` prints is read from Prometheus every few seconds, as
people would read it every day, until it decides (ship or rollback) or the outcome budget runs
out (keep-running, saying which bound stopped it). A real lift should ship; no lift should keep
running; a harm should roll back. It knows nothing of Kubernetes, the commands or the canary
rehearsal; what it shares with the latter is in ``rollout.local``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from rollout.experiment import EXIT_FOR, NoExperiment, read_counts, report_for, show
from rollout.local import (
    ROOT,
    Children,
    RehearsalError,
    add_version_arguments,
    prometheus_binary,
    ready_detail,
    resolve_versions,
    start_prometheus,
)
from rollout.output import EXIT_ERROR, EXIT_USAGE, Printer
from rollout.prometheus import Prometheus, PrometheusError
from rollout.settings import RolloutSettings
from serving_common.net import free_port

SERVER_SECONDS = 120.0
"""How long the server may take to load both versions."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("rehearsal")
    add_version_arguments(group, "control version, e.g. v1", "treatment version, e.g. v2")
    group.add_argument("--experiment", default="rehearsal", help="experiment name (rehearsal)")
    group.add_argument(
        "--percent", type=float, default=50.0, help="share of users in the treatment (50)"
    )
    group.add_argument(
        "--base-rate", type=float, default=0.1, help="control's true conversion rate (0.1)"
    )
    group.add_argument(
        "--lift",
        type=float,
        default=0.3,
        help="planted relative lift of the treatment's rate: 0.3 is +30%%, 0 none, -0.3 a "
        "harm (0.3)",
    )
    group.add_argument("--population", type=int, default=20_000, help="distinct user ids (20000)")
    group.add_argument("--users", type=int, default=8, help="concurrent locust users (8)")
    group.add_argument(
        "--max-outcomes",
        type=int,
        default=20_000,
        help="stop with keep-running after this many outcomes (20000)",
    )
    group.add_argument(
        "--max-seconds", type=float, default=180.0, help="stop after this long (180)"
    )
    group.add_argument("--look-seconds", type=float, default=3.0, help="time between looks (3)")
    group.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the work directory with every process's log when the rehearsal ends well "
        "too (it is kept, and each log named, when it fails)",
    )


def rehearse(args: argparse.Namespace, settings: RolloutSettings, printer: Printer) -> int:
    prometheus_bin = prometheus_binary()
    if prometheus_bin is None:
        return EXIT_ERROR
    if not 0 < args.base_rate < 1 or not 0 <= args.base_rate * (1 + args.lift) <= 1:
        print(
            "model-rollout: error: --base-rate and --base-rate x (1 + --lift) must be rates "
            "between 0 and 1",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        versions = resolve_versions(
            args.registry_uri, args.model, {"control": args.control, "treatment": args.treatment}
        )
    except RehearsalError as error:
        print(f"model-rollout: error: {error}", file=sys.stderr)
        return error.code
    if settings.experiment_window == "30d":  # nothing older than this run exists
        settings = settings.model_copy(update={"experiment_window": "1h"})
    with Children("experiment-", keep=args.keep_logs) as children:
        return _run(args, versions, settings, printer, prometheus_bin, children)


def stopped_by(args: argparse.Namespace, outcomes: int, elapsed: float) -> str:
    """Why a rehearsal that still says keep-running stopped looking."""
    if outcomes >= args.max_outcomes:
        bound = f"reached --max-outcomes {args.max_outcomes} ({outcomes} outcomes)"
    else:
        bound = f"reached --max-seconds {args.max_seconds:g} ({outcomes} outcomes)"
    planted = (
        "an A/A experiment (--lift 0) is expected to keep running"
        if args.lift == 0
        else f"the planted lift ({args.lift:+g}) was not detected yet: more outcomes "
        "(--max-outcomes, --max-seconds) or a larger --lift decide sooner"
    )
    return f"{bound} after {elapsed:.0f}s without a decision; {planted}"


def _run(  # noqa: PLR0917 (the rehearsal's parts)
    args: argparse.Namespace,
    versions: dict[str, str],
    settings: RolloutSettings,
    printer: Printer,
    prometheus_bin: str,
    children: Children,
) -> int:
    control, treatment = versions["control"], versions["treatment"]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    children.start(
        "server",
        [
            sys.executable, "-m", "model_server", "--registry-uri", args.registry_uri,
            "--model-name", args.model, "--model-version", control,
            "--experiment", args.experiment, "--experiment-treatment", treatment,
            "--experiment-percent", str(args.percent), "--no-drift",
            "--host", "127.0.0.1", "--http-port", str(port),
        ],
    )  # fmt: skip
    printer.event(
        "server",
        f"loading {args.model} {control} (control) and {treatment} (treatment) from "
        f"{args.registry_uri}",
    )
    ready = f"{url}/v2/models/{args.model}/ready"
    why = children.wait("the server loading", lambda: ready_detail(ready), printer, SERVER_SECONDS)
    if why is not None:
        return children.fail(f"the model server did not start: {why}", "server")
    printer.event(
        "server",
        f"{args.model}: {control} (control) and {treatment} (treatment, "
        f"{args.percent:g}% of users) in experiment {args.experiment} on {url}",
    )
    prometheus_url = start_prometheus(prometheus_bin, [url], children, printer)
    if isinstance(prometheus_url, int):
        return prometheus_url
    printer.event("prometheus", f"scraping every second on {prometheus_url}")
    env = {
        **os.environ,
        "EXPERIMENT_NAME": args.experiment,
        "EXPERIMENT_POPULATION": str(args.population),
        "EXPERIMENT_BASE_RATE": str(args.base_rate),
        "EXPERIMENT_LIFT": str(args.lift),
        "LOADTEST_REGISTRY_URI": args.registry_uri,
        "LOADTEST_MODEL": args.model,
        "LOADTEST_VERSION": control,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    children.start(
        "locust",
        [
            sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "experiment.py"),
            "--headless", "--host", url, "--users", str(args.users),
            "--spawn-rate", str(args.users), "--run-time", f"{int(args.max_seconds) + 10}s",
            "--stop-timeout", "2", "--only-summary",
        ],
        env,
    )  # fmt: skip
    printer.event(
        "load",
        f"locust, {args.users} users over {args.population} ids, true rates "
        f"{args.base_rate:g} (control) and {args.base_rate * (1 + args.lift):.4g} (treatment)",
    )
    started = time.monotonic()
    deadline = started + args.max_seconds
    report: dict[str, Any] | None = None
    waiting_said = started
    outcomes = 0
    with Prometheus(prometheus_url) as prometheus:
        while time.monotonic() < deadline:
            time.sleep(args.look_seconds)
            gone = children.exited()
            if gone is not None:
                code = children.processes[gone].returncode
                return children.fail(f"the {gone} process exited (code {code})", gone)
            try:
                counts = read_counts(
                    prometheus, args.model, args.experiment, window=settings.experiment_window
                )
            except (NoExperiment, PrometheusError) as error:  # not scraped yet
                now = time.monotonic()
                if now - waiting_said >= 10:
                    printer.event("waiting", f"the first outcomes ({now - started:.0f}s): {error}")
                    waiting_said = now
                continue
            report = report_for(counts, settings)
            outcomes = report["control"]["outcomes"] + report["treatment"]["outcomes"]
            printer.event(
                "look",
                f"{outcomes} outcomes: {report['decision']} (always-valid p "
                f"{report['always_valid_p_value']:.3g})",
            )
            if report["decision"] != "keep-running" or outcomes >= args.max_outcomes:
                break
    if report is None:
        return children.fail(
            f"no outcome reached Prometheus in {args.max_seconds:g}s (--max-seconds)", "locust"
        )
    if report["decision"] == "keep-running":
        printer.event("stopped", stopped_by(args, outcomes, time.monotonic() - started))
    show(report, printer)
    return EXIT_FOR[report["decision"]]
