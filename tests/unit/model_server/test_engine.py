"""The engine: ONNX Runtime on a checked model.onnx, or the pipeline with its threads pinned."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from model_registry import Registry, artifacts
from model_server.engine import probe_rows
from model_server.model import SklearnModel
from model_server.settings import ModelServerSettings
from tests.conftest import mixed_frame, training_fill
from trainer.settings import TrainerSettings
from trainer.train import run

CASES = [
    ("breast-cancer", "logistic"),
    ("breast-cancer", "random-forest"),
    ("diabetes", "ridge"),
    ("diabetes", "random-forest"),
    ("shop", "logistic"),
    ("shop", "random-forest"),
]


def train(registry: Registry, sample: str, estimator: str, tmp_path: Path) -> str:
    """Register one version; returns the model name."""
    if sample == "shop":
        frame = mixed_frame(300)
        frame.loc[::11, "color"] = np.nan
        data = tmp_path / "shop.csv"
        frame.to_csv(data, index=False)
        settings = TrainerSettings(
            data_uri=str(data),
            target="label",
            model_name="shop",
            estimator=estimator,
            registry_uri=registry.uri,
            max_missing_fraction=0.2,
        )
    else:
        settings = TrainerSettings(sample=sample, estimator=estimator, registry_uri=registry.uri)
    result = run(settings, registry)
    assert result.metadata is not None
    assert result.metadata.onnx is not None
    assert result.metadata.onnx.file == "model.onnx", result.metadata.onnx.reason
    return result.model_name


def serve(registry: Registry, name: str, **values: Any) -> SklearnModel:
    settings = ModelServerSettings(
        registry_uri=registry.uri, model_name=name, model_version="latest", **values
    )
    model = SklearnModel(settings)
    model.load()
    return model


def publish_with_graph(registry: Registry, meta: Any, blob: bytes, graph: bytes) -> None:
    """``meta``'s version again, as the next version, with ``graph`` as its model.onnx."""
    import hashlib

    document = meta.model_dump(mode="json", exclude={"model_name", "version", "created_at"})
    document.pop("artifact")
    document["onnx"] = {
        "file": "model.onnx",
        "sha256": hashlib.sha256(graph).hexdigest(),
        "size_bytes": len(graph),
    }
    registry.publish(meta.model_name, blob, document, onnx=graph)


def documents(model: SklearnModel) -> tuple[dict[str, Any], dict[str, Any]]:
    """A V1 and a V2 request for probe rows (missing values and an unseen category included)."""
    assert model.metadata is not None
    rows = probe_rows(model.metadata, rows=64, seed=3)
    records = [  # JSON nulls for missing values
        {k: (None if pd.isna(v) else v) for k, v in row.items()}
        for row in rows.astype(object).to_dict("records")
    ]
    v1 = {"instances": records}
    inputs = [
        {
            "name": column,
            "datatype": "BYTES" if rows[column].dtype == object else "FP64",
            "shape": [len(rows), 1],
            "data": [r[column] for r in records],
        }
        for column in rows.columns
    ]
    outputs = [{"name": "predict"}]
    if model.metadata.task == "classification":
        outputs.append({"name": "predict_proba"})
    return v1, {"inputs": inputs, "outputs": outputs}


@pytest.mark.parametrize(("sample", "estimator"), CASES)
def test_onnx_and_sklearn_engines_answer_alike_over_v1_and_v2(
    registry: Registry, tmp_path: Path, sample: str, estimator: str
) -> None:
    name = train(registry, sample, estimator, tmp_path)
    onnx, sklearn = serve(registry, name, engine="onnx"), serve(registry, name, engine="sklearn")
    assert (onnx.ready, onnx.engine_name) == (True, "onnx"), onnx.load_error
    assert (sklearn.ready, sklearn.engine_name) == (True, "sklearn")
    v1, v2 = documents(onnx)
    p, q = onnx.answer(v1, "v1").body["predictions"], sklearn.answer(v1, "v1").body["predictions"]
    if sample == "diabetes":  # values: within the tolerance the load-time check enforces
        np.testing.assert_allclose(p, q, rtol=0, atol=1e-5 * max(1.0, float(np.max(q))))
    else:
        assert p == q  # labels: identical
    a, b = onnx.answer(v2, "v2").body["outputs"], sklearn.answer(v2, "v2").body["outputs"]
    assert [o["name"] for o in a] == [o["name"] for o in b]
    if sample != "diabetes":
        assert a[0]["data"] == b[0]["data"]  # labels: identical
    for x, y in zip(a, b, strict=True):
        if x["datatype"].startswith("FP"):
            scale = max(1.0, float(np.max(np.abs(y["data"]))))
            np.testing.assert_allclose(x["data"], y["data"], rtol=0, atol=1e-4 * scale)


def test_auto_prefers_onnx_and_falls_back_to_the_pipeline_without_it(
    registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name = train(registry, "breast-cancer", "logistic", tmp_path)
    assert serve(registry, name).engine_name == "onnx"
    # A version registered before ONNX export: no `onnx` in its metadata.
    meta, blob = registry.read_artifact(name)
    old = meta.model_dump(mode="json", exclude={"model_name", "version", "created_at", "artifact"})
    old.pop("onnx")
    registry.publish(name, blob, old)
    auto = serve(registry, name)
    assert (auto.ready, auto.engine_name, auto.version) == (True, "sklearn", "v2")
    assert "no model.onnx (registered before ONNX export)" in caplog.text
    refused = serve(registry, name, engine="onnx")
    assert not refused.ready
    assert "--engine onnx" in str(refused.load_error)


def test_a_tampered_model_onnx_is_refused_by_its_sha256(registry: Registry, tmp_path: Path) -> None:
    name = train(registry, "breast-cancer", "logistic", tmp_path)
    path = Path(registry.storage.path(f"{name}/v1/model.onnx"))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, one byte changed
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    for engine in ("auto", "onnx"):
        model = serve(registry, name, engine=engine)
        assert not model.ready
        assert "sha256" in str(model.load_error)
    assert serve(registry, name, engine="sklearn").ready  # the pipeline never reads it


def test_the_pipeline_engine_runs_on_one_thread(registry: Registry, tmp_path: Path) -> None:
    """A forest trained with n_jobs=-1 serves with n_jobs=1 (workers own the cores)."""
    name = train(registry, "breast-cancer", "random-forest", tmp_path)
    model = serve(registry, name, engine="sklearn")
    assert model.pipeline.named_steps["model"].get_params()["n_jobs"] == 1
    from threadpoolctl import threadpool_info

    assert all(pool["num_threads"] == 1 for pool in threadpool_info())


@pytest.mark.parametrize("engine", ["sklearn", "onnx"])
def test_a_null_category_is_imputed_as_in_training(
    registry: Registry, tmp_path: Path, engine: str
) -> None:
    """JSON null for a category reaches the pipeline as NaN, which its imputer fills with the
    most frequent category (None would pass through and be one-hot encoded as unknown)."""
    name = train(registry, "shop", "logistic", tmp_path)
    model = serve(registry, name, engine=engine)
    imputed = pd.DataFrame({"x1": [0.2], "x2": [4.0], "color": [np.nan]})
    expected = model.pipeline.predict_proba(imputed)
    as_unknown = model.pipeline.predict_proba(imputed.assign(color=pd.Series([None], dtype=object)))
    assert not np.allclose(expected, as_unknown)  # the difference this test is about
    body = model.answer({"instances": [{"x1": 0.2, "x2": 4.0, "color": None}]}, "v1").body
    assert body["predictions"] == list(model.pipeline.predict(imputed))
    v2 = {
        "inputs": [
            {"name": "x1", "datatype": "FP64", "shape": [1, 1], "data": [0.2]},
            {"name": "x2", "datatype": "FP64", "shape": [1, 1], "data": [4.0]},
            {"name": "color", "datatype": "BYTES", "shape": [1, 1], "data": [None]},
        ],
        "outputs": [{"name": "predict_proba"}],
    }
    proba = model.answer(v2, "v2").body["outputs"][0]["data"]
    np.testing.assert_allclose(proba, expected.ravel(), atol=1e-6)


@pytest.mark.parametrize("engine", ["onnx", "sklearn"])
def test_a_nan_score_never_becomes_a_label(
    registry: Registry, tmp_path: Path, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever computes the scores, a NaN among them raises BadOutput (a 500) instead of
    being answered, with or without probabilities asked: argmax would make it the first
    class."""
    from model_server.errors import BadOutput

    name = train(registry, "shop", "logistic", tmp_path)
    model = serve(registry, name, engine=engine)
    assert model.engine_name == engine

    def nan_first(proba: Any) -> Any:
        proba = np.array(proba, dtype=np.float64)
        proba[0, 0] = np.nan
        return proba

    if engine == "onnx":
        real: Any = model.engine

        class WithANan:
            def predict(self, rows: Any) -> Any:
                labels, proba = real.predict(rows)
                return labels, nan_first(proba)

        monkeypatch.setattr(model, "engine", WithANan())
    else:
        real_proba = model.pipeline.predict_proba
        monkeypatch.setattr(
            model.pipeline, "predict_proba", lambda frame: nan_first(real_proba(frame))
        )
    row = {"x1": 0.2, "x2": 4.0, "color": "red"}
    for probabilities in (False, True):
        document = {"instances": [row], "return_probabilities": probabilities}
        with pytest.raises(BadOutput, match=f"{engine} engine.* computed 1 NaN or infinite"):
            model.answer(document, "v1")


def test_a_graph_that_parts_from_the_pipeline_only_at_the_edges_is_not_served(
    registry: Registry,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A model.onnx that agrees on ordinary rows but not at the range's ends (a three-class
    logistic regression fed float32, as a tree would be: its scores overflow to infinity
    there, and softmax makes NaN of them) is refused at load
    by the edge rows: ``auto`` falls back to the pipeline with the reason, ``--engine onnx``
    stays not ready."""

    from trainer import onnx_export

    frame = mixed_frame(300)
    frame["label"] = np.where(frame["x1"] > 0.5, "high", np.where(frame["x1"] < -0.5, "low", "mid"))
    frame.to_csv(tmp_path / "three.csv", index=False)
    settings = TrainerSettings(
        data_uri=str(tmp_path / "three.csv"),
        target="label",
        model_name="three",
        registry_uri=registry.uri,
    )
    name = run(settings, registry).model_name
    meta, blob = registry.read_artifact(name)
    pipeline = artifacts.load_model(blob, meta.artifact.format)
    monkeypatch.setattr(onnx_export, "_is_tree_ensemble", lambda estimator: True)
    numeric = [f.name for f in meta.features if f.kind == "numeric"]
    categorical = [f.name for f in meta.features if f.kind != "numeric"]
    graph = onnx_export.convert(pipeline, numeric, categorical, classifier=True)
    ordinary = probe_rows(meta)
    assert onnx_export.compare(pipeline, graph, ordinary, numeric, categorical)["passed"]
    publish_with_graph(registry, meta, blob, graph)
    auto = serve(registry, name)
    assert (auto.ready, auto.engine_name, auto.version) == (True, "sklearn", "v2")
    assert "model.onnx disagrees with the pipeline on edge rows" in caplog.text
    refused = serve(registry, name, engine="onnx")
    assert not refused.ready
    assert "disagrees with the pipeline on edge rows" in str(refused.load_error)


def test_gradient_boosting_is_served_by_the_pipeline(
    registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """HistGradientBoosting compares float64 values with float64 thresholds; ONNX Runtime's
    trees compare float32: the trainer compiles no model.onnx for it (saying why), and a
    model.onnx registered earlier is refused at load: auto serves the pipeline, --engine onnx
    is not ready."""
    settings = TrainerSettings(
        sample="breast-cancer",
        estimator="gradient-boosting",
        param={"max_iter": "20"},
        registry_uri=registry.uri,
    )
    result = run(settings, registry)
    assert result.metadata is not None
    assert result.metadata.onnx is not None
    assert result.metadata.onnx.file is None
    assert "float64 split thresholds" in str(result.metadata.onnx.reason)
    # a version compiled before this rule: its model.onnx is there, and still not served
    from trainer import onnx_export

    meta, blob = registry.read_artifact(result.model_name)
    pipeline = artifacts.load_model(blob, meta.artifact.format)
    numeric = [f.name for f in meta.features]
    graph = onnx_export.convert(pipeline, numeric, [], classifier=True)
    publish_with_graph(registry, meta, blob, graph)
    auto = serve(registry, result.model_name)
    assert (auto.ready, auto.engine_name, auto.version) == (True, "sklearn", "v2")
    assert "float64 split thresholds" in caplog.text
    refused = serve(registry, result.model_name, engine="onnx")
    assert not refused.ready
    assert "--engine onnx" in str(refused.load_error)


def _imputed(pipeline: Any, row: dict[str, Any]) -> pd.DataFrame:
    """``row`` with each missing value filled in as the pipeline's imputers fill it: the median
    of a number, the most frequent category."""
    fill = training_fill(pipeline)
    return pd.DataFrame([{k: fill[k] if v is None else v for k, v in row.items()}])


@pytest.mark.parametrize("engine", ["onnx", "sklearn"])
def test_a_null_for_a_feature_trained_without_missing_values_is_imputed_as_in_training(
    registry: Registry, tmp_path: Path, engine: str
) -> None:
    """Training had no missing value at all (``nullable`` false for every feature): a null for
    any of them is imputed by the pipeline's own imputer (the median, the most frequent
    category), and both engines answer what the pipeline answers for the imputed row."""
    data = tmp_path / "complete.csv"
    mixed_frame(300).to_csv(data, index=False)
    settings = TrainerSettings(
        data_uri=str(data), target="label", model_name="complete", registry_uri=registry.uri
    )
    result = run(settings, registry)
    assert result.metadata is not None
    assert not any(f.nullable for f in result.metadata.features)
    model = serve(registry, result.model_name, engine=engine)
    assert model.engine_name == engine, model.load_error
    for row in (
        {"x1": None, "x2": 4.0, "color": "red"},
        {"x1": 0.2, "x2": None, "color": None},
        {"x1": None, "x2": None, "color": None},
    ):
        expected = model.pipeline.predict_proba(_imputed(model.pipeline, row))
        answer = model.answer({"instances": [row], "return_probabilities": True}, "v1")
        np.testing.assert_allclose(answer.body["probabilities"], expected, rtol=0, atol=1e-6)
        assert answer.decoded.missing == {k: 1 for k, v in row.items() if v is None}


def test_a_graph_that_imputes_a_feature_trained_without_missing_values_wrongly_is_refused(
    registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A version checked by the trainer before edge rows had missing values for every feature
    (here: a graph that fills x2, which training never had missing, with the wrong value; its
    probe rows have no missing x2, so they agree) is checked on those rows at load: ``auto``
    serves the pipeline, with the reason."""
    from trainer import onnx_export

    name = train(registry, "shop", "logistic", tmp_path)  # color had missing values; x1, x2 not
    meta, blob = registry.read_artifact(name)
    assert {f.name: f.nullable for f in meta.features} == {"x1": False, "x2": False, "color": True}
    pipeline = artifacts.load_model(blob, meta.artifact.format)
    wrong = copy.deepcopy(pipeline)
    impute = wrong.named_steps["prep"].named_transformers_["numeric"].named_steps["impute"]
    impute.statistics_ = impute.statistics_ + np.array([0.0, 100.0])  # x2's median, far off
    numeric, categorical = ["x1", "x2"], ["color"]
    graph = onnx_export.convert(wrong, numeric, categorical, classifier=True)
    assert onnx_export.compare(pipeline, graph, probe_rows(meta), numeric, categorical)["passed"]
    publish_with_graph(registry, meta, blob, graph)
    auto = serve(registry, name)
    assert (auto.ready, auto.engine_name, auto.version) == (True, "sklearn", "v2")
    assert "model.onnx disagrees with the pipeline on edge rows" in caplog.text
