"""What experiment mode costs: memory of two versions in one server, and the request path.

    python -m benchmarks.bench_experiment [--requests 2000] [--json out.json]

For each model (logistic regression, and a 200-tree random forest whose artifacts are large),
two versions are registered, then measured side by side in one run on this machine: the model
server serving one version, and the same server in experiment mode serving both (every request
carrying a user key, so both versions answer). Printed: resident memory after the requests
(MiB, server and its children), the memory a second version adds, and the req/s and p50 of a
bounded sequential client on 127.0.0.1 (a ratio, the machine being noisy).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.bench_serve import free_port, stop, tree_rss_mib
from serving_common.net import wait_ready

MODELS: dict[str, dict[str, Any]] = {
    "logistic": {"estimator": "logistic", "param": [{"C": "1.0"}, {"C": "0.5"}]},
    "random-forest": {
        "estimator": "random-forest",
        "param": [{"n_estimators": "200"}, {"n_estimators": "200", "max_depth": "8"}],
    },
}


def register(work: Path) -> str:
    from serving_common.logging import configure_logging
    from trainer.settings import TrainerSettings
    from trainer.train import run

    configure_logging("WARNING")
    registry = str(work / "registry")
    for label, options in MODELS.items():
        for param in options["param"]:
            print(f">> training bench-{label} {param}", flush=True)
            run(
                TrainerSettings(
                    sample="breast-cancer",
                    model_name=f"bench-{label}",
                    registry_uri=registry,
                    estimator=options["estimator"],
                    param=param,
                    force=True,
                )
            )
    return registry


def measure(registry: str, label: str, experiment: bool, requests: int) -> dict[str, float]:
    name = f"bench-{label}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "model_server", "--registry-uri", registry, "--model-name", name,
        "--model-version", "v1", "--host", "127.0.0.1", "--http-port", str(port), "--no-drift",
    ]  # fmt: skip
    if experiment:
        command += ["--experiment", "bench", "--experiment-treatment", "v2"]
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed with the server below)
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        if not wait_ready(f"{url}/v2/models/{name}/ready", process, 120):
            log.seek(0)
            raise RuntimeError(f"{name} did not start:\n{log.read().decode()[-2000:]}")
        meta = httpx.get(f"{url}/v2/models/{name}").json()
        body = {
            "inputs": [
                {"name": i["name"], "datatype": "FP64", "shape": [1], "data": [1.0]}
                for i in meta["inputs"]
            ]
        }
        latencies, versions = [], set()
        with httpx.Client() as client:
            started = time.perf_counter()
            for index in range(requests):
                sent = time.perf_counter()
                response = client.post(
                    f"{url}/v2/models/{name}/infer",
                    json=body,
                    headers={"x-user-id": f"user-{index}"},
                )
                latencies.append(time.perf_counter() - sent)
                response.raise_for_status()
                versions.add(response.headers["x-model-version"])
            elapsed = time.perf_counter() - started
        if len(versions) != (2 if experiment else 1):
            raise RuntimeError(f"{name}: versions answering {sorted(versions)}")
        return {
            "rss_mib": round(tree_rss_mib(process.pid), 1),
            "requests_per_second": round(requests / elapsed, 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 3),
        }
    finally:
        if process.poll() is None:
            stop(process)
        log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_experiment", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per server (2000)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-experiment-") as tmp:
        registry = register(Path(tmp))
        for label in MODELS:
            results[label] = {}
            for mode, experiment in (("one version", False), ("experiment", True)):
                print(f">> {label}: {mode}", flush=True)
                results[label][mode] = measure(registry, label, experiment, args.requests)
    print()
    print("| model | mode | RSS MiB | req/s | p50 ms |")
    print("|---|---|---:|---:|---:|")
    for label, modes in results.items():
        for mode, row in modes.items():
            print(
                f"| {label} | {mode} | {row['rss_mib']} | {row['requests_per_second']} | "
                f"{row['p50_ms']} |"
            )
    for label, modes in results.items():
        one, both = modes["one version"], modes["experiment"]
        print(
            f"{label}: the second version adds {both['rss_mib'] - one['rss_mib']:.1f} MiB "
            f"({both['rss_mib'] / one['rss_mib']:.2f}x RSS); req/s "
            f"{both['requests_per_second'] / one['requests_per_second']:.2f}x of one version"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
