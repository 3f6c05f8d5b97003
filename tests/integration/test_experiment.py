"""Experiment mode on real processes: one model server with a control and a treatment version
over HTTP (assignment, headers, metrics, outcomes, provenance, readiness), and
``model-rollout experiment rehearse`` with a real Prometheus and locust reaching the decision
the planted lift calls for."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serving_common.experiment import assign, hashed_user
from serving_common.net import free_port
from tests.integration.conftest import start, stop
from trainer.settings import TrainerSettings
from trainer.train import run

pytestmark = pytest.mark.integration
MODEL = "breast-cancer"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = str(tmp_path_factory.mktemp("experiment") / "registry")
    run(TrainerSettings(sample=MODEL, registry_uri=uri, promote=True))
    run(TrainerSettings(sample=MODEL, registry_uri=uri, param={"C": "0.5"}, force=True))
    return uri


GRPC_PORT: dict[str, int] = {}


@pytest.fixture(scope="module")
def server(registry: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    port = free_port()
    GRPC_PORT["port"] = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("experiment-server") / "server.log"
    process = start(
        [
            sys.executable, "-m", "model_server", "--registry-uri", registry,
            "--model-name", MODEL, "--model-version", "v1", "--experiment", "checkout",
            "--experiment-treatment", "v2", "--experiment-percent", "30",
            "--prediction-log-sample-rate", "1", "--host", "127.0.0.1", "--http-port", str(port),
            "--enable-grpc", "--grpc-port", str(GRPC_PORT["port"]),
        ],
        f"{url}/v2/health/live",
        log,
    )  # fmt: skip
    try:
        yield url, log
    finally:
        stop(process)


def post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.load(error)


def ready(url: str) -> None:
    import time

    for _ in range(300):
        try:
            with urllib.request.urlopen(f"{url}/v2/models/{MODEL}/ready", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise AssertionError("the experiment server never became ready")


def inputs(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/v2/models/{MODEL}", timeout=5) as response:
        meta = json.load(response)
    assert meta["versions"] == ["v1", "v2"]
    return {
        "inputs": [
            {"name": i["name"], "datatype": "FP64", "shape": [1], "data": [1.0]}
            for i in meta["inputs"]
        ]
    }


def test_each_user_stays_in_one_variant_and_outcomes_are_counted(
    server: tuple[str, Path],
) -> None:
    url, log = server
    ready(url)
    body = inputs(url)
    users = [f"member-{i}" for i in range(40)]
    seen: dict[str, set[str]] = {u: set() for u in users}
    for _ in range(2):
        for user in users:
            status, headers, answer = post(
                f"{url}/v2/models/{MODEL}/infer", body, {"x-user-id": user}
            )
            assert status == 200, answer
            assert headers["x-experiment"] == "checkout"
            variant = headers["x-experiment-variant"]
            assert variant == assign(user, "checkout", 30)  # the same hash as the analysis
            version = {"control": "v1", "treatment": "v2"}[variant]
            assert headers["x-model-version"] == answer["model_version"] == version
            seen[user].add(variant)
    assert all(len(v) == 1 for v in seen.values())
    # The key as a V1 parameter, and V1 answers say the version too.
    user = users[0]
    status, headers, answer = post(
        f"{url}/v1/models/{MODEL}:predict",
        {"instances": [[1.0] * len(body["inputs"])], "parameters": {"user_id": user}},
    )
    assert status == 200, answer
    assert headers["x-experiment-variant"] == assign(user, "checkout", 30)
    # No key: the control answers, unassigned.
    status, headers, answer = post(f"{url}/v2/models/{MODEL}/infer", body)
    assert (status, headers["x-experiment-variant"], answer["model_version"]) == (
        200,
        "control",
        "v1",
    )

    outcomes = [{"user_id": u, "converted": i % 2 == 0} for i, u in enumerate(users)]
    status, _, answer = post(
        f"{url}/v2/models/{MODEL}/feedback", {"experiment": "checkout", "outcomes": outcomes}
    )
    assert status == 200, answer
    treated = [u for u in users if assign(u, "checkout", 30) == "treatment"]
    assert answer["received"] == 40
    counted = answer["variants"]["treatment"]
    assert counted["successes"] + counted["failures"] == len(treated)
    # True labels: the accuracy feedback of the variant's version; one bad label counts none.
    labels = {"experiment": "checkout", "outcomes": [
        {"variant": "treatment", "prediction": "benign", "target": "benign"},
        {"variant": "control", "prediction": "benign", "target": "malignant"},
    ]}  # fmt: skip
    status, _, answer = post(f"{url}/v2/models/{MODEL}/feedback", labels)
    assert status == 200, answer
    assert answer["variants"]["treatment"]["labels"] == 1
    bad = {"experiment": "checkout", "outcomes": [
        {"variant": "treatment", "prediction": "benign", "target": "benign"},
        {"variant": "control", "prediction": "benign", "target": "cat"},
    ]}  # fmt: skip
    status, _, answer = post(f"{url}/v2/models/{MODEL}/feedback", bad)
    assert status == 400
    assert "'cat'" in answer["error"]
    status, _, answer = post(
        f"{url}/v2/models/{MODEL}/feedback", {"experiment": "other", "outcomes": outcomes}
    )
    assert status == 400
    assert "runs 'checkout'" in answer["error"]

    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    exposures = {
        line.split('variant="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("model_server_experiment_exposures_total{")
    }
    first = assign(users[0], "checkout", 30)  # its V1 request counts too; no key does not
    assert exposures == {
        "control": 2 * (40 - len(treated)) + (first == "control"),
        "treatment": 2 * len(treated) + (first == "treatment"),
    }
    assert 'model_server_experiment_unassigned_total{experiment="checkout"' in metrics
    feedback = {
        (line.split('model_version="')[1][:2], line.split('outcome="')[1].split('"')[0]): float(
            line.rsplit(" ", 1)[1]
        )
        for line in metrics.splitlines()
        if line.startswith("model_server_feedback_total{")
    }
    assert feedback == {("v2", "correct"): 1.0, ("v1", "incorrect"): 1.0}
    assert (
        'model_server_experiment_treatment_share{control_version="v1",experiment="checkout",'
        'model_name="breast-cancer",treatment_version="v2"} 0.3' in metrics
    )
    lines = [json.loads(x) for x in log.read_text().splitlines() if '"type":"prediction"' in x]
    assigned = [x for x in lines if x.get("user_hash")]
    assert assigned
    assert {x["user_hash"] for x in assigned} <= {hashed_user(u, "checkout") for u in users}
    assert not any(u in log.read_text() for u in users)  # raw keys are never logged


def rehearse_lines(registry: str, *extra: str) -> tuple[int, list[dict[str, Any]], str]:
    """``experiment rehearse`` run as a user would: from the directory holding the registry
    (outside the repository), naming it relatively."""
    where = Path(registry).parent
    assert not where.resolve().is_relative_to(Path(__file__).resolve().parents[2])
    command = [
        sys.executable, "-m", "rollout", "experiment", "rehearse",
        "--registry-uri", f"./{Path(registry).name}",
        "--control", "v1", "--treatment", "v2", "--users", "6", "--max-seconds", "60",
        "--max-outcomes", "5000", "-o", "json", *extra,
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=150, check=False, cwd=where
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return done.returncode, lines, done.stderr


def rehearse(registry: str, *extra: str) -> tuple[int, dict[str, Any]]:
    code, lines, err = rehearse_lines(registry, *extra)
    assert lines, err
    return code, lines[-1]


def test_rehearsal_ships_a_real_lift(registry: str) -> None:
    code, report = rehearse(registry, "--lift", "0.6")
    assert (code, report["decision"]) == (0, "ship"), report
    assert report["treatment"]["rate"] > report["control"]["rate"]
    assert report["always_valid_p_value"] <= 0.05
    assert not report["sample_ratio"]["mismatch"]


def test_rehearsal_keeps_running_without_a_lift_and_rolls_back_a_harm(registry: str) -> None:
    code, lines, err = rehearse_lines(
        registry, "--lift", "0", "--max-outcomes", "3000", "--experiment-alpha", "0.01"
    )
    report = lines[-1]
    # No lift: mSPRT stops wrongly in at most alpha (1% here) of experiments (simulated in
    # tests/unit), however often it looks.
    assert (code, report["decision"]) == (4, "keep-running"), (report, err)
    assert report["control"]["outcomes"] + report["treatment"]["outcomes"] >= 3000
    stopped = lines[-2]  # why it stopped without a decision, before the report
    assert stopped["event"] == "stopped"
    assert stopped["message"].startswith("reached --max-outcomes 3000 (")
    assert stopped["message"].endswith(
        "without a decision; an A/A experiment (--lift 0) is expected to keep running"
    )
    code, report = rehearse(registry, "--lift", "-0.6", "--percent", "40")
    assert (code, report["decision"]) == (3, "rollback"), report


def test_a_rehearsal_of_a_missing_version_fails_at_once_naming_the_versions(
    registry: str,
) -> None:
    code, lines, err = rehearse_lines(registry, "--control", "production", "--treatment", "v7")
    assert (code, lines) == (2, [])
    assert err == (
        f"model-rollout: error: --treatment v7: model 'breast-cancer' has no version v7 in "
        f"{Path(registry).resolve()}; it has v1, v2\n"
    )


def test_grpc_assigns_by_the_same_user_key_in_metadata(server: tuple[str, Path]) -> None:
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    url, _ = server
    ready(url)
    features = len(inputs(url)["inputs"])
    request = pb.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=[1, features])
    tensor.contents.fp64_contents.extend([1.0] * features)
    with grpc.insecure_channel(f"127.0.0.1:{GRPC_PORT['port']}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for user in (f"member-{i}" for i in range(12)):
            response, call = stub.ModelInfer.with_call(request, metadata=(("x-user-id", user),))
            trailing = dict(call.trailing_metadata())
            variant = assign(user, "checkout", 30)
            assert trailing["x-experiment-variant"] == variant
            assert response.model_version == {"control": "v1", "treatment": "v2"}[variant]
            assert trailing["x-model-version"] == response.model_version


def test_a_treatment_that_cannot_load_keeps_the_server_not_ready(
    registry: str, tmp_path: Path
) -> None:
    port, grpc_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    process = start(
        [
            sys.executable, "-m", "model_server", "--registry-uri", registry,
            "--model-name", MODEL, "--model-version", "v1", "--experiment", "checkout",
            "--experiment-treatment", "v9", "--load-retry-initial-seconds", "30",
            "--host", "127.0.0.1", "--http-port", str(port),
            "--enable-grpc", "--grpc-port", str(grpc_port),
        ],
        f"{url}/v2/health/live",
        tmp_path / "server.log",
    )  # fmt: skip
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/v2/health/ready", timeout=5)
        assert refused.value.code == 503
        reason = json.load(refused.value)["error"]
        assert "the experiment's treatment is not ready" in reason
        assert "v9" in reason
        status, _, answer = post(f"{url}/v2/models/{MODEL}/infer", {"inputs": []})
        assert status == 503
        assert "treatment" in answer["error"]
        import grpc
        from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
        from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert not stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
            assert not stub.ModelReady(pb.ModelReadyRequest(name=MODEL), timeout=10).ready
    finally:
        stop(process)


def test_two_workers_assign_alike_and_count_every_exposure(registry: str, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start(
        [
            sys.executable, "-m", "model_server", "--registry-uri", registry,
            "--model-name", MODEL, "--model-version", "v1", "--experiment", "checkout",
            "--experiment-treatment", "v2", "--workers", "2", "--no-drift",
            "--host", "127.0.0.1", "--http-port", str(port),
        ],
        f"{url}/v2/health/live",
        tmp_path / "server.log",
    )  # fmt: skip
    try:
        ready(url)
        body = inputs(url)
        users = [f"member-{i}" for i in range(20)]
        for _ in range(3):  # new connections each time: both workers answer
            for user in users:
                status, headers, _ = post(
                    f"{url}/v2/models/{MODEL}/infer", body, {"x-user-id": user}
                )
                assert status == 200
                assert headers["x-experiment-variant"] == assign(user, "checkout", 50)
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        counted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("model_server_experiment_exposures_total{")
        )
        assert counted == 60
    finally:
        stop(process)
