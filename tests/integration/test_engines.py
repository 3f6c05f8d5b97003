"""Each estimator the trainer makes, served twice over HTTP, by ONNX Runtime (``--engine onnx``)
and by the pipeline (``--engine sklearn``): the same answers over V1 and V2."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from model_registry import Registry
from model_server.engine import probe_rows
from tests.conftest import mixed_frame
from tests.integration.server_harness import ServerProcess
from trainer.settings import TrainerSettings
from trainer.train import run

pytestmark = pytest.mark.integration

CASES = [
    ("breast-cancer", "logistic", {}),
    ("breast-cancer", "random-forest", {"n_estimators": "30"}),
    ("breast-cancer", "gradient-boosting", {}),
    ("diabetes", "linear", {}),
    ("diabetes", "ridge", {}),
    ("shop", "gradient-boosting", {}),
]


def _train(uri: str, sample: str, estimator: str, param: dict[str, str], tmp: Path) -> str:
    if sample == "shop":
        frame = mixed_frame(300)
        frame.loc[::11, "color"] = np.nan
        frame.to_csv(tmp / "shop.csv", index=False)
        settings = TrainerSettings(
            data_uri=str(tmp / "shop.csv"),
            target="label",
            model_name="shop",
            max_missing_fraction=0.2,
            registry_uri=uri,
            estimator=estimator,
        )
    else:
        settings = TrainerSettings(
            sample=sample, registry_uri=uri, estimator=estimator, param=param
        )
    result = run(settings)
    assert result.metadata is not None
    assert result.metadata.onnx is not None
    assert result.metadata.onnx.file == "model.onnx", result.metadata.onnx.reason
    return result.model_name


def _requests(uri: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """V1 and V2 bodies for probe rows: each feature's range and past it, missing values,
    a category never seen in training."""
    metadata, _ = Registry(uri).read_artifact(name, "latest")
    rows = probe_rows(metadata, rows=48, seed=7)
    records = [
        {k: (None if pd.isna(v) else v) for k, v in row.items()}
        for row in rows.astype(object).to_dict("records")
    ]
    inputs = [
        {
            "name": column,
            "datatype": "BYTES" if rows[column].dtype == object else "FP64",
            "shape": [len(rows)],
            "data": [r[column] for r in records],
        }
        for column in rows.columns
    ]
    v1: dict[str, Any] = {"instances": records}
    if metadata.task == "classification":
        v1["return_probabilities"] = True
    return v1, {"inputs": inputs}


def _ready(server: ServerProcess) -> None:
    deadline = time.monotonic() + 60
    while server.client.get("/v2/health/ready").status_code != 200:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)


@pytest.mark.parametrize(("sample", "estimator", "param"), CASES)
def test_onnx_and_the_pipeline_answer_alike_over_http(
    tmp_path: Path, sample: str, estimator: str, param: dict[str, str]
) -> None:
    uri = str(tmp_path / "registry")
    name = _train(uri, sample, estimator, param, tmp_path)
    v1, v2 = _requests(uri, name)
    common = ["--registry-uri", uri, "--model-name", name, "--model-version", "latest"]
    servers = {
        engine: ServerProcess([*common, "--engine", engine], tmp_path)
        for engine in ("onnx", "sklearn")
    }
    try:
        with ThreadPoolExecutor(2) as pool:  # both start at once
            list(pool.map(ServerProcess.start, servers.values()))
        answers: dict[str, dict[str, Any]] = {}
        for engine, server in servers.items():
            _ready(server)
            metadata = server.client.get(f"/v2/models/{name}").json()
            assert metadata["parameters"]["engine"] == engine
            first, second = (
                server.post(f"/v1/models/{name}:predict", v1),
                server.post(f"/v2/models/{name}/infer", v2),
            )
            assert (first.status_code, second.status_code) == (200, 200), server.log()
            answers[engine] = {"v1": first.json(), "v2": second.json()}
    finally:
        for server in servers.values():
            server.stop()
    onnx, pipeline = answers["onnx"], answers["sklearn"]
    regression = sample == "diabetes"
    p, q = onnx["v1"]["predictions"], pipeline["v1"]["predictions"]
    if regression:  # within the tolerance of the load-time check
        np.testing.assert_allclose(p, q, rtol=0, atol=1e-5 * max(1.0, float(np.max(np.abs(q)))))
    else:
        assert p == q
        np.testing.assert_allclose(
            onnx["v1"]["probabilities"], pipeline["v1"]["probabilities"], rtol=0, atol=1e-4
        )
    a, b = onnx["v2"]["outputs"], pipeline["v2"]["outputs"]
    assert [(o["name"], o["datatype"], o["shape"]) for o in a] == [
        (o["name"], o["datatype"], o["shape"]) for o in b
    ]
    for x, y in zip(a, b, strict=True):
        if x["datatype"] == "FP64":
            scale = max(1.0, float(np.max(np.abs(y["data"]))))
            np.testing.assert_allclose(x["data"], y["data"], rtol=0, atol=1e-4 * scale)
        else:
            assert x["data"] == y["data"]  # labels: identical
