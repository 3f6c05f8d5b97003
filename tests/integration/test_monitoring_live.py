"""Every dashboard query and every rule, evaluated by a real Prometheus scraping real servers.

A real Prometheus (Debian's, on a loopback port, temp storage, 1 s scrapes and rule
evaluation) scrapes a control model server (v1), a treatment (v2) made to fail half its
requests by fault injection, a server whose model cannot load, and a real Pushgateway holding
the trainer's metrics, while a bounded load runs. Then every dashboard expression and every
recording rule must return data, every alert condition must answer (its comparisons made
``bool``), and the canary alert's own expression must name the treatment and only it.
A real Alertmanager shows that a critical alert holds back the same model's warnings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from scripts import dashboard
from serving_common.net import free_port
from tests.integration.conftest import start, stop
from tests.integration.server_harness import ServerProcess
from tests.monitoring.promql import as_signal
from tests.monitoring.test_monitoring import (
    ALERTMANAGER,
    RULE_FILES,
    binary,
    grafana_free,
    rules,
)
from trainer.__main__ import main as trainer_main
from trainer.settings import TrainerSettings
from trainer.train import run

pytestmark = pytest.mark.integration

MODEL = "breast-cancer"
ROW = [14.0, 19.0, 91.0, 650.0, 0.096, 0.1, 0.09, 0.05, 0.18, 0.06, 0.4, 1.2, 2.9, 40.0, 0.007,
       0.025, 0.03, 0.011, 0.02, 0.0038, 16.0, 25.0, 107.0, 880.0, 0.13, 0.25, 0.27, 0.11, 0.29,
       0.084]  # fmt: skip
LOAD_SECONDS = 20.0


class Prometheus:
    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=30)

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = self.client.get("/api/v1/query", params={"query": expr})
        body = response.json()
        assert response.status_code == 200, f"{expr}\n{body}"
        assert body["status"] == "success", f"{expr}\n{body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(self, expr: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(1.0)


def send_load(
    servers: list[ServerProcess], stop_at: float, experiment: ServerProcess | None = None
) -> None:
    """A bounded, paced load: inference (and some bad requests and feedback) on each server;
    on the experiment server, users with ids and their outcomes (conversions and values)."""
    body = {"inputs": [{"name": "input-0", "shape": [1, 30], "datatype": "FP64", "data": ROW}]}
    bad = {"inputs": [{"name": "input-0", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]}
    feedback = {"predictions": ["benign", "malignant"], "targets": ["benign", "benign"]}
    with httpx.Client(timeout=10) as client:
        sent = 0
        while time.monotonic() < stop_at and sent < 5000:
            for server in servers:
                client.post(f"{server.url}/v2/models/{MODEL}/infer", json=body)
                if sent % 10 == 0:
                    client.post(f"{server.url}/v2/models/{MODEL}/infer", json=bad)
                    version = server.args[server.args.index("--model-version") + 1]
                    client.post(
                        f"{server.url}/v2/models/{MODEL}/feedback",
                        json={**feedback, "model_version": version},
                    )
            if experiment is not None:
                user = f"user-{sent % 500}"
                headers = {"x-user-id": user}
                client.post(f"{experiment.url}/v2/models/{MODEL}/infer", json=body, headers=headers)
                outcome = {"converted": sent % 7 == 0} if sent % 2 else {"value": sent % 13}
                client.post(
                    f"{experiment.url}/v2/models/{MODEL}/feedback",
                    json={"experiment": "it-exp", "user_id": user, **outcome},
                )
                if sent % 10 == 0:  # no user key: the control answers, unassigned
                    client.post(f"{experiment.url}/v2/models/{MODEL}/infer", json=body)
            sent += 1
            time.sleep(0.02)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, pushgateway: str) -> Iterator[Prometheus]:
    root = tmp_path_factory.mktemp("monitoring-live")
    registry = str(root / "registry")
    run(TrainerSettings(sample="breast-cancer", registry_uri=registry, promote=True))
    run(
        TrainerSettings(
            sample="breast-cancer", registry_uri=registry, param={"C": "0.3"}, force=True
        )
    )
    # The trainer's metrics, pushed by the CLI: one registered run, one failed (no such file).
    common_trainer = ["--registry-uri", registry, "--pushgateway-url", pushgateway, "--force"]
    assert trainer_main(["--sample", "breast-cancer", *common_trainer]) == 0
    missing = ["--data-uri", str(root / "missing.csv"), "--target", "diagnosis"]
    assert trainer_main([*missing, "--model-name", MODEL, *common_trainer]) != 0

    fast = ["--drift-min-rows", "20", "--drift-interval-seconds", "1"]
    common = ["--registry-uri", registry, "--model-name", MODEL, *fast]
    logs = root / "logs"
    logs.mkdir()
    control = ServerProcess([*common, "--model-version", "v1"], logs)
    treatment = ServerProcess(
        [*common, "--model-version", "v2", "--fault-error-ratio", "0.5"], logs
    )
    broken = ServerProcess(["--model-dir", str(root / "nowhere"), *fast], logs)
    split = ["--experiment", "it-exp", "--experiment-treatment", "v2", "--experiment-percent", "30"]
    experiment = ServerProcess([*common, "--model-version", "v1", *split], logs)
    servers = [control, treatment, broken, experiment]
    for server in servers:
        server.start()

    port = free_port()
    # The experiment's pods are another namespace: their v1 and v2 are not the canary's.
    places = (("it", "control"), ("it", "treatment"), ("it", "broken"), ("it-exp", "experiment"))
    targets = [
        {"targets": [s.url.removeprefix("http://")], "labels": {"namespace": ns, "pod": pod}}
        for s, (ns, pod) in zip(servers, places, strict=True)
    ]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in RULE_FILES],
        "scrape_configs": [
            {"job_name": "model-serving", "static_configs": targets},
            {
                "job_name": "pushgateway",
                "honor_labels": True,
                "static_configs": [{"targets": [pushgateway.removeprefix("http://")]}],
            },
        ],
    }
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    process = start(
        [
            binary("prometheus"),
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        f"http://127.0.0.1:{port}/-/ready",
        root / "prometheus.log",
    )
    load = threading.Thread(
        target=send_load,
        args=([control, treatment], time.monotonic() + LOAD_SECONDS, experiment),
    )
    load.start()
    prometheus = Prometheus(f"http://127.0.0.1:{port}")
    try:
        load.join(timeout=LOAD_SECONDS + 60)
        # Let scrapes and rule evaluations catch the end of the load.
        prometheus.wait_for('model_version:model_server_requests:rate5m{model_version="v2"}')
        time.sleep(3)
        yield prometheus
    finally:
        load.join(timeout=60)
        prometheus.client.close()
        stop(process)
        for server in servers:
            server.stop()


def test_every_dashboard_query_returns_data(stack: Prometheus) -> None:
    empty = [
        title
        for title, expr in dashboard.expressions()
        if not stack.wait_for(grafana_free(expr), timeout=20)
    ]
    assert empty == []


def test_every_recording_rule_returns_data(stack: Prometheus) -> None:
    records = [r for r in rules() if "record" in r]
    empty = [r["record"] for r in records if not stack.wait_for(r["record"], timeout=20)]
    assert empty == []
    # And their expressions evaluate directly too.
    assert [r["record"] for r in records if not stack.query(r["expr"])] == []


def test_every_alert_condition_answers(stack: Prometheus) -> None:
    alerts = [r for r in rules() if "alert" in r]
    silent = [
        (a["alert"], a["labels"]["severity"])
        for a in alerts
        if not stack.wait_for(as_signal(a["expr"]), timeout=20)
    ]
    assert silent == []


def test_failing_treatment_fires_the_canary_alert_and_control_stays_clean(
    stack: Prometheus,
) -> None:
    canary = next(r for r in rules() if r.get("alert") == "ModelServerCanaryHighErrorRatio")
    firing = stack.wait_for(canary["expr"])
    assert [(s["metric"]["model_name"], s["metric"]["model_version"]) for s in firing] == [
        (MODEL, "v2")
    ]
    ratios = {
        s["metric"]["model_version"]: float(s["value"][1])
        for s in stack.query(
            "model_version:model_server_requests_errors:ratio_rate5m"
            f'{{namespace="it", model_name="{MODEL}"}}'
        )
    }
    assert ratios["v1"] == 0.0
    assert 0.3 < ratios["v2"] < 0.7


def test_experiment_split_and_errors_are_recorded_per_variant(stack: Prometheus) -> None:
    share = stack.wait_for(
        'max by (experiment) (model_server_experiment_treatment_share{namespace="it-exp"})'
    )
    assert [(s["metric"]["experiment"], float(s["value"][1])) for s in share] == [("it-exp", 0.3)]
    errors = stack.wait_for("experiment:model_server_requests_errors:ratio_rate5m")
    assert sorted((s["metric"]["variant"], s["metric"]["model_version"]) for s in errors) == [
        ("control", "v1"),
        ("treatment", "v2"),
    ]
    chi2 = stack.wait_for("experiment:model_server_experiment_sample_ratio:chi2_1h")
    assert len(chi2) == 1
    # 500 user ids split by the hash, not exactly 30%: no mismatch at p < 0.001 either way.
    assert float(chi2[0]["value"][1]) < 10.83


def test_not_ready_server_is_found(stack: Prometheus) -> None:
    rule = next(r for r in rules() if r.get("alert") == "ModelServerNotReady")
    assert [s["metric"]["pod"] for s in stack.wait_for(rule["expr"])] == ["broken"]


# -- Alertmanager ------------------------------------------------------------------------


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    process = start(
        [
            binary("prometheus-alertmanager"),
            f"--config.file={ALERTMANAGER}",
            f"--storage.path={tmp_path}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        f"http://127.0.0.1:{port}/-/ready",
        tmp_path / "alertmanager.log",
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def test_critical_inhibits_the_same_models_warnings(alertmanager: str) -> None:
    def alert(name: str, severity: str, model: str) -> dict[str, Any]:
        labels = {"alertname": name, "severity": severity, "namespace": "it", "model_name": model}
        return {"labels": labels, "annotations": {"summary": name}}

    sent = [
        alert("ModelServerAvailabilityBudgetBurn", "critical", "a"),
        alert("ModelServerFeatureDrift", "warning", "a"),
        alert("ModelServerFeatureDrift", "warning", "b"),
    ]
    with httpx.Client(base_url=alertmanager, timeout=10) as client:
        assert client.post("/api/v2/alerts", json=sent).status_code == 200
        deadline = time.monotonic() + 30
        while True:
            states = {
                (a["labels"]["severity"], a["labels"]["model_name"]): a["status"]
                for a in client.get("/api/v2/alerts").json()
            }
            if len(states) == 3 and states[("warning", "a")]["state"] == "suppressed":
                break
            assert time.monotonic() < deadline, states
            time.sleep(0.5)
    assert states[("critical", "a")]["state"] == "active"
    assert states[("warning", "a")]["inhibitedBy"]
    assert states[("warning", "b")]["state"] == "active"  # another model: not inhibited


# -- the rollout's analysis, on the same evidence ------------------------------------------


def test_rollout_analysis_rolls_back_the_failing_treatment(
    stack: Prometheus, request: pytest.FixtureRequest
) -> None:
    from rollout.decision import Action, Policy, State, decide
    from rollout.prometheus import CustomQuery, measure
    from rollout.prometheus import Prometheus as RolloutPrometheus

    prometheus = RolloutPrometheus(str(stack.client.base_url))
    request.addfinalizer(prometheus.close)
    policy = Policy(min_requests=20, threshold=1)
    business = CustomQuery(
        "treatment answers",
        'sum(increase(model_server_requests_total{model_name="$model", '
        'model_version="$version"}[$window]))',
        min_value=1,
    )
    measured = measure(
        prometheus,
        model=MODEL,
        control="v1",
        treatment="v2",
        window="5m",
        namespace="it",
        custom=(business,),
    )
    assert measured.prometheus_up
    assert measured.control is not None
    assert measured.treatment is not None
    assert measured.control.requests > 50
    assert measured.control.errors == 0
    assert 0.3 < measured.treatment.error_ratio < 0.7
    assert measured.treatment.p95_seconds is not None
    assert measured.control.correct > 0  # feedback counted (targets all "benign")
    assert [c.passed for c in measured.custom] == [True]
    decision = decide(State(step_index=0), measured, policy)
    assert decision.action is Action.ROLLBACK
    assert any(r.startswith("error ratio failed") for r in decision.reasons)

    # The same version on both sides passes every check: the canary steps on.
    same = measure(prometheus, model=MODEL, control="v1", treatment="v1", window="5m")
    assert decide(State(step_index=0), same, policy).action is Action.STEP

    # No series for a version: halt. Prometheus unreachable: halt.
    missing = measure(prometheus, model=MODEL, control="v1", treatment="v9", window="5m")
    assert missing.treatment is None
    assert decide(State(step_index=0), missing, policy).action is Action.HALT
    with RolloutPrometheus(f"http://127.0.0.1:{free_port()}", timeout=2) as unreachable:
        down = measure(unreachable, model=MODEL, control="v1", treatment="v2", window="5m")
    assert not down.prometheus_up
    assert decide(State(step_index=0), down, policy).action is Action.HALT
