"""Run the load test headless against a local model server it starts: ``make loadtest``.

    python -m loadtests.run [--registry-uri ./registry] [--model breast-cancer]
                            [--users 8] [--duration 30s] [--fault-latency-ms 0]

Starts ``model-server`` on a free 127.0.0.1 port (serving the model's production version),
waits until it is ready, runs locust headless for a bounded time with CSV and HTML reports
under ``loadtest-results/``, stops the server, and exits with locust's code: 0 when the SLO in
``loadtests/slo.yaml`` was met, 1 when it was missed. ``--fault-latency-ms`` injects latency
into the server (to see the check fail). Exit 2 on usage errors, 3 when the server never
became ready.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from serving_common.net import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.run",
        description="Start a local model server and load-test it with locust against the SLO.",
        epilog="exit codes: 0 SLO met, 1 SLO missed, 2 usage, 3 server not ready",
    )
    parser.add_argument("--registry-uri", default="./registry", help="registry (./registry)")
    parser.add_argument("--model", default="breast-cancer", help="model name (breast-cancer)")
    parser.add_argument("--version", default="production", help="version or alias (production)")
    parser.add_argument("--users", type=int, default=8, help="concurrent users (8)")
    parser.add_argument("--duration", default="30s", help="run time, e.g. 30s or 2m (30s)")
    parser.add_argument("--fault-latency-ms", type=float, default=0.0, help="inject latency")
    parser.add_argument(
        "--results", type=Path, default=ROOT / "loadtest-results", help="report folder"
    )
    args = parser.parse_args(argv)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args.results.mkdir(parents=True, exist_ok=True)
    server_log = args.results / "model-server.log"
    command = [
        sys.executable,
        "-m",
        "model_server",
        "--registry-uri",
        args.registry_uri,
        "--model-name",
        args.model,
        "--model-version",
        args.version,
        "--host",
        "127.0.0.1",
        "--http-port",
        str(port),
        "--fault-latency-ms",
        str(args.fault_latency_ms),
    ]
    print(f">> starting model-server for {args.model} {args.version} on {url}", flush=True)
    with server_log.open("wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        if not wait_ready(f"{url}/v2/models/{args.model}/ready", server, timeout=120):
            print(f"model-server never became ready; see {server_log}", file=sys.stderr)
            return 3
        env = {
            **os.environ,
            "LOADTEST_REGISTRY_URI": args.registry_uri,
            "LOADTEST_MODEL": args.model,
            "LOADTEST_VERSION": args.version,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        locust = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(ROOT / "loadtests" / "locustfile.py"),
            "--headless",
            "--host",
            url,
            "--users",
            str(args.users),
            "--spawn-rate",
            str(args.users),
            "--run-time",
            args.duration,
            "--stop-timeout",
            "5",
            "--csv",
            str(args.results / "loadtest"),
            "--html",
            str(args.results / "report.html"),
            "--only-summary",
        ]
        print(f">> locust: {args.users} users for {args.duration}", flush=True)
        done = subprocess.run(locust, env=env, cwd=ROOT, check=False, timeout=3600)
        print(f">> reports in {args.results}/ (loadtest_stats.csv, report.html)")
        return done.returncode
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    sys.exit(main())
