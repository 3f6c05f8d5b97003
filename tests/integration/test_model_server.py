"""The real model server, as a process on 127.0.0.1, over HTTP (and with KServe's client)."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

from model_registry import Registry
from prediction_log.ids import time_of
from tests.conftest import training_fill
from tests.integration.server_harness import ServerProcess, metric_samples

pytestmark = pytest.mark.integration

CANCER = "breast-cancer"
ROW = [14.0, 19.0, 91.0, 650.0, 0.096, 0.1, 0.09, 0.05, 0.18, 0.06, 0.4, 1.2, 2.9, 40.0, 0.007,
       0.025, 0.03, 0.011, 0.02, 0.0038, 16.0, 25.0, 107.0, 880.0, 0.13, 0.25, 0.27, 0.11, 0.29,
       0.084]  # fmt: skip
FEATURES = ["mean_radius", "mean_texture", "mean_perimeter", "mean_area", "mean_smoothness",
            "mean_compactness", "mean_concavity", "mean_concave_points", "mean_symmetry",
            "mean_fractal_dimension", "radius_error", "texture_error", "perimeter_error",
            "area_error", "smoothness_error", "compactness_error", "concavity_error",
            "concave_points_error", "symmetry_error", "fractal_dimension_error", "worst_radius",
            "worst_texture", "worst_perimeter", "worst_area", "worst_smoothness",
            "worst_compactness", "worst_concavity", "worst_concave_points", "worst_symmetry",
            "worst_fractal_dimension"]  # fmt: skip


def cancer_args(registry_uri: str, *extra: str) -> list[str]:
    """model-server arguments serving the breast-cancer classifier, plus ``extra``."""
    return ["--registry-uri", registry_uri, "--model-name", CANCER, *extra]


@pytest.fixture(scope="module")
def server(registry_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = cancer_args(registry_uri, "--max-batch-rows", "100")
    with ServerProcess(args, tmp_path_factory.mktemp("logs")) as process:
        yield process


@pytest.fixture(scope="module")
def shop(registry_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = ["--registry-uri", registry_uri, "--model-name", "shop", "--model-version", "latest"]
    with ServerProcess(args, tmp_path_factory.mktemp("logs")) as process:
        yield process


def v2_matrix(
    rows: list[list[Any]], datatype: str = "FP64", name: str = "input-0"
) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": name,
                "shape": [len(rows), len(rows[0]) if rows else 30],
                "datatype": datatype,
                "data": [v for r in rows for v in r],
            }
        ]
    }


# -- readiness, metadata, versions ---------------------------------------------------------


def test_ready_after_load_and_loaded_before_listening(server: ServerProcess) -> None:
    assert server.client.get("/v2/health/ready").json() == {"ready": True}
    assert server.client.get(f"/v2/models/{CANCER}/ready").json() == {"name": CANCER, "ready": True}
    v1 = server.client.get(f"/v1/models/{CANCER}")
    assert v1.json() == {"name": CANCER, "ready": True, "model_version": "v1"}
    log = server.log()
    assert log.index("loaded breast-cancer v1") < log.index("Uvicorn running")


def test_v2_metadata_lists_real_inputs_and_outputs(server: ServerProcess) -> None:
    meta = server.client.get(f"/v2/models/{CANCER}").json()
    assert meta["versions"] == ["v1"]
    assert len(meta["inputs"]) == 30
    assert meta["inputs"][0] == {"name": "mean_radius", "datatype": "FP64", "shape": [-1]}
    assert [o["name"] for o in meta["outputs"]] == ["predict", "predict_proba"]
    assert meta["outputs"][1]["shape"] == [-1, 2]
    assert meta["parameters"]["classes"] == ["benign", "malignant"]


def test_v1_lists_objects_and_probabilities(server: ServerProcess) -> None:
    response = server.post(f"/v1/models/{CANCER}:predict", {"instances": [ROW, ROW]})
    assert response.status_code == 200
    assert response.headers["x-model-version"] == "v1"
    body = response.json()
    assert body["model_version"] == "v1"
    assert body["predictions"] in (["benign"] * 2, ["malignant"] * 2)
    names = server.client.get(f"/v2/models/{CANCER}").json()["inputs"]
    by_name = {n["name"]: v for n, v in zip(names, ROW, strict=True)}
    objects = server.post(
        f"/v1/models/{CANCER}:predict", {"instances": [by_name], "return_probabilities": True}
    ).json()
    assert objects["predictions"] == body["predictions"][:1]
    assert objects["classes"] == ["benign", "malignant"]
    assert sum(objects["probabilities"][0]) == pytest.approx(1.0)


def test_v2_matrix_and_per_feature_tensors_agree(server: ServerProcess) -> None:
    matrix = {
        **v2_matrix([ROW, ROW]),
        "id": "req-7",
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
    }
    response = server.post(f"/v2/models/{CANCER}/infer", matrix)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"]) == (CANCER, "v1", "req-7")
    assert response.headers["x-model-version"] == "v1"
    predict, proba = body["outputs"]
    assert predict["datatype"] == "BYTES"
    assert predict["shape"] == [2]
    assert proba["shape"] == [2, 2]
    names = [i["name"] for i in server.client.get(f"/v2/models/{CANCER}").json()["inputs"]]
    per_feature = {
        "inputs": [
            {"name": n, "shape": [2], "datatype": "FP32", "data": [v, v]}
            for n, v in zip(names, ROW, strict=True)
        ]
    }
    again = server.post(f"/v2/models/{CANCER}/infer", per_feature).json()
    assert again["outputs"][0]["data"] == predict["data"]


def test_request_id_is_echoed_or_generated(server: ServerProcess) -> None:
    given = server.post(
        f"/v1/models/{CANCER}:predict", {"instances": [ROW]}, headers={"x-request-id": "abc-123"}
    )
    assert given.headers["x-request-id"] == "abc-123"
    generated = server.post(f"/v1/models/{CANCER}:predict", {"instances": [ROW]})
    assert time_of(generated.headers["x-request-id"]) is not None  # a UUIDv7 the server made


def test_kserve_rest_client_v1_and_v2(server: ServerProcess) -> None:
    headers: dict[str, str] = {}

    async def call() -> tuple[dict[str, Any], Any]:
        v1 = InferenceRESTClient(RESTConfig(protocol="v1"))
        v2 = InferenceRESTClient(RESTConfig(protocol="v2"))
        try:
            one = await v1.infer(server.url, {"instances": [ROW]}, model_name=CANCER)
            request = InferRequest(
                model_name=CANCER,
                infer_inputs=[InferInput("input-0", [1, 30], "FP64", data=[ROW])],
                request_id="kserve-client",
            )
            two = await v2.infer(server.url, request, model_name=CANCER, response_headers=headers)
            ready = await v2.is_model_ready(server.url, CANCER)
            assert ready
        finally:
            await v1.close()
            await v2.close()
        return one, two

    one, two = asyncio.run(call())
    assert one["model_version"] == "v1"
    # KServe's InferResponse parser drops model_version; the header carries it too.
    assert headers["x-model-version"] == "v1"
    assert two.id == "kserve-client"
    assert two.outputs[0].name == "predict"
    assert two.outputs[0].data == one["predictions"]


def test_regressor_and_categorical_models(shop: ServerProcess, registry_uri: str) -> None:
    rows = [{"x1": 0.5, "x2": 3.0, "color": "red"}, {"x1": -1.0, "x2": 9.0, "color": "violet"}]
    v1 = shop.post("/v1/models/shop:predict", {"instances": rows})
    assert v1.status_code == 200, v1.text
    assert set(v1.json()["predictions"]) <= {"yes", "no"}
    v2 = shop.post(
        "/v2/models/shop/infer",
        {
            "inputs": [
                {"name": "x1", "shape": [2], "datatype": "FP64", "data": [0.5, -1.0]},
                {"name": "x2", "shape": [2], "datatype": "INT64", "data": [3, 9]},
                {"name": "color", "shape": [2], "datatype": "BYTES", "data": ["red", "violet"]},
            ]
        },
    )
    assert v2.status_code == 200, v2.text
    assert v2.json()["outputs"][0]["data"] == v1.json()["predictions"]
    assert Registry(registry_uri).get("shop").version == v2.json()["model_version"]


# -- bad input: every row is a 400 naming the problem, never a 500 ---------------------------

# (name, path, body or raw bytes, extra headers, status, message in the error)
V1 = f"/v1/models/{CANCER}:predict"
V2 = f"/v2/models/{CANCER}/infer"
BAD_INPUTS: list[tuple[str, str, Any, dict[str, str], int, str]] = [
    ("malformed json", V1, b'{"instances": [[1, 2]', {}, 400, "malformed JSON"),
    ("not an object", V1, [1, 2, 3], {}, 400, "must be a JSON object"),
    ("no instances", V1, {"rows": [ROW]}, {}, 400, "missing 'instances'"),
    ("instances not a list", V1, {"instances": "x"}, {}, 400, "'instances' must be a list"),
    ("empty batch", V1, {"instances": []}, {}, 400, "empty batch"),
    ("oversized batch", V1, {"instances": [ROW] * 101}, {}, 400, "limit of 100"),
    (
        "too few features",
        V1,
        {"instances": [ROW[:29]]},
        {},
        400,
        "instance 0 has 29 values; the model takes 30",
    ),
    (
        "too few features: what to send",
        V1,
        {"instances": [ROW[:29]]},
        {},
        400,
        "send one for each, in this order; a value you do not have may be null, which the model "
        "imputes as in training",
    ),
    (
        "too many features",
        V1,
        {"instances": [ROW, [*ROW, 1.0]]},
        {},
        400,
        "instance 1 has 31 values",
    ),
    ("scalar instance", V1, {"instances": [1.0]}, {}, 400, "instance 0 is 1.0"),
    (
        "string value",
        V1,
        {"instances": [["x", *ROW[1:]]]},
        {},
        400,
        "feature 'mean_radius' of instance 0 must be a number, got the string 'x'",
    ),
    (
        "numeric string",
        V1,
        {"instances": [[*ROW[:2], "1.5", *ROW[3:]]]},
        {},
        400,
        "feature 'mean_perimeter' of instance 0 must be a number",
    ),
    ("boolean value", V1, {"instances": [[True, *ROW[1:]]]}, {}, 400, "must be a number, got true"),
    (
        "infinite value",
        V1,
        b'{"instances": [[1e999' + b", 1.0" * 29 + b"]]}",
        {},
        400,
        "number is infinity",
    ),
    ("NaN literal", V1, b'{"instances": [[NaN' + b", 1.0" * 29 + b"]]}", {}, 400, "malformed JSON"),
    (
        "unknown feature name",
        V1,
        {"instances": [{"radius": 1.0}]},
        {},
        400,
        "missing features: mean_radius",
    ),
    (
        "missing feature: what to send",
        V1,
        {"instances": [dict.fromkeys(FEATURES[1:], 1.0)]},
        {},
        400,
        "instance 0 has missing features: mean_radius (send every feature; a value you do not "
        "have may be null, which the model imputes as in training)",
    ),
    (
        "bad probability flag",
        V1,
        {"instances": [ROW], "return_probabilities": "yes"},
        {},
        400,
        "must be true or false",
    ),
    (
        "form content type",
        V1,
        b'{"instances": [[1]]}',
        {"content-type": "application/x-www-form-urlencoded"},  # curl -d: read as JSON
        400,
        "instance 0 has 1 values; the model takes 30 features",
    ),
    ("text content type", V2, b"{}", {"content-type": "text/plain"}, 415, "send application/json"),
    ("v2 no inputs", V2, {"inputs": []}, {}, 400, "'inputs' must be a non-empty list"),
    (
        "v2 wrong width",
        V2,
        {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]},
        {},
        400,
        "has shape [1, 3]; the model takes 30 features",
    ),
    (
        "v2 shape/data mismatch",
        V2,
        {"inputs": [{"name": "x", "shape": [2, 30], "datatype": "FP64", "data": ROW}]},
        {},
        400,
        "has 30 values but its shape [2, 30] needs 60",
    ),
    (
        "v2 bytes for numbers",
        V2,
        v2_matrix([[str(v) for v in ROW]], "BYTES"),
        {},
        400,
        "is numeric: send one of",
    ),
    ("v2 unknown datatype", V2, v2_matrix([ROW], "FP128"), {}, 400, "input 'input-0' is FP128"),
    ("v2 non-integer int", V2, v2_matrix([ROW], "INT64"), {}, 400, "which is not an integer"),
    (
        "v2 missing shape",
        V2,
        {"inputs": [{"name": "x", "datatype": "FP64", "data": ROW}]},
        {},
        400,
        "missing inputs for features: mean_radius",
    ),
    (
        "v2 missing feature tensors",
        V2,
        {"inputs": [{"name": "mean_radius", "shape": [1], "datatype": "FP64", "data": [1.0]}]},
        {},
        400,
        "missing inputs for features: mean_texture",
    ),
    (
        "v2 missing feature tensor: what to send",
        V2,
        {
            "inputs": [
                {"name": n, "shape": [1], "datatype": "FP64", "data": [1.0]} for n in FEATURES[:-1]
            ]
        },
        {},
        400,
        "missing inputs for features: worst_fractal_dimension (send a tensor for every feature; "
        'a value you do not have may be null (NaN in binary data and gRPC contents, "" for a '
        "text feature), which the model imputes as in training)",
    ),
    (
        "v2 unknown output",
        V2,
        {**v2_matrix([ROW]), "outputs": [{"name": "scores"}]},
        {},
        400,
        "unknown output 'scores'; this model has outputs: predict, predict_proba",
    ),
    (
        "v2 empty batch",
        V2,
        {"inputs": [{"name": "x", "shape": [0, 30], "datatype": "FP64", "data": []}]},
        {},
        400,
        "empty batch",
    ),
    ("v2 oversized", V2, v2_matrix([ROW] * 101), {}, 400, "limit of 100"),
    (
        "v2 binary header past the body",
        V2,
        b"{}",
        {"inference-header-content-length": "3"},
        400,
        "Inference-Header-Content-Length is 3 but the body has 2 bytes",
    ),
    (
        "v1 binary extension",
        V1,
        b"{}",
        {"inference-header-content-length": "2"},
        400,
        "binary tensor data is a V2 extension",
    ),
    (
        "unknown model v1",
        "/v1/models/other:predict",
        {"instances": [ROW]},
        {},
        404,
        "model 'other' is not served here",
    ),
    (
        "unknown model v2",
        "/v2/models/other/infer",
        v2_matrix([ROW]),
        {},
        404,
        "model 'other' is not served here",
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "message"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_table(  # noqa: PLR0917 (one parameter per table column)
    server: ServerProcess, path: str, body: Any, headers: dict[str, str], status: int, message: str
) -> None:
    if isinstance(body, bytes):
        sent = {"content-type": "application/json", **headers}
        response = server.client.post(path, content=body, headers=sent)
    else:
        response = server.client.post(path, json=body, headers=headers or None)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert response.headers["x-model-version"] == "v1"


CATEGORICAL_BAD = [
    (
        {"instances": [{"x1": 1.0, "x2": 2.0, "color": 7}]},
        "feature 'color' of instance 0 must be a string (a category), got 7",
    ),
    (
        {
            "inputs": [
                {"name": "x1", "shape": [1], "datatype": "FP64", "data": [1.0]},
                {"name": "x2", "shape": [1], "datatype": "FP64", "data": [1.0]},
                {"name": "color", "shape": [1], "datatype": "FP64", "data": [1.0]},
            ]
        },
        "feature 'color' is categorical: send it as BYTES",
    ),
    (
        {
            "inputs": [
                {"name": "x1", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]},
                {"name": "x2", "shape": [1], "datatype": "FP64", "data": [1.0]},
                {"name": "color", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
            ]
        },
        "input 'x2' has 1 rows but input 'x1' has 2",
    ),
    ({"instances": [[1.0, 2.0, "red"]], "return_probabilities": True, "extra": 1}, None),
]


@pytest.mark.parametrize(("body", "message"), CATEGORICAL_BAD)
def test_categorical_bad_inputs(
    shop: ServerProcess, body: dict[str, Any], message: str | None
) -> None:
    path = "/v1/models/shop:predict" if "instances" in body else "/v2/models/shop/infer"
    response = shop.post(path, body)
    if message is None:  # unknown top-level keys are ignored, as KServe does
        assert response.status_code == 200
        return
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


# -- missing values ----------------------------------------------------------------------------


def test_a_null_for_a_feature_trained_without_missing_values_is_imputed_by_the_pipeline(
    registry_uri: str, tmp_path: Path
) -> None:
    """The breast-cancer model had no missing value in training. Served by the pipeline
    (``--engine sklearn``; ONNX Runtime serves the shop model in test_clients.py), a null (NaN in
    binary data) for any feature is answered 200 over V1 and V2 with what the pipeline answers
    for the row with the training median in its place, and counted per feature."""
    metadata, pipeline = Registry(registry_uri).load_model(CANCER)
    assert not any(f.nullable for f in metadata.features)
    assert metadata.feature_names == FEATURES
    fill = training_fill(pipeline)
    medians = [fill[name] for name in FEATURES]
    rows: list[list[Any]] = [[None, *ROW[1:]], [*ROW[:5], None, *ROW[6:]], [None] * 30]
    imputed = [[medians[i] if v is None else v for i, v in enumerate(r)] for r in rows]
    expected = pipeline.predict_proba(pd.DataFrame(imputed, columns=FEATURES))
    labels = pipeline.classes_.take(np.argmax(expected, axis=1)).tolist()
    with_nan = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype="<f8")
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [3, 30],
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": with_nan.nbytes},
                }
            ]
        }
    )
    binary = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(head)),
    }
    per_feature = {
        "inputs": [
            {"name": n, "shape": [3], "datatype": "FP64", "data": [r[i] for r in rows]}
            for i, n in enumerate(FEATURES)
        ]
    }
    args = cancer_args(registry_uri, "--engine", "sklearn")
    with ServerProcess(args, tmp_path) as process:
        answers = {}
        for form, instances in (
            ("v1-lists", rows),
            ("v1-objects", [dict(zip(FEATURES, r, strict=True)) for r in rows]),
        ):
            reply = process.post(V1, {"instances": instances, "return_probabilities": True})
            assert reply.status_code == 200, reply.text
            answers[form] = (reply.json()["predictions"], reply.json()["probabilities"])
        for form, reply in (
            ("v2-matrix", process.post(V2, v2_matrix(rows))),
            ("v2-per-feature", process.post(V2, per_feature)),
            (
                "v2-binary",
                process.client.post(V2, content=head + with_nan.tobytes(), headers=binary),
            ),
        ):
            assert reply.status_code == 200, reply.text
            predict, proba = reply.json()["outputs"]
            answers[form] = (predict["data"], np.reshape(proba["data"], proba["shape"]))
        text = process.client.get("/metrics").text
    for form, (predicted, probabilities) in answers.items():
        assert predicted == labels, form
        np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-12, err_msg=form)
    counted = {
        dict(labels_)["feature"]: value
        for labels_, value in metric_samples(text, "model_server_missing_values_total").items()
    }
    per_form = {n: 2.0 if n in ("mean_radius", "mean_compactness") else 1.0 for n in FEATURES}
    assert counted == {n: count * len(answers) for n, count in per_form.items()}


# -- failed load, metrics, workers, shutdown ---------------------------------------------------


def test_failed_load_is_not_ready_with_the_reason(registry_uri: str, tmp_path: Path) -> None:
    registry = Registry(registry_uri)
    version_dir = Path(registry.storage.path("diabetes/v1"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.json").write_bytes((version_dir / "metadata.json").read_bytes())
    artifact = (version_dir / "model.skops").read_bytes()
    (broken / "model.skops").write_bytes(artifact[:-10] + b"0123456789")
    with ServerProcess(["--model-dir", str(broken)], tmp_path) as process:
        ready = process.client.get("/v2/health/ready")
        assert ready.status_code == 503
        assert "sha256" in ready.json()["error"]
        predict = process.post("/v1/models/model:predict", {"instances": [[1.0] * 10]})
        assert predict.status_code == 503
        assert "not ready" in predict.json()["error"]
        assert "cannot load model" in process.log()


def test_metrics_count_exactly(registry_uri: str, tmp_path: Path) -> None:
    args = cancer_args(registry_uri)
    with ServerProcess(args, tmp_path) as process:
        for _ in range(3):
            assert process.post(V1, {"instances": [ROW, ROW]}).status_code == 200
        for _ in range(2):
            assert process.post(V2, v2_matrix([ROW] * 5)).status_code == 200
        assert process.post(V1, {"instances": []}).status_code == 400
        process.client.get("/v2/health/ready")
        process.client.get("/metrics")
        text = process.client.get("/metrics").text
    base = (("model_name", CANCER), ("model_version", "v1"))
    requests = metric_samples(text, "model_server_requests_total")
    assert requests == {
        (("code", "200"), *base, ("protocol", "v1")): 3.0,
        (("code", "200"), *base, ("protocol", "v2")): 2.0,
        (("code", "400"), *base, ("protocol", "v1")): 1.0,
    }
    durations = metric_samples(text, "model_server_request_duration_seconds_count")
    assert durations == {(*base, ("protocol", "v1")): 4.0, (*base, ("protocol", "v2")): 2.0}
    assert metric_samples(text, "model_server_inference_duration_seconds_count") == {base: 5.0}
    assert metric_samples(text, "model_server_batch_rows_sum") == {base: 16.0}
    predicted = metric_samples(text, "model_server_predictions_total")
    assert sum(predicted.values()) == 16.0
    info = metric_samples(text, "model_server_model_info")
    [(labels, value)] = info.items()
    assert value == 1.0
    assert dict(labels)["model_version"] == "v1"
    assert dict(labels)["sklearn_version"]
    assert "# TYPE request_predict_seconds histogram" in text  # KServe's own, beside ours
    assert "_created" not in text


def test_metrics_complete_with_two_workers(registry_uri: str, tmp_path: Path) -> None:
    args = cancer_args(registry_uri, "--workers", "2")
    shared = tmp_path / "prometheus"
    env = {"K_REVISION": "breast-cancer-predictor-00002", "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    with ServerProcess(args, tmp_path, env=env, start_timeout=120) as process:
        deadline = time.monotonic() + 60
        while process.client.get("/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        sent = 0

        def one(_: int) -> int:
            # A fresh connection each time, so either worker may accept it.
            return httpx.post(process.url + V1, json={"instances": [ROW]}, timeout=30).status_code

        with ThreadPoolExecutor(8) as pool:
            while len(list(shared.glob("counter_*.db"))) < 2 and sent < 800:
                assert set(pool.map(one, range(40))) == {200}
                sent += 40
        assert len(list(shared.glob("counter_*.db"))) == 2, "both workers should have served"
        for _ in range(6):  # whichever worker answers the scrape, it reports every worker
            text = httpx.get(process.url + "/metrics", timeout=30).text
            assert sum(metric_samples(text, "model_server_requests_total").values()) == sent
            rows = metric_samples(text, "model_server_batch_rows_sum")
            assert sum(rows.values()) == sent
        info = metric_samples(text, "model_server_model_info")
        assert {dict(k)["revision"] for k in info} == {"breast-cancer-predictor-00002"}
    pids = set(re.findall(r"Started server process \[(\d+)\]", process.log()))
    assert len(pids) == 2


def test_sigterm_finishes_in_flight_requests(registry_uri: str, tmp_path: Path) -> None:
    """A request still arriving when SIGTERM lands is answered; then the server exits."""
    args = cancer_args(registry_uri, "--grace-period-seconds", "20")
    process = ServerProcess(args, tmp_path).start()
    body = orjson.dumps({"instances": [ROW] * 50})
    head = (
        f"POST {V1} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", process.port), timeout=30) as conn:
        conn.sendall(head + body[: len(body) // 2])
        time.sleep(0.5)  # the server has parsed the headers: the request is in flight
        process.terminate()
        deadline = time.monotonic() + 10
        while True:  # the server stops accepting new connections...
            try:
                socket.create_connection(("127.0.0.1", process.port), timeout=1).close()
            except OSError:
                break
            assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
            time.sleep(0.1)
        conn.sendall(body[len(body) // 2 :])  # ...but finishes the request it was serving
        response = b""
        while chunk := conn.recv(65536):
            response += chunk
    status_line, _, rest = response.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK", response[:300]
    assert b"x-model-version: v1" in rest
    assert orjson.loads(rest.split(b"\r\n\r\n", 1)[1])["predictions"]
    assert process.process is not None
    assert process.process.wait(timeout=30) == 0, process.log()
    process.client.close()


@pytest.mark.parametrize("model", [CANCER, "diabetes", "shop"])
def test_printed_curl_commands_work(registry_uri: str, tmp_path: Path, model: str) -> None:
    import shlex

    from model_server.examples import curl_commands

    version = "latest"
    metadata = Registry(registry_uri).get(model, version)
    args = ["--registry-uri", registry_uri, "--model-name", model, "--model-version", version]
    with ServerProcess(args, tmp_path) as process:
        for command in curl_commands(metadata, process.url, model):
            words = shlex.split(command)
            assert words[:2] == ["curl", "-s"]
            url, body = words[words.index("-d") - 1], words[words.index("-d") + 1]
            response = httpx.post(url, content=body, headers={"content-type": "application/json"})
            assert response.status_code == 200, response.text
            assert response.json()["model_version"] == metadata.version


def test_fault_injection_fails_the_configured_share_and_adds_latency(
    registry_uri: str, tmp_path: Path
) -> None:
    args = cancer_args(registry_uri, "--fault-error-ratio", "0.3", "--fault-latency-ms", "20")
    with ServerProcess(args, tmp_path) as process:
        sent = 300
        started = time.perf_counter()
        codes = [process.post(V1, {"instances": [ROW]}).status_code for _ in range(sent)]
        elapsed = time.perf_counter() - started
        failed = codes.count(500)
        assert set(codes) == {200, 500}
        assert 0.3 - 0.08 <= failed / sent <= 0.3 + 0.08, failed
        assert elapsed >= sent * 0.020  # every request waited the injected 20 ms
        text = process.client.get("/metrics").text
        assert "FAULT INJECTION IS ON" in process.log()
    requests = metric_samples(text, "model_server_requests_total")
    by_code = {dict(labels)["code"]: value for labels, value in requests.items()}
    assert by_code == {"200": sent - failed, "500": failed}


def test_feedback_counters_match_what_was_sent(registry_uri: str, tmp_path: Path) -> None:
    cancer = cancer_args(registry_uri)
    with ServerProcess(cancer, tmp_path) as process:
        for path in (f"/v1/models/{CANCER}/feedback", f"/v2/models/{CANCER}/feedback"):
            response = process.post(
                path,
                {
                    "model_version": "v1",
                    "predictions": ["benign"] * 5 + ["malignant"] * 2,
                    "targets": ["benign"] * 4 + ["malignant"] * 3,
                },
            )
            assert response.status_code == 200, response.text
            assert response.json() == {
                "model_name": CANCER,
                "model_version": "v1",
                "received": 7,
                "correct": 6,
                "incorrect": 1,
            }
            assert response.headers["x-model-version"] == "v1"
        bad = process.post(
            f"/v1/models/{CANCER}/feedback",
            {"model_version": "v7", "prediction": "benign", "target": "benign"},
        )
        assert bad.status_code == 400
        assert "this server serves 'v1'" in bad.json()["error"]
        text = process.client.get("/metrics").text
    feedback = metric_samples(text, "model_server_feedback_total")
    assert {dict(k)["outcome"]: v for k, v in feedback.items()} == {
        "correct": 12.0,
        "incorrect": 2.0,
    }
    assert sum(metric_samples(text, "model_server_requests_total").values()) == 0  # not inference

    regressor = ["--registry-uri", registry_uri, "--model-name", "diabetes"]
    with ServerProcess(regressor, tmp_path) as process:
        response = process.post(
            "/v2/models/diabetes/feedback",
            {"model_version": "v1", "predictions": [100.0, 150.0], "targets": [110.0, 145.0]},
        )
        assert response.status_code == 200, response.text
        assert response.json()["mean_abs_error"] == pytest.approx(7.5)
        text = process.client.get("/metrics").text
    assert metric_samples(text, "model_server_feedback_abs_error_sum") == {
        (("model_name", "diabetes"), ("model_version", "v1")): 15.0
    }


def provenance_lines(log: str) -> list[dict[str, Any]]:
    lines = [
        line
        for line in log.splitlines()
        if line.startswith('{"time"') and '"type":"prediction"' in line
    ]
    return [orjson.loads(line) for line in lines]


def test_provenance_lines_trace_predictions_to_model_and_data(
    registry_uri: str, tmp_path: Path
) -> None:
    metadata = Registry(registry_uri).get(CANCER, "production")
    args = cancer_args(
        registry_uri, "--prediction-log-sample-rate", "1", "--prediction-log-payloads"
    )
    env = {"K_REVISION": "bc-predictor-00003"}
    with ServerProcess(args, tmp_path, env=env) as process:
        assert (
            process.post(
                V1, {"instances": [ROW, ROW]}, headers={"x-request-id": "trace-1"}
            ).status_code
            == 200
        )
        assert process.post(V2, v2_matrix([ROW])).status_code == 200
        assert process.post(V1, {"instances": []}).status_code == 400
        process.client.get("/v2/health/ready")  # not an inference request: no line
    lines = provenance_lines(process.log())
    assert [line["status"] for line in lines] == [200, 200, 400]
    first = lines[0]
    assert first["request_id"] == "trace-1"
    assert (first["model_name"], first["model_version"]) == (CANCER, "v1")
    assert first["revision"] == "bc-predictor-00003"
    assert first["artifact_sha256"] == metadata.artifact.sha256
    assert first["data_sha256"] == metadata.training.data_sha256
    assert first["git_sha"] == metadata.provenance.git_sha
    assert first["rows"] == 2
    assert first["inputs"] == [ROW, ROW]
    assert first["outputs"]["model_version"] == "v1"
    assert lines[2]["rows"] is None
    assert lines[2]["inputs"] is None


def test_provenance_lines_are_sampled_and_carry_no_payload_by_default(
    registry_uri: str, tmp_path: Path
) -> None:
    args = cancer_args(registry_uri, "--prediction-log-sample-rate", "0.25")
    with ServerProcess(args, tmp_path) as process:
        for _ in range(400):
            assert process.post(V1, {"instances": [ROW]}).status_code == 200
    lines = provenance_lines(process.log())
    assert 100 - 35 <= len(lines) <= 100 + 35
    assert all("inputs" not in line and "outputs" not in line for line in lines)


def test_drift_rises_for_the_shifted_feature_only(registry_uri: str, tmp_path: Path) -> None:
    from trainer.data import load_sample

    features = load_sample("breast-cancer").frame.drop(columns="diagnosis")
    args = cancer_args(
        registry_uri,
        "--drift-window-rows",
        "400",
        "--drift-min-rows",
        "100",
        "--drift-interval-seconds",
        "0.3",
    )

    def drift_scores(process: ServerProcess) -> dict[str, float]:
        time.sleep(1.0)  # let the background task recompute
        text = process.client.get("/metrics").text
        return {
            dict(k)["feature"]: v
            for k, v in metric_samples(text, "model_server_feature_drift_score").items()
        }

    with ServerProcess(args, tmp_path) as process:
        rows = features.sample(400, random_state=1).to_numpy().tolist()
        for start in range(0, 400, 20):
            assert process.post(V1, {"instances": rows[start : start + 20]}).status_code == 200
        calm = drift_scores(process)
        assert set(calm) == {*features.columns, "__prediction__"}
        assert max(calm[name] for name in features.columns) < 0.2, calm

        shifted = features.sample(400, random_state=2).copy()
        shifted["mean_radius"] += 10.0
        rows = shifted.to_numpy().tolist()
        for start in range(0, 400, 20):
            assert process.post(V1, {"instances": rows[start : start + 20]}).status_code == 200
        drifted = drift_scores(process)
    assert drifted["mean_radius"] > 0.2
    assert max(v for k, v in drifted.items() if k not in {"mean_radius", "__prediction__"}) < 0.2


def test_every_response_carries_a_request_id(server: ServerProcess) -> None:
    for method, path in [
        ("GET", "/v2/health/ready"),
        ("GET", "/v2/health/live"),
        ("GET", f"/v2/models/{CANCER}"),
        ("GET", "/metrics"),
        ("GET", "/v2"),
        ("POST", f"/v1/models/{CANCER}/feedback"),
    ]:
        response = server.client.request(method, path, headers={"x-request-id": "rid-9"})
        assert response.headers.get("x-request-id") == "rid-9", path
        fresh = server.client.request(method, path)
        assert time_of(fresh.headers.get("x-request-id", "")) is not None, path


@pytest.mark.parametrize("model", [CANCER, "shop"])
def test_chart_container_args_and_helm_test_smoke(
    registry_uri: str, tmp_path: Path, model: str
) -> None:
    """The chart's predictor arguments (a version directory, as KServe's storage initializer
    leaves it) serve the model, and the ``helm test`` pod's command passes against it."""
    import subprocess
    import sys

    version_dir = Path(registry_uri) / model / "v1"
    args = [f"--model-dir={version_dir}", f"--model-name={model}"]
    with ServerProcess(args, tmp_path) as process:
        smoke = [sys.executable, "-m", "model_server.smoke", f"--url={process.url}"]
        done = subprocess.run(
            [*smoke, f"--model={model}", "--timeout=30"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"ok: {model} v1 answered" in done.stdout
        # An unknown model never becomes ready: exit 3, naming what it saw.
        done = subprocess.run(
            [*smoke, "--model=nope", "--timeout=1"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 3, done.stdout + done.stderr
        assert "never became ready" in done.stderr
        assert "404" in done.stderr
