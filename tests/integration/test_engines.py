"""The same answer everywhere: every estimator the trainer offers, trained once on messy data and
served twice (``--engine onnx`` and ``--engine sklearn``), asked the same rows over V1 JSON, V2
JSON, V2 binary tensors and gRPC (issue 23).

A property-based test (``hypothesis``) draws the requests: batches of one row to 300, numbers
across the training range and past it, whole numbers, values near float32's and float64's
limits, subnormals, missing numbers (``null`` in JSON, NaN in binary and gRPC), known, unseen,
missing and empty categories, and now and then a row missing every feature: a missing value for
any feature, whether or not training had one for it, which both engines impute as training
did. All eight answers must agree: the same status, the same labels,
probabilities (or values) within the ONNX check's tolerance across engines and identical
across protocols for one engine. ``DIFFERENTIAL_EXAMPLES`` sets the examples per estimator
(default 30; ``make test-differential`` runs 1,000). All-numeric models take the codec's
matrix paths; V1 rows go as objects or lists, V2 as per-feature tensors or one [N, F] tensor,
gRPC as raw or typed contents. A second property draws the training data itself (scales up to
1e30, whole numbers, missing shares, categories missing as NaN or ``""``) and compares the two
engines in process through every decoder (``DIFFERENTIAL_DATASETS``, default 6; 100 in
``make test-differential``).

The V2 binary bodies and gRPC messages are made by KServe's own client types
(``InferRequest.to_rest`` / ``to_grpc``), what its ``InferenceRESTClient`` and
``InferenceGRPCClient`` send; V1 and V2 JSON bodies are written as a client writes them.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from kserve import InferInput, InferRequest
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from kserve.protocol.infer_type import InferResponse

from model_registry import Registry
from model_registry.metadata import ModelMetadata
from model_registry.onnx_runtime import (
    PROBABILITY_TOLERANCE,
    REGRESSION_TOLERANCE,
    largest_size,
)
from tests.conftest import training_fill
from tests.integration.server_harness import ServerProcess
from trainer.settings import TrainerSettings
from trainer.train import run

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("DIFFERENTIAL_EXAMPLES", "30"))
ENGINES = ("onnx", "sklearn")
PROTOCOLS = ("v1-json", "v2-json", "v2-binary", "grpc")
ESTIMATORS = [
    ("classification", "logistic", {}),
    ("classification", "random-forest", {"n_estimators": "25"}),
    ("classification", "gradient-boosting", {"max_iter": "40"}),
    ("regression", "linear", {}),
    ("regression", "ridge", {}),
    ("regression", "random-forest", {"n_estimators": "25"}),
    ("regression", "gradient-boosting", {"max_iter": "40"}),
    # all-numeric models take the codec's matrix paths and feed ONNX one array
    ("numeric", "logistic", {}),
    ("numeric", "random-forest", {"n_estimators": "25"}),
]
KNOWN = ("red", "green", "blue")
SIZES = ("s", "m", "l")
FLOAT32_MAX = float(np.finfo(np.float32).max)


def messy_frame(task: str, rows: int = 300, seed_: int = 5) -> pd.DataFrame:
    """Missing numbers, a whole-number column, a wide-ranged column, a category with missing
    values both as NaN and as ``""`` (read as missing by the trainer), a category without any;
    three classes, or a numeric target; ``numeric``: three classes from the numbers alone."""
    rng = np.random.default_rng(seed_)
    x = rng.normal(size=rows)
    x[rng.random(rows) < 0.06] = np.nan
    count = rng.integers(0, 40, size=rows)
    wide = rng.lognormal(8, 2, size=rows)
    color = rng.choice(np.array(KNOWN, dtype=object), size=rows)
    color[rng.random(rows) < 0.05] = np.nan
    color[rng.random(rows) < 0.05] = ""
    size = rng.choice(np.array(SIZES, dtype=object), size=rows)
    score = np.nan_to_num(x) + 0.05 * count + np.log(wide) / 4 + (color == "red") - (size == "l")
    noisy = score + rng.normal(scale=0.4, size=rows)
    target: Any = (
        np.where(noisy > 2.4, "high", np.where(noisy > 1.4, "mid", "low"))
        if task != "regression"
        else 3 * noisy
    )
    frame = pd.DataFrame(
        {"x": x, "count": count, "wide": wide, "color": color, "size": size, "target": target}
    )
    return frame.drop(columns=["color", "size"]) if task == "numeric" else frame


@dataclass
class Served:
    name: str
    metadata: ModelMetadata
    servers: dict[str, ServerProcess]
    scale: float = 1.0
    """A regressor's largest training target: what the ONNX check holds outputs to."""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Served]]:
    """Each estimator trained once and served by both engines (started on first use)."""
    made: dict[str, Served] = {}
    root = tmp_path_factory.mktemp("engines")

    def serve(task: str, estimator: str, params: dict[str, str]) -> Served:
        key = f"{task}-{estimator}"
        if key in made:
            return made[key]
        data = root / f"{task}.parquet"
        if not data.exists():
            messy_frame(task).to_parquet(data)  # Parquet keeps "" apart from a missing value
        uri = str(root / "registry")
        result = run(
            TrainerSettings(
                data_uri=str(data),
                target="target",
                model_name=key,
                registry_uri=uri,
                estimator=estimator,
                param=params,
                max_missing_fraction=0.2,
                task="regression" if task == "regression" else "classification",
            )
        )
        assert result.metadata is not None
        assert result.metadata.onnx is not None
        # gradient boosting is never compiled (float64 thresholds, model_registry.onnx_runtime
        # .unsupported): its "onnx" server runs --engine auto, which serves the pipeline
        compiled = estimator != "gradient-boosting"
        if compiled:
            assert result.metadata.onnx.file == "model.onnx", result.metadata.onnx.reason
        else:
            assert "float64 split thresholds" in str(result.metadata.onnx.reason)
        common = [*("--registry-uri", uri, "--model-name", key, "--model-version", "latest")]
        common.append("--enable-grpc")
        servers = {}
        for engine in ENGINES:
            flag = engine if compiled or engine == "sklearn" else "auto"
            server = ServerProcess([*common, "--engine", flag], root)
            server.args += ["--grpc-port", str(_port())]
            servers[engine] = server
        with ThreadPoolExecutor(2) as pool:  # both start at once
            list(pool.map(ServerProcess.start, servers.values()))
        metadata, _ = Registry(uri).read_artifact(key, "latest")
        target = pd.read_parquet(data)["target"]
        scale = largest_size(target.to_numpy()) if task == "regression" else 1.0
        made[key] = Served(key, metadata, servers, scale)
        for engine, server in servers.items():
            _ready(server)
            engine_seen = server.client.get(f"/v2/models/{key}").json()["parameters"]["engine"]
            assert engine_seen == (engine if compiled else "sklearn"), server.log()
        return made[key]

    yield serve  # type: ignore[misc]
    for each in made.values():
        for server in each.servers.values():
            server.stop()


def _port() -> int:
    from serving_common.net import free_port

    return free_port()


def _grpc_address(server: ServerProcess) -> str:
    return f"127.0.0.1:{server.args[server.args.index('--grpc-port') + 1]}"


def _ready(server: ServerProcess) -> None:
    import time

    deadline = time.monotonic() + 60
    while server.client.get("/v2/health/ready").status_code != 200:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)


# -- the requests ---------------------------------------------------------------------------

NUMBERS = st.one_of(
    st.floats(-3, 3),
    st.integers(-1000, 1000),
    st.sampled_from(
        [0.0, -0.0, 5e-324, -5e-324, 1e-300, 1e6, 1e15, -1e15, 2.0**53, 1e30, 1e38, -1e38]
    ),
    st.sampled_from([FLOAT32_MAX, -FLOAT32_MAX, 3.5e38, -3.5e38, 1e300, 1e308, -1e308]),
    st.none(),  # missing: null in JSON, NaN in binary and gRPC
)
CATEGORIES = st.sampled_from([*KNOWN, *SIZES, "never-seen", "", None])


@dataclass(frozen=True)
class Ask:
    """One generated request: values by feature, and how each encoding sends them."""

    columns: dict[str, list[Any]]
    v1_lists: bool = False
    """V1 rows as lists in feature order (else objects keyed by feature)."""
    v2_matrix: bool = False
    """All-numeric models: V2 as one [N, F] tensor (else one [N] tensor per feature)."""
    grpc_typed: bool = False
    """gRPC values in typed ``*_contents`` (else ``raw_input_contents``)."""


@st.composite
def requests(draw: st.DrawFn, names: tuple[str, ...]) -> Ask:
    """Rows for features ``names``: mostly ordinary values, with drawn oddities in drawn
    places; batches from one row to the server's 1,000-row limit."""
    count = draw(st.sampled_from([1, 1, 2, 5, 17, 300, 1000]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ordinary: dict[str, list[Any]] = {
        "x": rng.normal(size=count).tolist(),
        "count": rng.integers(0, 40, size=count).tolist(),  # whole numbers, sent as such
        "wide": rng.lognormal(8, 2, size=count).tolist(),
        "color": rng.choice(KNOWN, size=count).tolist(),
        "size": rng.choice(SIZES, size=count).tolist(),
    }
    columns = {name: ordinary[name] for name in names}
    for _ in range(draw(st.integers(0, 4))):
        feature = draw(st.sampled_from(names))
        row = draw(st.integers(0, count - 1))
        text = feature in ("color", "size")
        columns[feature][row] = draw(CATEGORIES if text else NUMBERS)
    if draw(st.integers(0, 4)) == 0:  # a row missing every feature: each imputed
        row = draw(st.integers(0, count - 1))
        for feature in names:
            columns[feature][row] = None
    numeric = not {"color", "size"} & set(names)
    return Ask(
        columns,
        v1_lists=draw(st.booleans()),
        v2_matrix=numeric and draw(st.booleans()),
        grpc_typed=draw(st.booleans()),
    )


def _v1(ask: Ask, classifier: bool) -> bytes:
    rows = [list(values) for values in zip(*ask.columns.values(), strict=True)]
    instances: list[Any] = (
        rows if ask.v1_lists else [dict(zip(ask.columns, r, strict=True)) for r in rows]
    )
    return orjson.dumps({"instances": instances, "return_probabilities": classifier})


def _v2_json(ask: Ask, metadata: ModelMetadata) -> bytes:
    kinds = {f.name: f.kind for f in metadata.features}
    if ask.v2_matrix:
        rows = [list(values) for values in zip(*ask.columns.values(), strict=True)]
        flat = [v for row in rows for v in row]
        shape = [len(rows), len(ask.columns)]
        return orjson.dumps(
            {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": shape, "data": flat}]}
        )
    inputs = [
        {
            "name": name,
            "datatype": "BYTES" if kinds[name] == "categorical" else "FP64",
            "shape": [len(values)],
            "data": values,
        }
        for name, values in ask.columns.items()
    ]
    return orjson.dumps({"inputs": inputs})


def _arrays(ask: Ask, metadata: ModelMetadata) -> list[tuple[str, str, np.ndarray[Any, Any]]]:
    """Tensors as binary data and gRPC carry them: a missing number is NaN, a missing category
    ``""`` (a BYTES tensor has no null)."""
    kinds = {f.name: f.kind for f in metadata.features}
    if ask.v2_matrix:
        rows = [list(values) for values in zip(*ask.columns.values(), strict=True)]
        matrix = np.array([[math.nan if v is None else v for v in r] for r in rows], np.float64)
        return [("input-0", "FP64", matrix)]
    tensors = []
    for name, values in ask.columns.items():
        if kinds[name] == "categorical":
            array = np.array(["" if v is None else v for v in values], dtype=object)
            tensors.append((name, "BYTES", array))
        else:
            array = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
            tensors.append((name, "FP64", array))
    return tensors


def _kserve_request(ask: Ask, metadata: ModelMetadata) -> InferRequest:
    """Binary tensors, as KServe's clients send them."""
    inputs = []
    for name, datatype, array in _arrays(ask, metadata):
        tensor = InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=True)
        inputs.append(tensor)
    return InferRequest(model_name=metadata.model_name, infer_inputs=inputs, request_id="t")


def _grpc_request(ask: Ask, metadata: ModelMetadata) -> Any:
    """KServe's gRPC message: raw contents as its client sends them, or typed contents."""
    request = _kserve_request(ask, metadata).to_grpc()
    if ask.grpc_typed:
        del request.raw_input_contents[:]
        for tensor, (_, datatype, array) in zip(
            request.inputs, _arrays(ask, metadata), strict=True
        ):
            if datatype == "BYTES":
                tensor.contents.bytes_contents.extend(v.encode() for v in array.ravel())
            else:
                tensor.contents.fp64_contents.extend(array.ravel().tolist())
    return request


@dataclass(frozen=True)
class Answer:
    status: int
    labels: list[Any] | None = None
    scores: np.ndarray[Any, Any] | None = None
    error: str = ""


def _from_v2_outputs(outputs: list[dict[str, Any]], classifier: bool) -> Answer:
    by_name = {o["name"]: o for o in outputs}
    labels = list(by_name["predict"]["data"])
    if not classifier:
        return Answer(200, labels, np.asarray(labels, dtype=np.float64))
    proba = by_name["predict_proba"]
    return Answer(200, labels, np.asarray(proba["data"], dtype=np.float64).reshape(proba["shape"]))


def ask(server: ServerProcess, protocol: str, body: Ask, served: Served) -> Answer:
    """One request in one encoding, answered."""
    name, metadata = served.name, served.metadata
    classifier = metadata.task == "classification"
    if protocol == "grpc":
        request = _grpc_request(body, metadata)
        with grpc.insecure_channel(_grpc_address(server)) as channel:
            try:
                reply = GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
            except grpc.RpcError as error:
                code = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.INTERNAL: 500}
                return Answer(code.get(error.code(), 999), error=str(error.details()))
        response = InferResponse.from_grpc(reply)
        outputs = [
            {"name": o.name, "data": o.as_numpy().ravel().tolist(), "shape": o.shape}
            for o in response.outputs
        ]
        for output in outputs:
            output["data"] = [v.decode() if isinstance(v, bytes) else v for v in output["data"]]
        return _from_v2_outputs(outputs, classifier)
    headers = {"content-type": "application/json"}
    if protocol == "v1-json":
        path, content = f"/v1/models/{name}:predict", _v1(body, classifier)
    elif protocol == "v2-json":
        path, content = f"/v2/models/{name}/infer", _v2_json(body, metadata)
    else:
        raw, json_length = _kserve_request(body, metadata).to_rest()
        assert isinstance(raw, bytes)
        assert json_length is not None
        path, content = f"/v2/models/{name}/infer", raw
        headers = {
            "content-type": "application/octet-stream",
            "inference-header-content-length": str(json_length),
        }
    reply = server.client.post(path, content=content, headers=headers)
    if reply.status_code != 200:
        return Answer(reply.status_code, error=reply.json().get("error", ""))
    document = reply.json()
    if protocol == "v1-json":
        labels = document["predictions"]
        scores = document.get("probabilities") if classifier else labels
        return Answer(200, labels, np.asarray(scores, dtype=np.float64))
    return _from_v2_outputs(document["outputs"], classifier)


def assert_alike(answers: dict[tuple[str, str], Answer], served: Served) -> None:
    statuses = {key: a.status for key, a in answers.items()}
    assert len(set(statuses.values())) == 1, {k: (a.status, a.error) for k, a in answers.items()}
    status = next(iter(statuses.values()))
    assert status in (200, 400), answers
    if status != 200:  # refused alike: for the same feature, whatever the encoding
        named = {key: re.findall(r"feature '([^']+)'", a.error)[:1] for key, a in answers.items()}
        assert len({tuple(v) for v in named.values()}) == 1, answers
        return
    classifier = served.metadata.task == "classification"
    first = answers[("sklearn", "v1-json")]
    assert first.scores is not None
    assert np.isfinite(first.scores).all()
    # probabilities: absolute; values: relative to each value or the training scale, as the
    # ONNX check
    atol = PROBABILITY_TOLERANCE if classifier else REGRESSION_TOLERANCE * served.scale

    rtol = 0.0 if classifier else REGRESSION_TOLERANCE
    for (engine, protocol), answer in answers.items():
        assert answer.scores is not None
        reference = answers[(engine, "v1-json")]
        assert reference.scores is not None
        # one engine: the same answer in every encoding
        np.testing.assert_array_equal(answer.scores, reference.scores, err_msg=protocol)
        if classifier:
            assert [str(v) for v in answer.labels or []] == [str(v) for v in first.labels or []]
        np.testing.assert_allclose(
            answer.scores, first.scores, rtol=rtol, atol=atol, err_msg=f"{engine} {protocol}"
        )


def answers_for(
    served: Served, request: Ask | dict[str, list[Any]]
) -> dict[tuple[str, str], Answer]:
    body = request if isinstance(request, Ask) else Ask(request)
    return {
        (engine, protocol): ask(served.servers[engine], protocol, body, served)
        for engine in ENGINES
        for protocol in PROTOCOLS
    }


# -- the property ----------------------------------------------------------------------------


def bounded(examples: int) -> settings:
    """Hypothesis settings for these slow, server-backed properties: ``examples`` of them, no
    deadline, no example database (the regression cases are named tests)."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.mark.parametrize(("task", "estimator", "params"), ESTIMATORS, ids=str)
def test_both_engines_answer_alike_in_every_encoding(
    served: Any, task: str, estimator: str, params: dict[str, str]
) -> None:
    model = served(task, estimator, params)
    seen: dict[int, int] = {}

    @seed(23)
    @bounded(EXAMPLES)
    @given(requests(tuple(model.metadata.feature_names)))
    def alike(request: Ask) -> None:
        answers = answers_for(model, request)
        assert_alike(answers, model)
        status = answers[("sklearn", "v1-json")].status
        seen[status] = seen.get(status, 0) + 1

    alike()
    print(f"{model.name}: {sum(seen.values())} generated requests x 8, statuses {seen}")
    assert seen.get(200), "no generated request was answered: the test would prove nothing"


# -- regression cases: the defects this test found, kept by name ------------------------------

ORDINARY: dict[str, list[Any]] = {
    "x": [0.3],
    "count": [7],
    "wide": [3000.0],
    "color": ["red"],
    "size": ["m"],
}


def test_an_empty_category_over_binary_v2_is_missing_in_both_engines(served: Any) -> None:
    """The issue's first defect: ``""`` over binary V2 was imputed by ONNX and one-hot encoded
    as an unknown category by the pipeline (probabilities 0.13 apart). Now ``""`` means
    missing everywhere: both engines, every encoding, and the same answer as JSON ``null``."""
    model = served("classification", "random-forest", {"n_estimators": "25"})
    empty = {**ORDINARY, "color": [""]}
    null = {**ORDINARY, "color": [None]}
    unseen = {**ORDINARY, "color": ["never-seen"]}
    answers = answers_for(model, empty)
    assert_alike(answers, model)
    for engine, server in model.servers.items():
        by_null = ask(server, "v1-json", Ask(null), model)
        by_unseen = ask(server, "v1-json", Ask(unseen), model)
        assert by_null.scores is not None
        assert by_unseen.scores is not None
        np.testing.assert_array_equal(answers[(engine, "v2-binary")].scores, by_null.scores)
        assert not np.array_equal(by_null.scores, by_unseen.scores)  # missing is not unknown


def test_missing_values_for_features_trained_without_any_are_imputed_alike(served: Any) -> None:
    """``size``, ``count`` and ``wide`` had no missing value in training (``x`` and ``color``
    did): a missing value for any of them is imputed as training would, the most frequent size,
    the median count or width, by both engines in every encoding (once a 400)."""
    model = served("classification", "random-forest", {"n_estimators": "25"})
    uri = model.servers["sklearn"].args[model.servers["sklearn"].args.index("--registry-uri") + 1]
    metadata, pipeline = Registry(uri).load_model(model.name)
    nullable = {f.name for f in metadata.features if f.nullable}
    assert nullable == {"x", "color"}
    fill = training_fill(pipeline)
    for missing in ({"size": [""]}, {"size": [None]}, {"count": [None]}, {"wide": [None]}, None):
        request = {**ORDINARY, **missing} if missing else {name: [None] for name in ORDINARY}
        answers = answers_for(model, request)
        assert_alike(answers, model)
        assert answers[("onnx", "v1-json")].status == 200
        row = {k: fill[k] if v[0] in (None, "") else v[0] for k, v in request.items()}
        expected = pipeline.predict_proba(pd.DataFrame([row])[list(metadata.feature_names)])
        for key, answer in answers.items():
            assert answer.scores is not None
            np.testing.assert_allclose(
                answer.scores, expected, rtol=0, atol=PROBABILITY_TOLERANCE, err_msg=str(key)
            )


@pytest.mark.parametrize("engine", ENGINES)
def test_1e308_over_v1_is_refused_by_both_engines(served: Any, engine: str) -> None:
    """The issue's second defect: every feature 1e308 over V1 got a label with null
    probabilities from ONNX (float32 overflow) and a 400 from the pipeline. Now both refuse,
    naming the feature and the range the model computes with."""
    model = served("classification", "random-forest", {"n_estimators": "25"})
    server = model.servers[engine]
    row = {"x": 1e308, "count": 1e308, "wide": 1e308, "color": "red", "size": "m"}
    reply = server.client.post(f"/v1/models/{model.name}:predict", json={"instances": [row]})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert "feature 'x' of instance 0 is 1e+308, outside the range" in error
    assert "float32" in error
    counted = server.client.get("/metrics").text
    assert 'code="400"' in counted


def test_http_client_reads_the_413_of_a_body_8x_the_limit_and_of_30_mb(
    served: Any, tmp_path: Path
) -> None:
    """The issue's third defect: Python's http.client got ConnectionResetError for a body over
    the limit. The server lingers (reads and drops the rest), so the 413 and its message
    arrive."""
    import http.client

    model = served("classification", "logistic", {})
    uri = model.servers["sklearn"].args[model.servers["sklearn"].args.index("--registry-uri") + 1]
    limit = 1 << 20
    args = ["--registry-uri", uri, "--model-name", model.name, "--model-version", "latest"]
    args += ["--max-request-bytes", str(limit)]
    with ServerProcess(args, tmp_path) as server:
        row = b'{"x": 0.5, "count": 3, "wide": 100.0, "color": "red", "size": "m"}'
        for size in (8 * limit, 30_000_000):  # 8x the limit, and the 30 MB batch
            body = b'{"instances": [' + b", ".join([row] * (size // len(row))) + b"]}"
            assert len(body) >= size
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            try:
                connection.request(
                    "POST",
                    f"/v1/models/{model.name}:predict",
                    body=body,
                    headers={"content-type": "application/json"},
                )
                response = connection.getresponse()
                status, text = response.status, response.read()
            finally:
                connection.close()
            assert status == 413
            assert f"larger than the limit of {limit}" in orjson.loads(text)["error"]
        # the server is fine afterwards
        one = b'{"instances": [' + row + b"]}"
        ok = server.client.post(f"/v1/models/{model.name}:predict", content=one)
        assert ok.status_code == 200, ok.text


def test_a_non_finite_output_from_a_finite_input_is_a_500_not_an_answer(
    served: Any, tmp_path: Path
) -> None:
    """A version whose arithmetic overflows inside the accepted range (a ridge with a
    coefficient of 1e308, published beside the real one): the server answers 500, logs the
    version and engine, and counts the 500; it never answers the infinity."""
    from model_registry import artifacts

    model = served("regression", "ridge", {})
    uri = model.servers["sklearn"].args[model.servers["sklearn"].args.index("--registry-uri") + 1]
    registry = Registry(uri)
    metadata, blob = registry.read_artifact(model.name, "latest")
    pipeline = artifacts.load_model(blob, metadata.artifact.format)
    pipeline.named_steps["model"].coef_[0] = 1e308
    document = metadata.model_dump(mode="json", exclude={"model_name", "version", "created_at"})
    document.pop("artifact")
    document["onnx"] = {"reason": "a broken copy, for a test"}
    broken = registry.publish(model.name, artifacts.dump_model(pipeline, "skops"), document)
    args = ["--registry-uri", uri, "--model-name", model.name, "--model-version", broken.version]
    with ServerProcess([*args, "--engine", "sklearn"], tmp_path) as server:
        _ready(server)
        row = {"x": 10.0, "count": 3, "wide": 100.0, "color": "red", "size": "m"}
        path = f"/v1/models/{model.name}:predict"
        reply = server.client.post(path, json={"instances": [row]})
        assert reply.status_code == 500, reply.text
        assert "not a finite number" in reply.json()["error"]
        fine = server.client.post(path, json={"instances": [{**row, "x": 0.0}]})
        assert fine.status_code == 200, fine.text
        exposition = server.client.get("/metrics").text
    log = server.log()
    assert f"{model.name} {broken.version} (sklearn engine) computed 1 NaN or infinite" in log
    assert 'code="500"' in exposition


# -- generated data sets, in process --------------------------------------------------------

DATASET_EXAMPLES = int(os.environ.get("DIFFERENTIAL_DATASETS", "6"))


@st.composite
def data_sets(draw: st.DrawFn) -> tuple[pd.DataFrame, str, str]:
    """A training table: one to three numeric features at drawn scales (up to 1e30), whole
    numbers or not, with drawn shares of missing values; zero to two categorical features
    with two to five categories, missing as NaN or ``""``; a target for a drawn task; and an
    estimator the trainer offers for it."""
    rows = draw(st.integers(80, 240))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    frame: dict[str, Any] = {}
    signal = np.zeros(rows)
    for i in range(draw(st.integers(1, 3))):
        scale = draw(st.sampled_from([1.0, 1e3, 1e6, 1e12, 1e30]))
        values = rng.normal(size=rows)
        signal += values
        column = values * scale
        if draw(st.booleans()):  # whole numbers
            column = np.round(column)
        column[rng.random(rows) < draw(st.sampled_from([0.0, 0.05, 0.15]))] = np.nan
        frame[f"n{i}"] = column
    for i in range(draw(st.integers(0, 2))):
        names = np.array([f"c{i}-{k}" for k in range(draw(st.integers(2, 5)))], dtype=object)
        text: Any = rng.choice(names, size=rows)
        signal += (text == names[0]).astype(float)
        share = draw(st.sampled_from([0.0, 0.05, 0.15]))
        text[rng.random(rows) < share] = draw(st.sampled_from([np.nan, ""]))
        frame[f"c{i}"] = text
    task = draw(st.sampled_from(["classification", "regression"]))
    noisy = signal + rng.normal(scale=0.5, size=rows)
    frame["target"] = (
        np.where(noisy > 0.5, "b", np.where(noisy < -0.5, "a", "m"))
        if task == "classification"
        else noisy * 10
    )
    estimators = {
        "classification": ["logistic", "random-forest", "gradient-boosting"],
        "regression": ["linear", "ridge", "random-forest", "gradient-boosting"],
    }
    return pd.DataFrame(frame), task, draw(st.sampled_from(estimators[task]))


def _documents(columns: dict[str, list[Any]], metadata: ModelMetadata) -> dict[str, Any]:
    """The same rows as a V1 document, a V2 JSON document and a parsed V2 binary body."""
    from model_server.http_body import parse_document

    request = Ask(columns)
    raw, json_length = _kserve_request(request, metadata).to_rest()
    assert isinstance(raw, bytes)
    binary = parse_document({"inference-header-content-length": str(json_length)}, raw, "v2")
    return {
        "v1": orjson.loads(_v1(request, metadata.task == "classification")),
        "v2-json": orjson.loads(_v2_json(request, metadata)),
        "v2-binary": binary,
    }


def test_models_trained_on_generated_data_sets_answer_alike(tmp_path: Path) -> None:
    """Hypothesis draws the training data too: each drawn table is trained (with its ONNX
    check), both engines load it in process, and the same generated rows through each
    decoder get the same answer from both, or the same refusal."""
    from kserve.errors import InvalidInput

    from model_server.model import SklearnModel
    from model_server.settings import ModelServerSettings

    outcomes: dict[str, int] = {}

    @seed(2023)
    @bounded(DATASET_EXAMPLES)
    @given(data_sets(), st.data())
    def alike(drawn: tuple[pd.DataFrame, str, str], data: st.DataObject) -> None:
        frame, task, estimator = drawn
        index = sum(outcomes.values())
        path = tmp_path / f"set{index}.parquet"
        frame.to_parquet(path)
        uri = str(tmp_path / f"registry{index}")
        result = run(
            TrainerSettings(
                data_uri=str(path),
                target="target",
                model_name="generated",
                registry_uri=uri,
                estimator=estimator,
                task=task,
                max_missing_fraction=0.5,
                min_rows=50,
            )
        )
        assert result.metadata is not None
        onnx = result.metadata.onnx
        assert onnx is not None
        if onnx.file is None:  # refused with its reason: the pipeline serves, nothing to compare
            assert onnx.reason
            outcomes["no onnx"] = outcomes.get("no onnx", 0) + 1
            return
        models = {}
        for engine in ENGINES:
            model = SklearnModel(
                ModelServerSettings(
                    registry_uri=uri, model_name="generated", model_version="latest", engine=engine
                )
            )
            model.load()
            assert model.engine_name == engine, model.load_error
            models[engine] = model
        names = tuple(result.metadata.feature_names)
        for _ in range(3):
            columns = _generated_rows(data, result.metadata, names)
            for form, document in _documents(columns, result.metadata).items():
                answers: dict[str, Any] = {}
                for engine, model in models.items():
                    try:
                        answers[engine] = model.answer(document, "v1" if form == "v1" else "v2")
                    except InvalidInput as error:
                        answers[engine] = re.findall(r"feature '([^']+)'", str(error))[:1]
                onnx_answer, pipeline_answer = answers["onnx"], answers["sklearn"]
                if isinstance(pipeline_answer, list):
                    assert onnx_answer == pipeline_answer, form
                    continue
                assert not isinstance(onnx_answer, list), (form, onnx_answer)
                scale = largest_size(frame["target"].to_numpy()) if task == "regression" else 1.0
                _assert_close(onnx_answer, pipeline_answer, result.metadata.task, scale)
        outcomes["compared"] = outcomes.get("compared", 0) + 1

    alike()
    print(f"generated data sets: {outcomes}")
    assert outcomes.get("compared"), "no generated data set got an ONNX model to compare"


def _generated_rows(
    data: st.DataObject, metadata: ModelMetadata, names: tuple[str, ...]
) -> dict[str, list[Any]]:
    count = data.draw(st.sampled_from([1, 3, 40]))
    features = {f.name: f for f in metadata.features}
    columns: dict[str, list[Any]] = {}
    for name in names:
        feature = features[name]
        if feature.kind == "categorical":
            choices = [*(feature.categories or []), "never-seen", "", None]
            columns[name] = [data.draw(st.sampled_from(choices)) for _ in range(count)]
        else:
            low = feature.min if feature.min is not None else 0.0
            high = feature.max if feature.max is not None else 1.0
            values = st.one_of(st.floats(low, high), st.sampled_from([0, 1, low, high]), NUMBERS)
            columns[name] = [data.draw(values) for _ in range(count)]
    return columns


def _assert_close(onnx: Any, pipeline: Any, task: str, scale: float) -> None:
    if task == "classification":
        assert [str(v) for v in onnx.labels] == [str(v) for v in pipeline.labels]
        np.testing.assert_allclose(
            onnx.probabilities, pipeline.probabilities, rtol=0, atol=PROBABILITY_TOLERANCE
        )
        return
    expected = np.asarray(pipeline.labels, dtype=np.float64)
    np.testing.assert_allclose(
        np.asarray(onnx.labels, dtype=np.float64),
        expected,
        rtol=REGRESSION_TOLERANCE,
        atol=REGRESSION_TOLERANCE * scale,
    )
