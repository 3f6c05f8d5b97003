"""Load test of a model server: V1 and V2 users, payloads from the model's registry metadata.

    locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:8080 -u 8 -r 8 -t 30s
        (LOADTEST_REGISTRY_URI, LOADTEST_MODEL, LOADTEST_VERSION, LOADTEST_BAD_SHARE, LOADTEST_SLO)

Rows are drawn uniformly from each numeric feature's training range and from each categorical
feature's categories, as recorded in the version's metadata.json. A share of requests is
deliberately bad (wrong feature count): they must be answered 400, are reported under their own
names and kept out of the SLO figures. At the end the good requests are checked against
``loadtests/slo.yaml`` (p95, p99, error ratio, a minimum count); a miss sets exit code 1.
``python -m loadtests.run`` (``make loadtest``) starts a local server and runs this headless.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from locust import HttpUser, between, events, task
from locust.env import Environment
from locust.stats import StatsEntry

from loadtests.payloads import Payloads
from model_registry import Registry
from model_registry.metadata import ModelMetadata

GOOD = ("v1 predict", "v2 infer")
SLO_PATH = Path(os.environ.get("LOADTEST_SLO", Path(__file__).with_name("slo.yaml")))
BAD_SHARE = float(os.environ.get("LOADTEST_BAD_SHARE", "0.02"))


def _metadata() -> ModelMetadata:
    registry = os.environ.get("LOADTEST_REGISTRY_URI", "./registry")
    model = os.environ.get("LOADTEST_MODEL", "breast-cancer")
    version = os.environ.get("LOADTEST_VERSION", "production")
    return Registry(registry).get(model, version)


METADATA = _metadata()
MODEL = METADATA.model_name


class ModelUser(HttpUser):
    abstract = True
    wait_time = between(0.01, 0.05)

    def on_start(self) -> None:
        self.payloads = Payloads(METADATA, seed=id(self))

    def bad_request(self, path: str, body: dict[str, Any], name: str) -> None:
        with self.client.post(path, json=body, name=name, catch_response=True) as response:
            if response.status_code == 400:
                response.success()
            else:
                response.failure(f"a bad request got {response.status_code}, not 400")


class V1User(ModelUser):
    weight = 1

    @task
    def predict(self) -> None:
        path = f"/v1/models/{MODEL}:predict"
        if self.payloads.random.random() < BAD_SHARE:
            self.bad_request(path, {"instances": [[1.0]]}, "v1 bad input")
            return
        rows = self.payloads.random.randint(1, 8)
        self.client.post(path, json=self.payloads.v1(rows), name="v1 predict")


class V2User(ModelUser):
    weight = 2

    @task
    def infer(self) -> None:
        path = f"/v2/models/{MODEL}/infer"
        if self.payloads.random.random() < BAD_SHARE:
            bad = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}]}
            self.bad_request(path, bad, "v2 bad input")
            return
        rows = self.payloads.random.randint(1, 8)
        self.client.post(path, json=self.payloads.v2(rows), name="v2 infer")


def slo_verdict(environment: Environment, slo: dict[str, float]) -> tuple[bool, list[str]]:
    """Check the good requests against the SLO; (met, one line per check)."""
    stats = environment.stats
    entries = [stats.get(name, "POST") for name in GOOD]
    total = sum(e.num_requests for e in entries)
    failures = sum(e.num_failures for e in entries)
    merged = StatsEntry(stats, "SLO", "POST")  # a copy: the report's own entries stay as they are
    for entry in entries:
        merged.extend(entry)
    p95 = merged.get_response_time_percentile(0.95) if total else float("inf")
    p99 = merged.get_response_time_percentile(0.99) if total else float("inf")
    ratio = failures / total if total else 1.0
    checks = [
        (total >= slo["min_requests"], f"good requests {total} >= {slo['min_requests']:.0f}"),
        (p95 < slo["p95_ms"], f"p95 {p95:.0f} ms < {slo['p95_ms']:.0f} ms"),
        (p99 < slo["p99_ms"], f"p99 {p99:.0f} ms < {slo['p99_ms']:.0f} ms"),
        (ratio < slo["max_error_ratio"], f"error ratio {ratio:.4%} < {slo['max_error_ratio']:.2%}"),
    ]
    lines = [f"{'ok  ' if ok else 'MISS'} {text}" for ok, text in checks]
    return all(ok for ok, _ in checks), lines


@events.quitting.add_listener  # type: ignore[untyped-decorator]
def _check_slo(environment: Environment, **_: Any) -> None:
    slo = yaml.safe_load(SLO_PATH.read_text())
    met, lines = slo_verdict(environment, slo)
    print(f"SLO ({SLO_PATH}):")
    for line in lines:
        print(f"  {line}")
    print("SLO met" if met else "SLO MISSED")
    environment.process_exit_code = 0 if met else 1
