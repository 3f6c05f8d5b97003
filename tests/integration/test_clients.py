"""The Open Inference Protocol as clients see it: a conformance table over REST and gRPC, and
the standard client libraries on their defaults, against real model-server processes.

Spec texts checked: the Open Inference Protocol's REST and gRPC specifications (KServe's
``open-inference-protocol`` repository: all outputs when ``outputs`` is absent, the optional
``/versions/V/`` paths, ``{"error": ...}`` bodies, metadata fields), KServe's
``grpc_predict_v2.proto`` (``raw_input_contents``: one entry per input, no typed contents
alongside) and Triton's binary tensor data extension (``binary_data_size``, ``binary_data``,
``binary_data_output``, ``Inference-Header-Content-Length``).
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from model_registry import Registry
from serving_common.net import free_port
from tests.conftest import training_fill
from tests.integration.server_harness import ServerProcess, metric_samples

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CANCER = "breast-cancer"
ROW = [14.0, 19.0, 91.0, 650.0, 0.096, 0.1, 0.09, 0.05, 0.18, 0.06, 0.4, 1.2, 2.9, 40.0, 0.007,
       0.025, 0.03, 0.011, 0.02, 0.0038, 16.0, 25.0, 107.0, 880.0, 0.13, 0.25, 0.27, 0.11, 0.29,
       0.084]  # fmt: skip


class Served(ServerProcess):
    """A model-server with gRPC on on a second free port."""

    def __init__(self, args: list[str], log_dir: Path, **kwargs: Any) -> None:
        self.grpc_port = free_port()
        super().__init__(
            [*args, "--enable-grpc", "--grpc-port", str(self.grpc_port)], log_dir, **kwargs
        )
        self.grpc_address = f"127.0.0.1:{self.grpc_port}"

    def stub(self) -> tuple[grpc.Channel, pb_grpc.GRPCInferenceServiceStub]:
        channel = grpc.insecure_channel(self.grpc_address)
        grpc.channel_ready_future(channel).result(timeout=30)
        return channel, pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def cancer(registry_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    args = ["--registry-uri", registry_uri, "--model-name", CANCER, "--max-batch-rows", "5000"]
    with Served(args, tmp_path_factory.mktemp("logs")) as process:
        yield process


@pytest.fixture(scope="module")
def shop(registry_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    args = ["--registry-uri", registry_uri, "--model-name", "shop", "--model-version", "latest"]
    with Served(args, tmp_path_factory.mktemp("logs")) as process:
        yield process


def matrix(rows: list[list[float]], datatype: str = "FP64") -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "input-0",
                "shape": [len(rows), len(rows[0])],
                "datatype": datatype,
                "data": [v for r in rows for v in r],
            }
        ]
    }


def binary_body(rows: np.ndarray[Any, Any], **header: Any) -> tuple[bytes, dict[str, str]]:
    """A binary-extension request: JSON header, then the FP64 matrix's bytes."""
    blob = rows.astype("<f8").tobytes()
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": list(rows.shape),
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": len(blob)},
                }
            ],
            **header,
        }
    )
    headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(head)),
    }
    return head + blob, headers


def bomb() -> bytes:
    """A gzip body of ~100 KB that inflates to 256 MB of spaces."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = b" " * (1 << 20)
    return b"".join([packer.compress(chunk) for _ in range(256)]) + packer.flush()


INFER = f"/v2/models/{CANCER}/infer"
PREDICT = f"/v1/models/{CANCER}:predict"
JSON_ROW = orjson.dumps({"instances": [ROW]})

# (case, method, path, headers, body, status, check: error substring or a body predicate)
REST_TABLE: list[tuple[str, str, str, dict[str, str], bytes | None, int, Any]] = [
    ("server metadata", "GET", "/v2", {}, None, 200,
     lambda b: (b["name"], b["extensions"]) == ("model-server", ["binary_tensor_data"])),
    ("live", "GET", "/v2/health/live", {}, None, 200, lambda b: b["live"] is True),
    ("ready", "GET", "/v2/health/ready", {}, None, 200, lambda b: b["ready"] is True),
    ("model ready", "GET", f"/v2/models/{CANCER}/ready", {}, None, 200, lambda b: b["ready"]),
    ("version ready", "GET", f"/v2/models/{CANCER}/versions/v1/ready", {}, None, 200,
     lambda b: b["ready"]),
    ("version metadata", "GET", f"/v2/models/{CANCER}/versions/v1", {}, None, 200,
     lambda b: b["versions"] == ["v1"] and b["platform"] == "sklearn"),
    ("other version", "GET", f"/v2/models/{CANCER}/versions/v2", {}, None, 404,
     "version 'v2' of 'breast-cancer' is not served here"),
    ("other version infer", "POST", f"/v2/models/{CANCER}/versions/v7/infer", {},
     orjson.dumps(matrix([ROW])), 404, "version 'v7'"),
    ("version infer", "POST", f"/v2/models/{CANCER}/versions/v1/infer", {},
     orjson.dumps(matrix([ROW])), 200, lambda b: b["model_version"] == "v1"),
    ("unknown model", "GET", "/v2/models/other", {}, None, 404, "model 'other' is not served"),
    ("v1 model", "GET", f"/v1/models/{CANCER}", {}, None, 200, lambda b: b["ready"]),
    ("all outputs by default", "POST", INFER, {}, orjson.dumps(matrix([ROW])), 200,
     lambda b: [o["name"] for o in b["outputs"]] == ["predict", "predict_proba"]),
    ("exactly the named output", "POST", INFER, {},
     orjson.dumps({**matrix([ROW]), "outputs": [{"name": "predict_proba"}]}), 200,
     lambda b: [o["name"] for o in b["outputs"]] == ["predict_proba"]),
    ("scalar parameters only", "POST", INFER, {}, orjson.dumps(matrix([ROW])), 200,
     lambda b: all(
         not isinstance(v, list | dict)
         for o in b["outputs"]
         for v in o.get("parameters", {}).values()
     )),
    ("id echoed", "POST", INFER, {}, orjson.dumps({**matrix([ROW]), "id": "r-42"}), 200,
     lambda b: b["id"] == "r-42"),
    ("header is the whole body", "POST", INFER,
     {"inference-header-content-length": str(len(orjson.dumps(matrix([ROW]))))},
     orjson.dumps(matrix([ROW])), 200, lambda b: b["model_version"] == "v1"),
    ("V1 inputs like instances", "POST", PREDICT, {}, orjson.dumps({"inputs": [ROW]}), 200,
     lambda b: len(b["predictions"]) == 1),
    ("curl -d form body read as JSON", "POST", PREDICT,
     {"content-type": "application/x-www-form-urlencoded"}, JSON_ROW, 200,
     lambda b: b["model_version"] == "v1"),
    ("gzip body", "POST", PREDICT, {"content-encoding": "gzip"}, gzip.compress(JSON_ROW), 200,
     lambda b: len(b["predictions"]) == 1),
    ("deflate body", "POST", PREDICT, {"content-encoding": "deflate"}, zlib.compress(JSON_ROW),
     200, lambda b: len(b["predictions"]) == 1),
    ("zip bomb", "POST", PREDICT, {"content-encoding": "gzip"}, bomb(), 413,
     "inflates past the limit"),
    ("broken gzip", "POST", PREDICT, {"content-encoding": "gzip"}, b"\x1f\x8b nope", 400,
     "not valid gzip data"),
    ("unknown encoding", "POST", PREDICT, {"content-encoding": "br"}, JSON_ROW, 415,
     "content encoding 'br' is not supported"),
    ("unsupported media type", "POST", INFER, {"content-type": "text/csv"}, b"1,2", 415,
     "content type 'text/csv' is not supported"),
    ("UINT8 range", "POST", INFER, {}, orjson.dumps(matrix([[-5] * 30], "UINT8")), 400,
     "UINT8 (values 0 to 255) but holds -5"),
    ("1-D tensor of all features", "POST", INFER, {},
     orjson.dumps({"inputs": [{"name": "x", "shape": [30], "datatype": "FP64", "data": ROW}]}),
     400, "Send one row as shape [1, 30]"),
    ("binary size mismatch", "POST", INFER,
     {"content-type": "application/octet-stream", "inference-header-content-length": "0"},
     b"", 400, "Inference-Header-Content-Length is 0"),
    ("explain", "POST", f"/v1/models/{CANCER}:explain", {}, JSON_ROW, 501,
     "this server has no explainer"),
    ("GET :predict", "GET", PREDICT, {}, None, 405, "use POST for :predict"),
    ("wrong method", "DELETE", f"/v2/models/{CANCER}", {}, None, 405,
     "DELETE is not allowed"),
    ("unknown path", "GET", "/v3/everything", {}, None, 404, "no such endpoint"),
    ("repository index off", "POST", "/v2/repository/index", {}, b"{}", 404,
     "model repository extension is off"),
    ("repository load off", "POST", f"/v2/repository/models/{CANCER}/load", {}, b"", 404,
     "model repository extension is off"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "check"),
    [case[1:] for case in REST_TABLE],
    ids=[case[0] for case in REST_TABLE],
)
def test_rest_conformance(  # noqa: PLR0917 (one parameter per table column)
    cancer: Served,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None,
    status: int,
    check: Any,
) -> None:
    sent = {"content-type": "application/json", **headers} if body is not None else headers
    response = cancer.client.request(method, path, content=body, headers=sent)
    assert response.status_code == status, response.text
    assert response.headers["x-model-version"] == "v1"
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    if isinstance(check, str):
        assert set(document) == {"error"}, document
        assert check in document["error"]
    else:
        assert check(document), document


def test_unload_is_refused_and_the_model_keeps_serving(cancer: Served) -> None:
    response = cancer.client.post(f"/v2/repository/models/{CANCER}/unload")
    assert response.status_code == 404
    assert "--enable-model-repository" in response.json()["error"]
    assert cancer.client.get("/v2/health/ready").status_code == 200
    assert cancer.client.post(PREDICT, content=JSON_ROW).status_code == 200
    _, stub = cancer.stub()
    with pytest.raises(grpc.RpcError) as error:
        stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name=CANCER))
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert stub.ServerReady(pb.ServerReadyRequest()).ready


def test_the_repository_extension_when_turned_on(registry_uri: str, tmp_path: Path) -> None:
    args = ["--registry-uri", registry_uri, "--model-name", CANCER, "--enable-model-repository"]
    with ServerProcess(args, tmp_path) as server:
        assert "model_repository" in server.client.get("/v2").json()["extensions"]
        index = server.client.post("/v2/repository/index").json()
        assert index == [{"name": CANCER, "version": "v1", "state": "READY", "reason": ""}]
        assert server.client.post(f"/v2/repository/models/{CANCER}/unload").status_code == 200
        assert server.client.get("/v2/health/ready").status_code == 503
        assert server.client.post(PREDICT, content=JSON_ROW).status_code == 503
        assert server.client.post(f"/v2/repository/models/{CANCER}/load").status_code == 200
        assert server.client.get("/v2/health/ready").status_code == 200
        assert server.client.post(PREDICT, content=JSON_ROW).status_code == 200


def test_binary_requests_and_responses(cancer: Served) -> None:
    rows = np.array([ROW, [v * 1.1 for v in ROW]])
    expected = cancer.post(INFER, matrix(rows.tolist())).json()["outputs"]
    # Binary in, JSON out.
    body, headers = binary_body(rows)
    response = cancer.client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"] == expected
    # Binary in, binary out for everything (tritonclient's default).
    body, headers = binary_body(rows, parameters={"binary_data_output": True})
    response = cancer.client.post(INFER, content=body, headers=headers)
    length = int(response.headers["inference-header-content-length"])
    assert response.headers["content-type"] == "application/octet-stream"
    header = orjson.loads(response.content[:length])
    predict, proba = header["outputs"]
    assert "data" not in predict
    assert "data" not in proba
    payload = response.content[length:]
    labels_size = predict["parameters"]["binary_data_size"]
    labels, offset = [], 0
    while offset < labels_size:
        size = int.from_bytes(payload[offset : offset + 4], "little")
        labels.append(payload[offset + 4 : offset + 4 + size].decode())
        offset += 4 + size
    assert labels == expected[0]["data"]
    assert np.frombuffer(payload[labels_size:], "<f8").tolist() == expected[1]["data"]
    # One output in binary, the other in JSON.
    body, headers = binary_body(
        rows,
        outputs=[
            {"name": "predict"},
            {"name": "predict_proba", "parameters": {"binary_data": True}},
        ],
    )
    response = cancer.client.post(INFER, content=body, headers=headers)
    length = int(response.headers["inference-header-content-length"])
    header = orjson.loads(response.content[:length])
    assert header["outputs"][0]["data"] == expected[0]["data"]
    assert np.frombuffer(response.content[length:], "<f8").tolist() == expected[1]["data"]


def test_binary_bytes_that_do_not_match_are_named(cancer: Served) -> None:
    body, headers = binary_body(np.array([ROW]))
    response = cancer.client.post(INFER, content=body[:-8], headers=headers)
    assert response.status_code == 400
    assert "says binary_data_size 240 but only 232 bytes" in response.json()["error"]
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [1, 30],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 240},
                }
            ]
        }
    )
    headers["inference-header-content-length"] = str(len(head))
    response = cancer.client.post(INFER, content=head + body[-240:], headers=headers)
    assert response.status_code == 400
    assert "has 240 bytes of binary data but shape [1, 30] of FP32 needs 120" in response.text


def test_large_responses_are_gzipped_when_the_client_accepts_it(cancer: Served) -> None:
    rows = (np.array([ROW] * 5000) * np.linspace(0.8, 1.2, 5000)[:, None]).tolist()
    body = orjson.dumps(matrix(rows))
    plain = cancer.client.post(INFER, content=body, headers={"accept-encoding": "identity"})
    packed = cancer.client.post(INFER, content=body, headers={"accept-encoding": "gzip"})
    assert plain.status_code == packed.status_code == 200
    assert "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip"
    assert int(packed.headers["content-length"]) < len(plain.content) / 2
    assert packed.json() == plain.json()  # httpx inflates it
    small = cancer.client.post(PREDICT, content=JSON_ROW, headers={"accept-encoding": "gzip"})
    assert "content-encoding" not in small.headers  # not worth it below 64 KiB


# -- gRPC ------------------------------------------------------------------------------------


def grpc_matrix(rows: list[list[float]], raw: bool) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=CANCER, id="g-1")
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=[len(rows), len(rows[0])])
    flat = [v for r in rows for v in r]
    if raw:
        request.raw_input_contents.append(np.array(flat, "<f8").tobytes())
    else:
        tensor.contents.fp64_contents.extend(flat)
    return request


def test_grpc_metadata_is_the_rest_metadata(cancer: Served) -> None:
    _, stub = cancer.stub()
    rest = cancer.client.get(f"/v2/models/{CANCER}").json()
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=CANCER))
    as_rest = {
        "name": meta.name,
        "versions": list(meta.versions),
        "platform": meta.platform,
        "inputs": [
            {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in meta.inputs
        ],
        "outputs": [
            {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in meta.outputs
        ],
    }
    assert as_rest == {k: rest[k] for k in as_rest}
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ModelReady(pb.ModelReadyRequest(name=CANCER, version="v1")).ready
    server = stub.ServerMetadata(pb.ServerMetadataRequest())
    assert (server.name, list(server.extensions)) == ("model-server", ["binary_tensor_data"])


def test_grpc_typed_and_raw_contents_answer_as_rest_does(cancer: Served) -> None:
    rows = [ROW, [v * 0.9 for v in ROW]]
    rest = cancer.post(INFER, matrix(rows)).json()
    _, stub = cancer.stub()
    for raw in (False, True):
        response, call = stub.ModelInfer.with_call(
            grpc_matrix(rows, raw), metadata=(("x-request-id", "trace-7"),)
        )
        assert (response.model_name, response.model_version, response.id) == (CANCER, "v1", "g-1")
        assert dict(call.trailing_metadata())["x-request-id"] == "trace-7"
        assert dict(call.trailing_metadata())["x-model-version"] == "v1"
        names = [o.name for o in response.outputs]
        assert names == ["predict", "predict_proba"]
        proba = np.frombuffer(response.raw_output_contents[1], "<f8")
        assert proba.tolist() == rest["outputs"][1]["data"]
        assert list(response.outputs[1].shape) == [2, 2]


def test_grpc_categorical_bytes_contents(shop: Served) -> None:
    rest = shop.post(
        "/v2/models/shop/infer",
        {
            "inputs": [
                {"name": "x1", "shape": [2], "datatype": "FP64", "data": [0.5, -1.0]},
                {"name": "x2", "shape": [2], "datatype": "FP64", "data": [3.0, 7.0]},
                {"name": "color", "shape": [2], "datatype": "BYTES", "data": ["red", "blue"]},
            ]
        },
    ).json()
    request = pb.ModelInferRequest(model_name="shop")
    request.inputs.add(name="x1", datatype="FP64", shape=[2]).contents.fp64_contents.extend(
        [0.5, -1.0]
    )
    request.inputs.add(name="x2", datatype="INT64", shape=[2]).contents.int64_contents.extend(
        [3, 7]
    )
    request.inputs.add(name="color", datatype="BYTES", shape=[2]).contents.bytes_contents.extend(
        [b"red", b"blue"]
    )
    _, stub = shop.stub()
    response = stub.ModelInfer(request)
    proba = np.frombuffer(response.raw_output_contents[1], "<f8").tolist()
    assert proba == rest["outputs"][1]["data"]


# -- a missing value for a feature trained without any: imputed in every encoding ----------

SHOP_MISSING: list[dict[str, Any]] = [
    {"x1": None, "x2": 3.0, "color": "red"},
    {"x1": 0.5, "x2": None, "color": None},
    {"x1": None, "x2": None, "color": None},
]
"""Rows with missing values; the shop model was trained without any (every feature)."""


def _imputed(pipeline: Any, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """``rows`` with each missing value filled in as training's imputers fill it: the median of
    a number, the most frequent category."""
    fill = training_fill(pipeline)
    return pd.DataFrame([{k: fill[k] if v is None else v for k, v in r.items()} for r in rows])


def _shop_tensors(rows: list[dict[str, Any]]) -> list[tuple[str, str, np.ndarray[Any, Any]]]:
    """Binary data and gRPC have no null: a missing number is NaN, a missing category ``""``."""
    return [
        ("x1", "FP64", np.array([np.nan if r["x1"] is None else r["x1"] for r in rows])),
        ("x2", "FP64", np.array([np.nan if r["x2"] is None else r["x2"] for r in rows])),
        ("color", "BYTES", np.array([r["color"] or "" for r in rows], dtype=object)),
    ]


def _shop_answers(shop: Served, rows: list[dict[str, Any]]) -> dict[str, tuple[Any, Any]]:
    """(labels, probabilities) for ``rows`` over V1 objects and lists, V2 JSON and binary, and
    gRPC raw and typed contents."""
    from kserve import InferInput, InferRequest

    answers: dict[str, tuple[Any, Any]] = {}
    for form, instances in (
        ("v1-objects", rows),
        ("v1-lists", [[r["x1"], r["x2"], r["color"]] for r in rows]),
    ):
        reply = shop.post(
            "/v1/models/shop:predict", {"instances": instances, "return_probabilities": True}
        )
        assert reply.status_code == 200, reply.text
        answers[form] = (reply.json()["predictions"], reply.json()["probabilities"])
    names = [("x1", "FP64"), ("x2", "FP64"), ("color", "BYTES")]
    v2 = {
        "inputs": [
            {"name": n, "datatype": d, "shape": [len(rows)], "data": [r[n] for r in rows]}
            for n, d in names
        ]
    }
    reply = shop.post("/v2/models/shop/infer", v2)
    assert reply.status_code == 200, reply.text
    predict, proba = reply.json()["outputs"]
    answers["v2-json"] = (predict["data"], np.reshape(proba["data"], proba["shape"]))
    inputs = []
    for name, datatype, array in _shop_tensors(rows):
        tensor = InferInput(name, [len(rows)], datatype)
        tensor.set_data_from_numpy(array, binary_data=True)
        inputs.append(tensor)
    request = InferRequest(model_name="shop", infer_inputs=inputs)
    body, length = request.to_rest()
    assert isinstance(body, bytes)
    reply = shop.client.post(
        "/v2/models/shop/infer",
        content=body,
        headers={
            "content-type": "application/octet-stream",
            "inference-header-content-length": str(length),
        },
    )
    assert reply.status_code == 200, reply.text
    predict, proba = reply.json()["outputs"]
    answers["v2-binary"] = (predict["data"], np.reshape(proba["data"], proba["shape"]))
    _, stub = shop.stub()
    for raw in (True, False):
        message = pb.ModelInferRequest(model_name="shop")
        for name, datatype, array in _shop_tensors(rows):
            tensor = message.inputs.add(name=name, datatype=datatype, shape=[len(rows)])
            if datatype == "BYTES":
                encoded = [v.encode() for v in array]
                if raw:
                    message.raw_input_contents.append(
                        b"".join(len(v).to_bytes(4, "little") + v for v in encoded)
                    )
                else:
                    tensor.contents.bytes_contents.extend(encoded)
            elif raw:
                message.raw_input_contents.append(array.astype("<f8").tobytes())
            else:
                tensor.contents.fp64_contents.extend(array.tolist())
        response = stub.ModelInfer(message)
        labels = [v.decode() for v in _bytes_elements(response.raw_output_contents[0], len(rows))]
        probabilities = np.frombuffer(response.raw_output_contents[1], "<f8").reshape(-1, 2)
        answers["grpc-raw" if raw else "grpc-typed"] = (labels, probabilities)
    return answers


def _bytes_elements(blob: bytes, count: int) -> list[bytes]:
    """A BYTES tensor's elements, each after its 4-byte little-endian length."""
    elements, at = [], 0
    for _ in range(count):
        size = int.from_bytes(blob[at : at + 4], "little")
        elements.append(blob[at + 4 : at + 4 + size])
        at += 4 + size
    return elements


def test_a_null_for_a_feature_trained_without_missing_values_is_imputed_in_every_encoding(
    shop: Served, registry_uri: str
) -> None:
    """The shop model had no missing value in training (``nullable`` false for every feature).
    A null (NaN in binary data and gRPC, "" for the category there) is answered 200, over V1,
    V2 JSON, V2 binary and gRPC, with what the pipeline answers for the row its imputers fill
    in (the median of a number, the most frequent category), and counted per feature in
    ``model_server_missing_values_total``."""
    metadata, pipeline = Registry(registry_uri).load_model("shop")
    assert not any(f.nullable for f in metadata.features)
    expected = pipeline.predict_proba(_imputed(pipeline, SHOP_MISSING))
    labels = pipeline.classes_.take(np.argmax(expected, axis=1)).tolist()
    engine = shop.client.get("/v2/models/shop").json()["parameters"]["engine"]
    before = metric_samples(shop.client.get("/metrics").text, "model_server_missing_values_total")
    answers = _shop_answers(shop, SHOP_MISSING)
    for form, (predicted, probabilities) in answers.items():
        assert predicted == labels, (form, engine)
        np.testing.assert_allclose(
            probabilities, expected, rtol=0, atol=1e-4, err_msg=f"{form} ({engine})"
        )
    after = metric_samples(shop.client.get("/metrics").text, "model_server_missing_values_total")
    counted = {
        dict(labels_)["feature"]: value - before.get(labels_, 0.0)
        for labels_, value in after.items()
    }
    # each form sent two missing values of each feature
    assert counted == dict.fromkeys(("x1", "x2", "color"), 2.0 * len(answers))
    version = Registry(registry_uri).get("shop").version
    assert {dict(k)["model_version"] for k in after} == {version}


def _grpc_error(stub: Any, request: pb.ModelInferRequest) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(request)
    return error.value.code(), error.value.details()


def test_grpc_errors_name_the_problem(cancer: Served) -> None:
    _, stub = cancer.stub()
    cases: list[tuple[pb.ModelInferRequest, grpc.StatusCode, str]] = []
    cases.append((grpc_matrix([[1.0, 2.0]], raw=False), grpc.StatusCode.INVALID_ARGUMENT,
                  "the model takes 30 features"))  # fmt: skip
    wrong_field = pb.ModelInferRequest(model_name=CANCER)
    wrong_field.inputs.add(name="x", datatype="FP64", shape=[1, 30]).contents.int64_contents.extend(
        [1] * 30
    )
    cases.append((wrong_field, grpc.StatusCode.INVALID_ARGUMENT, "go in contents.fp64_contents"))
    short = grpc_matrix([ROW], raw=True)
    short.raw_input_contents[0] = short.raw_input_contents[0][:-1]
    cases.append((short, grpc.StatusCode.INVALID_ARGUMENT, "has 239 bytes of binary data"))
    other = grpc_matrix([ROW], raw=False)
    other.model_name = "other"
    cases.append((other, grpc.StatusCode.NOT_FOUND, "model 'other' is not served here"))
    old = grpc_matrix([ROW], raw=False)
    old.model_version = "v0"
    cases.append((old, grpc.StatusCode.NOT_FOUND, "version 'v0'"))
    for request, code, message in cases:
        got_code, details = _grpc_error(stub, request)
        assert got_code == code, details
        assert message in details
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelMetadata(pb.ModelMetadataRequest(name="other"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_grpc_metrics_carry_protocol_and_status(registry_uri: str, tmp_path: Path) -> None:
    args = ["--registry-uri", registry_uri, "--model-name", CANCER]
    with Served(args, tmp_path) as server:
        _, stub = server.stub()
        for _ in range(3):
            stub.ModelInfer(grpc_matrix([ROW], raw=True))
        _grpc_error(stub, grpc_matrix([[1.0]], raw=False))
        text = server.client.get("/metrics").text
    base = (("model_name", CANCER), ("model_version", "v1"))
    requests = metric_samples(text, "model_server_requests_total")
    assert requests[(("code", "OK"), *base, ("protocol", "grpc"))] == 3.0
    assert requests[(("code", "INVALID_ARGUMENT"), *base, ("protocol", "grpc"))] == 1.0
    durations = metric_samples(text, "model_server_request_duration_seconds_count")
    assert durations[(*base, ("protocol", "grpc"))] == 4.0


def test_grpc_not_ready_is_unavailable(tmp_path: Path) -> None:
    with Served(["--model-dir", str(tmp_path / "missing")], tmp_path) as server:
        _, stub = server.stub()
        assert not stub.ServerReady(pb.ServerReadyRequest()).ready
        request = grpc_matrix([ROW], raw=False)
        request.model_name = "model"
        code, details = _grpc_error(stub, request)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "is not ready" in details


def test_grpc_listens_on_host_only(cancer: Served) -> None:
    listening = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    addresses = re.findall(rf"\s(\S+):{cancer.grpc_port}\s", listening)
    assert addresses, listening
    assert all("127.0.0.1" in a for a in addresses), addresses  # not [::] or 0.0.0.0


def test_sigterm_lets_in_flight_grpc_calls_finish(registry_uri: str, tmp_path: Path) -> None:
    args = ["--registry-uri", registry_uri, "--model-name", CANCER, "--fault-latency-ms", "1500"]
    server = Served(args, tmp_path)
    with server:
        _, stub = server.stub()
        results: list[Any] = []
        call = threading.Thread(
            target=lambda: results.append(stub.ModelInfer(grpc_matrix([ROW], raw=True)))
        )
        call.start()
        time.sleep(0.5)
        server.terminate()
        call.join(timeout=30)
        assert server.process is not None
        assert server.process.wait(timeout=30) == 0
    assert results
    assert results[0].model_version == "v1"


# -- client libraries on their defaults ------------------------------------------------------

CLIENTS = ["triton-http", "triton-grpc", "kserve-rest-v1", "kserve-rest-v2", "kserve-grpc"]


def _rows(model: str) -> dict[str, Any]:
    if model == CANCER:
        return {
            "names": ["input-0"],
            "datatypes": ["FP64"],
            "columns": [[ROW, [v * 1.2 for v in ROW]]],
        }
    return {
        "names": ["x1", "x2", "color"],
        "datatypes": ["FP64", "FP64", "BYTES"],
        "columns": [[0.5, -1.0], [3.0, 7.0], ["red", "blue"]],
    }


def _v1_rows(model: str) -> list[list[Any]]:
    rows = _rows(model)
    if model == CANCER:
        return [list(r) for r in rows["columns"][0]]
    return [list(r) for r in zip(*rows["columns"], strict=True)]


# V1 is JSON only: its default run is its JSON run.
MATRIX = [
    (c, m) for c in CLIENTS for m in ("default", "json") if (c, m) != ("kserve-rest-v1", "json")
]


@pytest.mark.parametrize(("client", "mode"), MATRIX)
@pytest.mark.parametrize("model", [CANCER, "shop"])
def test_client_matrix(cancer: Served, shop: Served, client: str, mode: str, model: str) -> None:
    served = cancer if model == CANCER else shop
    http = f"127.0.0.1:{served.port}"
    completed = subprocess.run(
        [
            sys.executable, "-m", "tests.integration.client_matrix", client, mode, http,
            served.grpc_address, model, json.dumps(_rows(model)),
        ],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    seen = json.loads(completed.stdout)
    reference = httpx.post(
        f"{served.url}/v1/models/{model}:predict",
        json={"instances": _v1_rows(model), "return_probabilities": True},
    ).json()
    assert seen["version"] == reference["model_version"], seen
    assert seen["all"]["predict"] == reference["predictions"]
    assert seen["model_ready"] is True
    if client != "kserve-rest-v1":
        proba = np.array(seen["all"]["predict_proba"]).reshape(-1, 2)
        assert np.allclose(proba, reference["probabilities"], rtol=0, atol=1e-12)
        assert [k for k, v in seen["one"].items() if v is not None] == ["predict_proba"]
    if "metadata" in seen:
        assert seen["metadata"]["versions"] == [seen["version"]]
        assert seen["metadata"]["outputs"] == ["predict", "predict_proba"]
    assert "accepted" not in seen["bad"]
    expected = "features" if client == "kserve-rest-v1" else "nope"
    assert expected in seen["bad"], seen["bad"]  # the server's message, not a decoding error


# -- the README's client examples --------------------------------------------------------------


def readme_example(name: str) -> str:
    """The Python block after ``<!-- example: NAME -->`` in the README."""
    text = (ROOT / "README.md").read_text()
    found = re.search(rf"<!-- example: {name} -->\n```python\n(.*?)```", text, re.DOTALL)
    assert found, f"README has no example {name!r}"
    return found.group(1)


@pytest.mark.parametrize("name", ["tritonclient", "grpc"])
def test_the_readme_client_examples_run(cancer: Served, name: str) -> None:
    code = (
        readme_example(name)
        .replace("127.0.0.1:8080", f"127.0.0.1:{cancer.port}")
        .replace("127.0.0.1:8081", cancer.grpc_address)
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert (
        "benign" in completed.stdout or "malignant" in completed.stdout or "v1" in completed.stdout
    )
    if name == "grpc":
        assert completed.stdout.startswith("v1 ")
        assert completed.stdout.rstrip().endswith("order-17")


def test_grpc_with_two_workers_counts_in_the_same_metrics(
    registry_uri: str, tmp_path: Path
) -> None:
    """REST runs in the worker processes, gRPC in the main one: one /metrics shows both."""
    args = ["--registry-uri", registry_uri, "--model-name", CANCER, "--workers", "2"]
    with Served(args, tmp_path) as server:
        _, stub = server.stub()
        for _ in range(5):
            stub.ModelInfer(grpc_matrix([ROW], raw=True))
        for _ in range(4):
            assert server.client.post(PREDICT, content=JSON_ROW).status_code == 200
        text = server.client.get("/metrics").text
        assert server.stop() == 0
    requests = metric_samples(text, "model_server_requests_total")
    base = (("model_name", CANCER), ("model_version", "v1"))
    assert requests == {
        (("code", "OK"), *base, ("protocol", "grpc")): 5.0,
        (("code", "200"), *base, ("protocol", "v1")): 4.0,
    }


# -- request body limits -----------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _response_head(sock: Any, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_declared_length_over_the_limit_is_refused_before_the_body(
    registry_uri: str, tmp_path: Path
) -> None:
    import socket

    args = ["--registry-uri", registry_uri, "--model-name", CANCER, "--max-request-bytes", "4096"]
    with ServerProcess(args, tmp_path) as server:
        ok = orjson.dumps({"instances": [ROW] * 20})  # ~3.2 KB
        assert server.client.post(PREDICT, content=ok).status_code == 200
        too_big = orjson.dumps({"instances": [ROW] * 30})  # ~4.8 KB
        refused = server.client.post(PREDICT, content=too_big)
        assert refused.status_code == 413
        assert "larger than the limit of 4096" in refused.json()["error"]
        assert refused.headers["connection"] == "close"
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(
                f"POST {PREDICT} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                "content-length: 1500000000\r\n\r\n".encode()
                + b" " * 1024
            )
            head = _response_head(sock, timeout=10)  # answered with 1.5 GB still to come
        assert head.startswith(b"HTTP/1.1 413"), head
        text = server.client.get("/metrics").text
    samples = metric_samples(text, "model_server_requests_total")
    assert samples[(("code", "413"), ("model_name", CANCER), ("model_version", "v1"),
                    ("protocol", "v1"))] == 2.0  # fmt: skip


def test_a_streamed_body_is_cut_at_the_limit_and_memory_stays_flat(
    registry_uri: str, tmp_path: Path
) -> None:
    """A chunked body far past the (default) limit: 413, connection closed, RSS flat."""
    import socket

    with ServerProcess(
        ["--registry-uri", registry_uri, "--model-name", CANCER], tmp_path
    ) as server:
        assert server.process is not None
        assert server.client.post(PREDICT, content=JSON_ROW).status_code == 200
        before = _rss_kib(server.process.pid)
        chunk = b" " * (1 << 20)
        framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        sent = 0
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(
                f"POST {PREDICT} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                "transfer-encoding: chunked\r\n\r\n".encode()
            )
            sock.settimeout(10)
            try:
                for _ in range(200):  # up to 200 MiB, far past the ~3.9 MB default
                    sock.sendall(framed)
                    sent += len(chunk)
            except OSError:
                pass  # the server closed the connection: the point
            head = _response_head(sock, timeout=10)
        growth_mib = (_rss_kib(server.process.pid) - before) / 1024
        assert server.client.post(PREDICT, content=JSON_ROW).status_code == 200
    assert head.startswith(b"HTTP/1.1 413"), head
    assert sent < 200 * len(chunk), "the server read the whole stream"
    assert growth_mib < 32, f"RSS grew {growth_mib:.1f} MiB"
    print(f"sent {sent >> 20} MiB, RSS growth {growth_mib:.1f} MiB")


# -- slow and idle clients ---------------------------------------------------------------------


def test_half_open_heads_and_stalled_bodies_are_cut_off_while_good_requests_flow(
    registry_uri: str, tmp_path: Path
) -> None:
    """1,500 connections that send half a request head and then nothing, and one body that
    stalls: all closed on time (408 where a request had begun), good requests served meanwhile
    within the latency SLO (p99 under 500 ms)."""
    import socket

    args = [
        *("--registry-uri", registry_uri, "--model-name", CANCER),
        *("--header-timeout", "2", "--body-timeout", "2"),
    ]
    with ServerProcess(args, tmp_path) as server:
        half_open = []
        for _ in range(1500):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(f"POST {PREDICT} HTTP/1.1\r\nhost: x\r\n".encode())  # no blank line
            half_open.append(sock)
        stalled = socket.create_connection(("127.0.0.1", server.port))
        stalled.sendall(
            f"POST {PREDICT} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            "content-length: 1000\r\n\r\n{".encode()
        )
        opened = time.monotonic()
        latencies = []
        while time.monotonic() - opened < 4.0:  # past both timeouts
            started = time.perf_counter()
            assert server.client.post(PREDICT, content=JSON_ROW).status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.02)
        closed_with_408 = 0
        for sock in [*half_open, stalled]:
            head = _response_head(sock, timeout=5)  # b"" once closed
            closed_with_408 += head.startswith(b"HTTP/1.1 408")
            assert sock.recv(1024) == b""  # closed by the server, not left open
            sock.close()
        elapsed = time.monotonic() - opened
    latencies.sort()
    assert closed_with_408 == len(half_open) + 1
    assert elapsed < 4.0 + 10, f"closing took {elapsed:.1f}s"
    assert latencies[int(len(latencies) * 0.99) - 1] < 0.5, latencies[-5:]


def test_connections_past_the_cap_are_closed_at_once(registry_uri: str, tmp_path: Path) -> None:
    import socket

    args = ["--registry-uri", registry_uri, "--model-name", CANCER, "--max-connections", "20"]
    with ServerProcess(args, tmp_path) as server:
        held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
        with socket.create_connection(("127.0.0.1", server.port)) as extra:
            extra.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n")
            extra.settimeout(5)
            try:
                answer = extra.recv(1024)
            except ConnectionResetError:
                answer = b""  # closed with the request unread: a reset
        assert answer == b""  # closed without an answer
        for sock in held:
            sock.close()
        time.sleep(0.5)
        assert server.client.get("/v2/health/live").status_code == 200  # room again
