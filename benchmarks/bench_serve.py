"""Serving throughput and latency, side by side in one run: ``make bench-serve``.

The same breast-cancer pipeline (logistic regression, and a 100-tree random forest), the same
V2 request bytes (one [N] tensor per feature, 1 and 32 rows), the same load generator (wrk) with
the same connections and duration, against:

  (a) model-server   this project's server, with its defaults
  (b) bare-kserve    a plain kserve.Model calling predict, with KServe's defaults
  (c) mlserver       Seldon MLServer 1.7 with its sklearn runtime, in its own venv
  (d) raw-asgi       a bare ASGI app that parses JSON and calls predict: the floor
  and, to show the server's own overhead, (a) with --no-fast-path (model-server-pipeline):
  every request through the full scikit-learn pipeline, as the peers do; and (a) with
  --no-drift (model-server-no-drift), to show what drift monitoring costs.

Each server runs alone, single worker, pinned to CPU 0; wrk is pinned to CPU 1. Only 127.0.0.1
is contacted; every run is bounded by --duration. Results are ratios to (a), printed and written
to bench-results/serve.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import joblib

ROOT = Path(__file__).resolve().parent.parent
SERVERS = (
    "model-server",
    "bare-kserve",
    "mlserver",
    "raw-asgi",
    "model-server-pipeline",
    "model-server-no-drift",
)
MODELS: dict[str, dict[str, Any]] = {
    "logistic": {"estimator": "logistic", "param": {}},
    "random-forest": {"estimator": "random-forest", "param": {"n_estimators": "100"}},
}
MLSERVER_VENV = ROOT / ".bench" / "mlserver"


@dataclass
class Result:
    model: str
    server: str
    rows: int
    connections: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cpu: int, command: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(cpu), *command]
    return command


def tree_rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    total_kib, stack = 0, [pid]
    while stack:
        current = stack.pop()
        stack.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
        except OSError:
            continue
    return total_kib / 1024


def prepare(work: Path) -> dict[str, dict[str, Any]]:
    """Train both models into a registry, and export joblib copies for the peers."""
    from model_registry import Registry
    from serving_common.logging import configure_logging
    from trainer.settings import TrainerSettings
    from trainer.train import run

    configure_logging("WARNING")
    registry_uri = str(work / "registry")
    prepared = {}
    for label, options in MODELS.items():
        name = f"bc-{label}"
        print(f">> training {name}", flush=True)
        run(
            TrainerSettings(
                sample="breast-cancer",
                model_name=name,
                registry_uri=registry_uri,
                promote=True,
                estimator=options["estimator"],
                param=options["param"],
            )
        )
        metadata, pipeline = Registry(registry_uri).load_model(name, "production")
        joblib_path = work / f"{name}.joblib"
        joblib.dump(pipeline, joblib_path)
        mlserver_dir = work / "mlserver" / name
        mlserver_dir.mkdir(parents=True)
        shutil.copy(joblib_path, mlserver_dir / "model.joblib")
        (mlserver_dir / "model-settings.json").write_text(
            json.dumps(
                {
                    "name": name,
                    "implementation": "mlserver_sklearn.SKLearnModel",
                    "parameters": {"uri": "./model.joblib", "version": metadata.version},
                }
            )
        )
        prepared[label] = {
            "name": name,
            "registry": registry_uri,
            "joblib": str(joblib_path),
            "mlserver_dir": str(mlserver_dir.parent),
            "features": metadata.feature_names,
        }
    return prepared


def request_body(features: list[str], rows: int) -> bytes:
    """The same V2 request for every server: one [rows] FP64 tensor per feature."""
    from trainer.data import load_sample

    frame = load_sample("breast-cancer").frame.head(rows)
    inputs = [
        {"name": name, "shape": [rows], "datatype": "FP64", "data": frame[name].tolist()}
        for name in features
    ]
    # content_type "pd" asks MLServer to decode into a DataFrame (the pipeline selects columns
    # by name); the other servers ignore it.
    return json.dumps({"inputs": inputs, "parameters": {"content_type": "pd"}}).encode()


def start_server(
    kind: str, model: dict[str, Any], work: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    python = sys.executable
    name = model["name"]
    log = (work / f"{kind}-{name}.log").open("wb")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if kind.startswith("model-server"):
        command = [
            *(python, "-m", "model_server", "--registry-uri", model["registry"]),
            *("--model-name", name, "--host", "127.0.0.1", "--http-port", str(port)),
        ]
        if kind == "model-server-pipeline":
            command.append("--no-fast-path")
        if kind == "model-server-no-drift":
            command.append("--no-drift")
    elif kind == "bare-kserve":
        command = [python, "-m", "benchmarks.servers.bare_kserve", model["joblib"], name, str(port)]
    elif kind == "raw-asgi":
        command = [python, "-m", "benchmarks.servers.raw_asgi", model["joblib"], name, str(port)]
    else:
        settings_dir = work / f"mlserver-settings-{name}"
        shutil.copytree(model["mlserver_dir"], settings_dir, dirs_exist_ok=True)
        (settings_dir / "settings.json").write_text(
            json.dumps(
                {
                    "http_port": port,
                    "grpc_port": free_port(),
                    "metrics_port": free_port(),
                    "host": "127.0.0.1",
                }
            )
        )
        # Serve only this model: drop the other model's folder from the copy.
        for other in settings_dir.iterdir():
            if other.is_dir() and other.name != name:
                shutil.rmtree(other)
        command = [str(MLSERVER_VENV / "bin" / "mlserver"), "start", str(settings_dir)]
    process = subprocess.Popen(
        pinned(0, command),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    log.close()
    return process, f"http://127.0.0.1:{port}"


def wait_ready(url: str, name: str, body: bytes, process: subprocess.Popen[bytes]) -> list[Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            response = httpx.post(
                f"{url}/v2/models/{name}/infer",
                content=body,
                headers={"content-type": "application/json"},
                timeout=10,
            )
            if response.status_code == 200:
                outputs = response.json()["outputs"]
                return list(outputs[0]["data"])
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready in time")


def stop(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(
    url: str, script: Path, connections: int, duration: int
) -> tuple[float, float, float, int]:
    output = subprocess.run(
        pinned(
            1,
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{duration}s",
                "--latency",
                "-s",
                str(script),
                url,
            ],
        ),
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    errors_match = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = int(errors_match.group(1)) if errors_match else 0
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    return rps, p50, p99, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--duration", type=int, default=10, help="seconds per measurement (default: %(default)s)"
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--servers", nargs="+", default=list(SERVERS), choices=list(SERVERS))
    parser.add_argument("--output", type=Path, default=Path("bench-results/serve.json"))
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: run `make bench-serve`, which installs it", file=sys.stderr)
        return 2
    if "mlserver" in args.servers and not (MLSERVER_VENV / "bin" / "mlserver").exists():
        print(f"MLServer venv missing at {MLSERVER_VENV}: run `make bench-serve`", file=sys.stderr)
        return 2

    results: list[Result] = []
    memory: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = Path(tmp)
        models = prepare(work)
        scripts = {}
        for label in args.models:
            for rows in args.rows:
                body_path = work / f"{label}-{rows}.json"
                body_path.write_bytes(request_body(models[label]["features"], rows))
                script = work / f"{label}-{rows}.lua"
                script.write_text(
                    'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                    f'local f = io.open("{body_path}", "rb")\n'
                    'wrk.body = f:read("*all")\nf:close()\n'
                )
                scripts[(label, rows)] = (script, body_path.read_bytes())
        for label in args.models:
            model = models[label]
            reference: list[Any] | None = None
            for kind in args.servers:
                print(f">> {label}: starting {kind}", flush=True)
                process, url = start_server(kind, model, work)
                try:
                    labels = wait_ready(
                        url, model["name"], scripts[(label, max(args.rows))][1], process
                    )
                    if reference is None:
                        reference = labels
                    elif labels != reference:
                        raise RuntimeError(f"{kind} predicts differently from {args.servers[0]}")
                    endpoint = f"{url}/v2/models/{model['name']}/infer"
                    for rows in args.rows:
                        script = scripts[(label, rows)][0]
                        run_wrk(endpoint, script, 8, 2)  # warm-up
                        for connections in args.connections:
                            rps, p50, p99, errors = run_wrk(
                                endpoint, script, connections, args.duration
                            )
                            results.append(
                                Result(label, kind, rows, connections, rps, p50, p99, errors)
                            )
                            print(
                                f"   {rows:>2} rows x {connections:>2} conns: {rps:8.1f} req/s  "
                                f"p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  errors {errors}",
                                flush=True,
                            )
                    memory.setdefault(label, {})[kind] = round(tree_rss_mib(process.pid), 1)
                finally:
                    stop(process)

    report(results, memory, args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {"results": [r.__dict__ for r in results], "rss_mib_after_load": memory}, indent=2
        )
        + "\n"
    )
    print(f"wrote {args.output}")
    return 0


def report(
    results: list[Result], memory: dict[str, dict[str, float]], args: argparse.Namespace
) -> None:
    ours = "model-server"
    peers = [s for s in args.servers if s != ours]
    for label in args.models:
        print(f"\n== {label}: requests/s (ratio of model-server to each peer), p50/p99 ms")
        header = f"{'rows':>4} {'conns':>5} {'model-server':>22}" + "".join(
            f" {p:>30}" for p in peers
        )
        print(header)
        for rows in args.rows:
            for connections in args.connections:
                cell = {
                    r.server: r
                    for r in results
                    if r.model == label and r.rows == rows and r.connections == connections
                }
                if ours not in cell:
                    continue
                base = cell[ours]
                line = (
                    f"{rows:>4} {connections:>5} {base.requests_per_second:>8.0f} "
                    f"{base.p50_ms:>5.1f}/{base.p99_ms:<6.1f}"
                )
                for peer in peers:
                    if peer in cell:
                        other = cell[peer]
                        ratio = base.requests_per_second / other.requests_per_second
                        line += (
                            f" {other.requests_per_second:>8.0f} ({ratio:4.2f}x) "
                            f"{other.p50_ms:>5.1f}/{other.p99_ms:<6.1f}"
                        )
                print(line)
        if label in memory:
            rss = memory[label]
            print(
                "RSS after load (MiB): "
                + ", ".join(
                    f"{k} {v:.0f}"
                    + (f" ({rss[ours] / v:.2f}x)" if k != ours and ours in rss else "")
                    for k, v in rss.items()
                )
            )
    print("\ntargets (model-server throughput / peer's, every scenario):")
    targets = {"mlserver": 1.5, "bare-kserve": 1.2, "raw-asgi": 0.65}
    for peer, goal in targets.items():
        ratios = [
            base.requests_per_second / other.requests_per_second
            for base in results
            if base.server == ours
            for other in results
            if other.server == peer
            and (other.model, other.rows, other.connections)
            == (base.model, base.rows, base.connections)
        ]
        if ratios:
            verdict = "met" if min(ratios) >= goal else "MISSED"
            print(
                f"  vs {peer:<12} >= {goal:.2f}x: min {min(ratios):.2f}x, "
                f"max {max(ratios):.2f}x -> {verdict}"
            )
    p99 = [
        (base, other)
        for base in results
        if base.server == ours and base.connections == 32
        for other in results
        if other.server == "mlserver"
        and (other.model, other.rows, other.connections)
        == (base.model, base.rows, base.connections)
    ]
    if p99:
        worse = [f"{b.model}/{b.rows}" for b, o in p99 if b.p99_ms > o.p99_ms]
        print(
            "  p99 at 32 connections no worse than mlserver: "
            + ("met" if not worse else "MISSED for " + ", ".join(worse))
        )
    if any(r.errors for r in results):
        print(
            "  WARNING: some runs had non-2xx responses or socket errors: "
            + ", ".join(
                f"{r.server}/{r.model}/{r.rows}x{r.connections}={r.errors}"
                for r in results
                if r.errors
            )
        )


if __name__ == "__main__":
    sys.exit(main())
