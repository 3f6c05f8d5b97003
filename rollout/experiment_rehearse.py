"""``model-rollout experiment rehearse``: an experiment end to end on this machine.

One real model server in experiment mode (control and treatment versions from a registry), a
local Prometheus scraping it every second, and a bounded locust population of users with stable
ids whose conversion rate in the treatment is the control's times (1 + ``--lift``): the planted
truth. The analysis ``experiment status`` prints is read from Prometheus every few seconds, as
people would read it every day, until it decides (ship or rollback) or the outcome budget runs
out (keep-running). A real lift should ship; no lift should keep running; a harm should roll back.
It knows nothing of Kubernetes, the commands or the canary rehearsal; what it shares with the
latter is in ``rollout.local``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rollout.experiment import EXIT_FOR, NoExperiment, read_counts, report_for, show
from rollout.local import ROOT, prometheus_binary, start_prometheus, stop_all
from rollout.output import EXIT_ERROR, EXIT_USAGE, Printer
from rollout.prometheus import Prometheus
from rollout.settings import RolloutSettings
from serving_common.net import free_port, wait_ready


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("rehearsal")
    group.add_argument("--registry-uri", default="./registry", help="registry (./registry)")
    group.add_argument("--model", default="breast-cancer", help="model name (breast-cancer)")
    group.add_argument("--control", required=True, help="control version, e.g. v1")
    group.add_argument("--treatment", required=True, help="treatment version, e.g. v2")
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
    if settings.experiment_window == "30d":  # nothing older than this run exists
        settings = settings.model_copy(update={"experiment_window": "1h"})
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="experiment-") as tmp:
        try:
            return _run(args, settings, printer, prometheus_bin, Path(tmp), processes)
        finally:
            stop_all(processes)


def _run(  # noqa: PLR0917 (the rehearsal's parts)
    args: argparse.Namespace,
    settings: RolloutSettings,
    printer: Printer,
    prometheus_bin: str,
    work: Path,
    processes: list[subprocess.Popen[bytes]],
) -> int:
    def start(command: list[str], log: str, env: dict[str, str] | None = None) -> Any:
        with (work / log).open("wb") as handle:
            process = subprocess.Popen(  # noqa: S603 (our own commands)
                command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT
            )
        processes.append(process)
        return process

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start(
        [
            sys.executable, "-m", "model_server", "--registry-uri", args.registry_uri,
            "--model-name", args.model, "--model-version", args.control,
            "--experiment", args.experiment, "--experiment-treatment", args.treatment,
            "--experiment-percent", str(args.percent), "--no-drift",
            "--host", "127.0.0.1", "--http-port", str(port),
        ],
        "server.log",
    )  # fmt: skip
    if not wait_ready(f"{url}/v2/models/{args.model}/ready", server, 120):
        log = (work / "server.log").read_text(errors="replace")[-2000:]
        print(f"model-rollout: error: the model server did not start:\n{log}", file=sys.stderr)
        return EXIT_ERROR
    printer.event(
        "server",
        f"{args.model}: {args.control} (control) and {args.treatment} (treatment, "
        f"{args.percent:g}% of users) in experiment {args.experiment} on {url}",
    )
    prometheus_url = start_prometheus(prometheus_bin, [url], work, start)
    if prometheus_url is None:
        return EXIT_ERROR
    printer.event("prometheus", f"scraping every second on {prometheus_url}")
    env = {
        **os.environ,
        "EXPERIMENT_NAME": args.experiment,
        "EXPERIMENT_POPULATION": str(args.population),
        "EXPERIMENT_BASE_RATE": str(args.base_rate),
        "EXPERIMENT_LIFT": str(args.lift),
        "LOADTEST_REGISTRY_URI": args.registry_uri,
        "LOADTEST_MODEL": args.model,
        "LOADTEST_VERSION": args.control,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    start(
        [
            sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "experiment.py"),
            "--headless", "--host", url, "--users", str(args.users),
            "--spawn-rate", str(args.users), "--run-time", f"{int(args.max_seconds) + 10}s",
            "--stop-timeout", "2", "--only-summary",
        ],
        "locust.log",
        env,
    )  # fmt: skip
    printer.event(
        "load",
        f"locust, {args.users} users over {args.population} ids, true rates "
        f"{args.base_rate:g} (control) and {args.base_rate * (1 + args.lift):.4g} (treatment)",
    )
    deadline = time.monotonic() + args.max_seconds
    report: dict[str, Any] | None = None
    with Prometheus(prometheus_url) as prometheus:
        while time.monotonic() < deadline:
            time.sleep(args.look_seconds)
            try:
                counts = read_counts(
                    prometheus, args.model, args.experiment, window=settings.experiment_window
                )
            except NoExperiment:
                continue  # not scraped yet
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
        print("model-rollout: error: no outcome reached Prometheus", file=sys.stderr)
        return EXIT_ERROR
    show(report, printer)
    return EXIT_FOR[report["decision"]]
