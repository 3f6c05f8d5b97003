"""What both rehearsals share on this machine: the project's root, the local Prometheus and
stopping the processes they started.

``model-rollout rehearse`` and ``model-rollout experiment rehearse`` run real model servers,
Prometheus and locust as child processes; this finds and starts Prometheus (scraping every
second) and stops them all. It knows nothing of the analysis, the commands, Kubernetes or
what either rehearsal runs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from serving_common.net import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[1]


def prometheus_binary() -> str | None:
    """The local Prometheus to rehearse with; None (said on stderr) when it is not installed."""
    found = shutil.which("prometheus")
    if found is None:
        print(
            "model-rollout: error: prometheus is not installed (make system-deps)", file=sys.stderr
        )
    return found


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    """Terminate ``processes`` (last started first), killing any still up after 20 s."""
    for process in reversed(processes):
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def start_prometheus(
    prometheus_bin: str,
    targets: list[str],
    work: Path,
    start: Callable[[list[str], str], subprocess.Popen[bytes]],
) -> str | None:
    """A Prometheus on a free loopback port scraping ``targets`` (URLs) every second, its
    storage in ``work``; its URL, or None (said on stderr) when it does not start."""
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "model-serving",
                "static_configs": [{"targets": [u.removeprefix("http://") for u in targets]}],
            }
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    process = start(
        [
            prometheus_bin,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        "prometheus.log",
    )
    url = f"http://127.0.0.1:{port}"
    if not wait_ready(f"{url}/-/ready", process, 60):
        print("model-rollout: error: the local Prometheus did not start", file=sys.stderr)
        return None
    return url
