"""``model-rollout rehearse``: the same analysis loop, on this machine, before a cluster.

Two registry versions run as local model servers (control and treatment; the treatment may be
given faults), a local Prometheus scrapes both every second, and a bounded locust load splits
its requests between them by the canary's current percent. The loop steps that percent and
decides exactly as it would on Kubernetes. ``make demo`` runs it. It knows nothing of
Kubernetes, the commands or the experiment rehearsal; what it shares with the latter is in
``rollout.local``.
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

from rollout.controller import RolloutState, run_loop
from rollout.local import ROOT, prometheus_binary, start_prometheus, stop_all
from rollout.output import EXIT_ERROR, Printer
from rollout.prometheus import Prometheus
from rollout.settings import RolloutSettings
from serving_common.net import free_port, wait_ready

# Rehearsal defaults where the user gave none: seconds, not the minutes a cluster wants.
QUICK = {"interval_seconds": 10.0, "analysis_window": "1m", "min_requests": 50}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("rehearsal")
    group.add_argument("--registry-uri", default="./registry", help="registry (./registry)")
    group.add_argument("--model", default="breast-cancer", help="model name (breast-cancer)")
    group.add_argument("--control", required=True, help="version in production, e.g. v1")
    group.add_argument("--treatment", required=True, help="version to canary, e.g. v2")
    group.add_argument(
        "--treatment-fault-error-ratio", type=float, default=0.0, help="inject 500s (0..1)"
    )
    group.add_argument(
        "--treatment-fault-latency-ms", type=float, default=0.0, help="inject latency"
    )
    group.add_argument("--users", type=int, default=6, help="locust users (6)")


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
    quick = {k: v for k, v in QUICK.items() if k not in settings.model_fields_set}
    settings = settings.model_copy(update=quick)
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="rehearse-") as tmp:
        work = Path(tmp)
        try:
            return _run(
                args=args,
                settings=settings,
                printer=printer,
                prometheus_bin=prometheus_bin,
                work=work,
                processes=processes,
            )
        finally:
            stop_all(processes)


def _run(
    *,
    args: argparse.Namespace,
    settings: RolloutSettings,
    printer: Printer,
    prometheus_bin: str,
    work: Path,
    processes: list[subprocess.Popen[bytes]],
) -> int:
    def start(command: list[str], log: str) -> subprocess.Popen[bytes]:
        with (work / log).open("wb") as handle:
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        processes.append(process)
        return process

    servers: dict[str, str] = {}
    for side, version in (("control", args.control), ("treatment", args.treatment)):
        port = free_port()
        command = [
            sys.executable, "-m", "model_server", "--registry-uri", args.registry_uri,
            "--model-name", args.model, "--model-version", version,
            "--host", "127.0.0.1", "--http-port", str(port),
        ]  # fmt: skip
        if side == "treatment":
            command += ["--fault-error-ratio", str(args.treatment_fault_error_ratio)]
            command += ["--fault-latency-ms", str(args.treatment_fault_latency_ms)]
        process = start(command, f"{side}.log")
        url = f"http://127.0.0.1:{port}"
        if not wait_ready(f"{url}/v2/models/{args.model}/ready", process, 120):
            log = (work / f"{side}.log").read_text(errors="replace")[-2000:]
            print(f"model-rollout: error: the {side} server ({version}) did not start:\n{log}",
                  file=sys.stderr)  # fmt: skip
            return EXIT_ERROR
        servers[side] = url
        printer.event("server", f"{side} {args.model} {version} on {url}")

    prometheus_url = start_prometheus(prometheus_bin, list(servers.values()), work, start)
    if prometheus_url is None:
        return EXIT_ERROR
    printer.event("prometheus", f"scraping both every second on {prometheus_url}")

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
        "LOADTEST_VERSION": args.control,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    with (work / "locust.log").open("wb") as handle:
        locust = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "locust",
                "-f",
                str(ROOT / "loadtests" / "split.py"),
                "--headless",
                "--host",
                servers["control"],
                "--users",
                str(args.users),
                "--spawn-rate",
                str(args.users),
                "--run-time",
                f"{int(duration)}s",
                "--stop-timeout",
                "5",
                "--only-summary",
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    processes.append(locust)
    printer.event("load", f"locust, {args.users} users, at most {int(duration)}s")

    state = RolloutState(
        model=args.model,
        control_version=args.control,
        treatment_version=args.treatment,
        percent=settings.steps[0],
    )
    target.set_percent(state.percent)
    printer.event("start", f"{args.treatment} at {state.percent}% against {args.control}")
    with Prometheus(prometheus_url) as evidence:
        # Count from the first scraped request of each side: a side nobody has called yet has
        # no series, which the analysis rightly reads as "no data".
        deadline = time.monotonic() + 60
        seen = 'count(model_server_requests_total{model_version="%s"})'
        while any(
            not evidence.query(seen % v) for v in (args.control, args.treatment)
        ):  # pragma: no branch
            if time.monotonic() > deadline:
                print("model-rollout: error: no load reached the servers", file=sys.stderr)
                return EXIT_ERROR
            time.sleep(1)
        return run_loop(target, evidence, settings, state, printer)
