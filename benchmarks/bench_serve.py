"""Serving throughput and latency, side by side in one run: ``make bench-serve``.

Three models the trainer makes (breast-cancer logistic regression and a 200-tree random forest;
a logistic model on synthetic data with 20 numeric and 2 categorical features; gradient
boosting is served by the pipeline and has no ONNX floor), the same V2 request bytes (one [N]
tensor per feature, 1 and 32 rows), the same load generator (wrk) with the same connections
and duration, against:

  (a) model-server  this project's server, with its defaults (ONNX Runtime, validation,
                    metrics, drift, request ids, provenance sampling all on)
  (b) lean-onnx     the lean floor: a bare ASGI app running the same checked model.onnx with
                    the server's session options, orjson in and out, nothing else
  (c) bare-kserve   a plain kserve.Model calling the pipeline's predict, KServe's defaults
  (d) mlserver      Seldon MLServer 1.7 with its sklearn runtime, in its own venv
  (e) raw-asgi      a bare ASGI app that parses JSON and calls the pipeline's predict

The peers (c-e) get the pipeline with ``n_jobs=1`` (the trainer fits forests with all cores;
one thread is their best setting for 1-row requests). Each server runs alone, single worker,
pinned to CPU 0; wrk is pinned to CPU 1. Then ``--workers 2`` is compared with one worker
(the servers on both cores, wrk beside them). Only 127.0.0.1 is contacted; every run is
bounded by --duration. Prints req/s, p50/p99 and RSS with each target as met or MISSED, and
writes bench-results/serve.json.
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
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ("model-server", "lean-onnx", "bare-kserve", "mlserver", "raw-asgi")
MODELS: dict[str, dict[str, Any]] = {
    "logistic": {"estimator": "logistic", "param": {}, "sample": "breast-cancer"},
    "random-forest": {
        "estimator": "random-forest",
        "param": {"n_estimators": "200"},
        "sample": "breast-cancer",
    },
    # no gradient boosting: it is served by the pipeline (float64 split thresholds, which ONNX
    # Runtime's trees cannot compare: model_registry.onnx_runtime.unsupported), so it has no
    # lean ONNX floor to be measured against
    "categorical": {"estimator": "logistic", "param": {}, "sample": None},
}
CATEGORICAL_ROWS = 5000
MLSERVER_VENV = ROOT / ".bench" / "mlserver"
TARGETS = {
    "lean_floor": 0.4,  # model-server / lean-onnx, every model, 1 and 32 rows
    "mlserver_trees": 15.0,  # model-server / mlserver, the random forest
    "p99_ms_at_32": 50.0,  # model-server's p99 at 32 connections, every model
    "rss_vs_bare_kserve": 1.3,  # model-server's RSS / bare KServe's
    "workers_2": 1.7,  # --workers 2 / one worker
}


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


def pinned(cpus: int | str, command: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(cpus), *command]
    return command


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, stack = [], [pid]
    while stack:
        current = stack.pop()
        tree.append(current)
        stack.extend(children.get(current, []))
    return tree


def tree_rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants."""
    total_kib = 0
    for current in process_tree(pid):
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
        except OSError:
            continue
    return total_kib / 1024


def _training_frame(label: str, work: Path) -> tuple[str | None, Path | None]:
    """The sample to train on, or a data file (the categorical model's synthetic data)."""
    sample = MODELS[label]["sample"]
    if sample is not None:
        return sample, None
    from benchmarks.bench_train import synthetic

    data = work / f"{label}.parquet"
    synthetic(CATEGORICAL_ROWS).to_parquet(data)
    return None, data


def prepare(work: Path, labels: list[str]) -> dict[str, dict[str, Any]]:
    """Train each model into a registry, and export joblib copies for the peers."""
    from model_registry import Registry
    from serving_common.logging import configure_logging
    from trainer.data import load_sample
    from trainer.settings import TrainerSettings
    from trainer.train import run

    configure_logging("WARNING")
    registry_uri = str(work / "registry")
    prepared = {}
    for label in labels:
        options = MODELS[label]
        name = f"bench-{label}"
        print(f">> training {name}", flush=True)
        sample, data = _training_frame(label, work)
        run(
            TrainerSettings(
                sample=sample,
                data_uri=str(data) if data else None,
                target=None if sample else "label",
                model_name=name,
                registry_uri=registry_uri,
                promote=True,
                estimator=options["estimator"],
                param=options["param"],
            )
        )
        registry = Registry(registry_uri)
        metadata, pipeline = registry.load_model(name, "production")
        if metadata.onnx is None or metadata.onnx.file is None:
            raise RuntimeError(f"{name} was registered without ONNX: {metadata.onnx}")
        estimator = pipeline.steps[-1][1]
        if "n_jobs" in estimator.get_params(deep=False):
            estimator.set_params(n_jobs=1)  # the peers' best setting for small requests
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
        frame = (
            pd.read_parquet(data, use_threads=False).drop(  # see trainer.data.load_uri
                columns="label"
            )
            if data
            else load_sample(sample).frame[metadata.feature_names]  # type: ignore[arg-type]
        )
        prepared[label] = {
            "name": name,
            "registry": registry_uri,
            "joblib": str(joblib_path),
            "mlserver_dir": str(mlserver_dir.parent),
            "features": metadata.feature_names,
            "categorical": [f.name for f in metadata.features if f.kind == "categorical"],
            "frame": frame,
        }
    return prepared


def request_body(model: dict[str, Any], rows: int) -> bytes:
    """The same V2 request for every server: one [rows] tensor per feature (FP64, or BYTES for
    a category)."""
    frame = model["frame"].head(rows)
    inputs = [
        {
            "name": name,
            "shape": [rows],
            "datatype": "BYTES" if name in model["categorical"] else "FP64",
            "data": frame[name].tolist(),
        }
        for name in model["features"]
    ]
    # content_type "pd" asks MLServer to decode into a DataFrame (the pipeline selects columns
    # by name); the other servers ignore it.
    return json.dumps({"inputs": inputs, "parameters": {"content_type": "pd"}}).encode()


def start_server(
    kind: str, model: dict[str, Any], work: Path, *, workers: int = 1, cpus: str = "0"
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    python = sys.executable
    name = model["name"]
    log = (work / f"{kind}-{name}-{workers}.log").open("wb")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if kind == "model-server":
        command = [
            *(python, "-m", "model_server", "--registry-uri", model["registry"]),
            *("--model-name", name, "--host", "127.0.0.1", "--http-port", str(port)),
            *("--workers", str(workers)),
        ]
    elif kind == "lean-onnx":
        command = [python, "-m", "benchmarks.servers.lean_onnx", model["registry"], name, str(port)]
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
        # Serve only this model: drop the other models' folders from the copy.
        for other in settings_dir.iterdir():
            if other.is_dir() and other.name != name:
                shutil.rmtree(other)
        command = [str(MLSERVER_VENV / "bin" / "mlserver"), "start", str(settings_dir)]
    process = subprocess.Popen(
        pinned(cpus, command),
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
    url: str, script: Path, connections: int, duration: int, cpus: str = "1"
) -> tuple[float, float, float, int]:
    output = subprocess.run(
        pinned(
            cpus,
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


def wrk_script(work: Path, label: str, rows: int, body: bytes) -> Path:
    body_path = work / f"{label}-{rows}.json"
    body_path.write_bytes(body)
    script = work / f"{label}-{rows}.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{body_path}", "rb")\n'
        'wrk.body = f:read("*all")\nf:close()\n'
    )
    return script


def measure(  # noqa: PLR0917 (one server's run)
    kind: str,
    model: dict[str, Any],
    work: Path,
    scripts: dict[int, tuple[Path, bytes]],
    args: argparse.Namespace,
    reference: list[Any] | None,
) -> tuple[list[Result], float, list[Any]]:
    """Every rows x connections cell for one server: results, RSS after the runs, labels."""
    label = next(k for k, v in MODELS.items() if f"bench-{k}" == model["name"])
    process, url = start_server(kind, model, work)
    results = []
    try:
        labels = wait_ready(url, model["name"], scripts[max(args.rows)][1], process)
        if reference is not None and labels != reference:
            raise RuntimeError(f"{kind} predicts differently from {args.servers[0]}")
        endpoint = f"{url}/v2/models/{model['name']}/infer"
        for rows in args.rows:
            script = scripts[rows][0]
            run_wrk(endpoint, script, 8, 2)  # warm-up
            for connections in args.connections:
                rps, p50, p99, errors = run_wrk(endpoint, script, connections, args.duration)
                results.append(Result(label, kind, rows, connections, rps, p50, p99, errors))
                print(
                    f"   {rows:>2} rows x {connections:>2} conns: {rps:8.1f} req/s  "
                    f"p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  errors {errors}",
                    flush=True,
                )
        rss = round(tree_rss_mib(process.pid), 1)
    finally:
        stop(process)
    return results, rss, labels


def workers_scaling(
    model: dict[str, Any], work: Path, script: Path, duration: int
) -> dict[str, float]:
    """1-row req/s of one worker (pinned to CPU 0, wrk on CPU 1) and of ``--workers 2`` (both
    cores, wrk beside them), 8 connections."""
    measured = {}
    for workers, cpus, wrk_cpus in ((1, "0", "1"), (2, "0,1", "0,1")):
        print(f">> workers: model-server --workers {workers}", flush=True)
        process, url = start_server("model-server", model, work, workers=workers, cpus=cpus)
        try:
            wait_ready(url, model["name"], script.with_suffix(".json").read_bytes(), process)
            endpoint = f"{url}/v2/models/{model['name']}/infer"
            run_wrk(endpoint, script, 8, 2, wrk_cpus)
            rps, p50, p99, errors = run_wrk(endpoint, script, 8, duration, wrk_cpus)
            print(f"   {rps:8.1f} req/s  p50 {p50:.2f} ms  p99 {p99:.2f} ms  errors {errors}")
            if errors:
                raise RuntimeError(f"--workers {workers}: {errors} failed requests")
            measured[f"workers_{workers}"] = rps
        finally:
            stop(process)
    return measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--duration", type=int, default=8, help="seconds per measurement (default: %(default)s)"
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--servers", nargs="+", default=list(SERVERS), choices=list(SERVERS))
    parser.add_argument(
        "--no-workers", action="store_true", help="skip the --workers 2 vs one worker run"
    )
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
    scaling: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = Path(tmp)
        models = prepare(work, args.models)
        for label in args.models:
            model = models[label]
            scripts = {}
            for rows in args.rows:
                body = request_body(model, rows)
                scripts[rows] = (wrk_script(work, label, rows, body), body)
            reference: list[Any] | None = None
            for kind in args.servers:
                print(f">> {label}: {kind}", flush=True)
                cells, rss, labels = measure(kind, model, work, scripts, args, reference)
                reference = reference if reference is not None else labels
                results.extend(cells)
                memory.setdefault(label, {})[kind] = rss
        if not args.no_workers:
            first = args.models[0]
            scaling = workers_scaling(
                models[first],
                work,
                wrk_script(work, first, 1, request_body(models[first], 1)),
                args.duration,
            )

    targets = report(results, memory, scaling, args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "results": [r.__dict__ for r in results],
                "rss_mib_after_load": memory,
                "workers_requests_per_second": scaling,
                "targets": targets,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.output}")
    return 0


def _table(results: list[Result], memory: dict[str, dict[str, float]], args: Any) -> None:
    ours = "model-server"
    peers = [s for s in args.servers if s != ours]
    for label in args.models:
        print(f"\n== {label}: req/s (model-server / peer), p50/p99 ms")
        print(
            f"{'rows':>4} {'conns':>5} {'model-server':>22}" + "".join(f" {p:>30}" for p in peers)
        )
        for rows in args.rows:
            for connections in args.connections:
                cell = {
                    r.server: r
                    for r in results
                    if (r.model, r.rows, r.connections) == (label, rows, connections)
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
                            f" {other.requests_per_second:>8.0f} ({ratio:5.2f}x) "
                            f"{other.p50_ms:>5.1f}/{other.p99_ms:<6.1f}"
                        )
                print(line)
        if label in memory:
            rss = memory[label]
            print(
                "RSS after the runs (MiB): "
                + ", ".join(
                    f"{k} {v:.0f}"
                    + (f" ({rss[ours] / v:.2f}x)" if k != ours and ours in rss else "")
                    for k, v in rss.items()
                )
            )


def _ratios(results: list[Result], peer: str, models: set[str]) -> list[tuple[str, float]]:
    ours = {(r.model, r.rows, r.connections): r for r in results if r.server == "model-server"}
    return [
        (
            f"{r.model}/{r.rows}x{r.connections}",
            ours[key].requests_per_second / r.requests_per_second,
        )
        for r in results
        if r.server == peer
        and r.model in models
        and (key := (r.model, r.rows, r.connections)) in ours
    ]


def _verdict(
    name: str, values: list[tuple[str, float]], goal: float, higher: bool
) -> dict[str, Any]:
    if not values:
        return {}
    worst = min(values, key=lambda v: v[1]) if higher else max(values, key=lambda v: v[1])
    met = worst[1] >= goal if higher else worst[1] <= goal
    sign = ">=" if higher else "<="
    verdict = "met" if met else "MISSED"
    print(f"  {name} {sign} {goal:g}: worst {worst[1]:.2f} ({worst[0]}) -> {verdict}")
    return {"target": f"{sign} {goal:g}", "worst": round(worst[1], 3), "at": worst[0], "met": met}


def report(
    results: list[Result],
    memory: dict[str, dict[str, float]],
    scaling: dict[str, float],
    args: argparse.Namespace,
) -> dict[str, Any]:
    _table(results, memory, args)
    every = set(args.models)
    trees = every & {"random-forest"}
    print("\ntargets (model-server, defaults on):")
    targets = {
        "vs_lean_floor": _verdict(
            "req/s vs the lean ONNX floor, every model, 1 and 32 rows",
            _ratios(results, "lean-onnx", every),
            TARGETS["lean_floor"],
            higher=True,
        ),
        "vs_mlserver_trees": _verdict(
            "req/s vs MLServer, the random forest",
            _ratios(results, "mlserver", trees),
            TARGETS["mlserver_trees"],
            higher=True,
        ),
        "p99_at_32": _verdict(
            "p99 ms at 32 connections, every model",
            [
                (f"{r.model}/{r.rows}x{r.connections}", r.p99_ms)
                for r in results
                if r.server == "model-server" and r.connections == 32
            ],
            TARGETS["p99_ms_at_32"],
            higher=False,
        ),
        "rss_vs_bare_kserve": _verdict(
            "RSS vs bare KServe",
            [
                (label, rss["model-server"] / rss["bare-kserve"])
                for label, rss in memory.items()
                if "model-server" in rss and "bare-kserve" in rss
            ],
            TARGETS["rss_vs_bare_kserve"],
            higher=False,
        ),
    }
    if scaling:
        targets["workers_2"] = _verdict(
            "--workers 2 req/s vs one worker (1 row, 8 connections)",
            [("logistic", scaling["workers_2"] / scaling["workers_1"])],
            TARGETS["workers_2"],
            higher=True,
        )
    for peer, goal in {"mlserver": 1.5, "bare-kserve": 1.2}.items():
        targets[f"vs_{peer}"] = _verdict(
            f"req/s vs {peer}, every model", _ratios(results, peer, every), goal, higher=True
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
    return targets


if __name__ == "__main__":
    sys.exit(main())
