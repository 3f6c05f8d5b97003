"""ONNX export at training time: conversion, the check against the pipeline, the fallbacks."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.pipeline import Pipeline

from model_registry.onnx_runtime import onnx_inputs, session
from tests.conftest import mixed_frame
from trainer import onnx_export
from trainer.data import load_sample
from trainer.pipeline import build_pipeline


def fitted(
    estimator: str, frame: pd.DataFrame, target: str, task: str
) -> tuple[Pipeline, list[str], list[str]]:
    features = frame.drop(columns=target)
    numeric = [str(c) for c in features if pd.api.types.is_numeric_dtype(features[c])]
    categorical = [str(c) for c in features if c not in numeric]
    pipeline = build_pipeline(
        task=task,  # type: ignore[arg-type]
        estimator=estimator,
        numeric=numeric,
        categorical=categorical,
        params={},
        seed=0,
    )
    return pipeline.fit(features, frame[target]), numeric, categorical


@pytest.mark.parametrize(
    ("sample", "estimator"),
    [("breast-cancer", "logistic"), ("diabetes", "linear"), ("diabetes", "ridge")],
)
def test_linear_pipelines_export_and_agree_with_the_pipeline(
    sample: Literal["breast-cancer", "diabetes"], estimator: str
) -> None:
    frame = load_sample(sample).frame
    target = frame.columns[-1]
    task = "classification" if sample == "breast-cancer" else "regression"
    pipeline, numeric, categorical = fitted(estimator, frame, target, task)
    rows = frame.drop(columns=target)
    compiled = onnx_export.export(pipeline, rows, numeric, categorical)
    assert compiled.blob is not None, compiled.reason
    check = compiled.info["check"]
    assert check["passed"]
    assert check["rows"] == len(rows)
    assert check["labels_differing"] == 0
    assert check["max_abs_difference"] <= check["tolerance"]
    assert compiled.info["sha256"] == __import__("hashlib").sha256(compiled.blob).hexdigest()
    assert {"skl2onnx", "onnxruntime", "opset"} <= set(compiled.info)


def test_categorical_columns_with_missing_and_unseen_values_export() -> None:
    """The categorical imputer is rebuilt for the graph's "" encoding of a missing category:
    missing, and never-seen categories (one-hot ignores them), predict as in the pipeline."""
    frame = mixed_frame(400)
    frame.loc[::17, "color"] = np.nan
    frame.loc[::13, "x1"] = np.nan
    pipeline, numeric, categorical = fitted("logistic", frame, "label", "classification")
    rows = frame.drop(columns="label")
    rows.loc[rows.index[:5], "color"] = "purple"  # unseen at training
    compiled = onnx_export.export(pipeline, rows, numeric, categorical)
    assert compiled.blob is not None, compiled.reason
    runtime = session(compiled.blob)
    labels, probabilities = runtime.run(None, onnx_inputs(rows, numeric, categorical))
    assert list(labels.ravel()) == list(pipeline.predict(rows))
    assert np.abs(probabilities - pipeline.predict_proba(rows)).max() < 1e-4


@pytest.mark.parametrize("estimator", ["random-forest"])
@pytest.mark.parametrize("sample", ["breast-cancer", "diabetes"])
def test_tree_ensembles_agree_because_the_graph_casts_where_sklearn_does(
    sample: Literal["breast-cancer", "diabetes"], estimator: str
) -> None:
    """Imputation and scaling in float64, then float32 into the trees (what scikit-learn's
    forests do to their input): the same splits taken, answers equal to float32 accumulation.
    Gradient boosting compares in float64 and is not compiled (``unsupported``)."""
    frame = load_sample(sample).frame
    target = frame.columns[-1]
    task = "classification" if sample == "breast-cancer" else "regression"
    pipeline, numeric, categorical = fitted(estimator, frame, target, task)
    compiled = onnx_export.export(pipeline, frame.drop(columns=target), numeric, categorical)
    assert compiled.blob is not None, compiled.reason
    assert compiled.info["check"]["labels_differing"] == 0


def test_without_the_cast_a_float32_graph_would_fail_the_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check catches the imprecision it is there for: a graph fed float32 (as skl2onnx
    builds by default) moves a row across a split of the gradient-boosting model."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    frame = load_sample("diabetes").frame
    target = frame.columns[-1]
    pipeline, numeric, categorical = fitted("gradient-boosting", frame, target, "regression")

    def float32_graph(p: Pipeline, n: list[str], c: list[str], classifier: bool) -> bytes:
        types = [(name, FloatTensorType([None, 1])) for name in n]
        return bytes(
            to_onnx(p, initial_types=types, target_opset=onnx_export.OPSET).SerializeToString()
        )

    # skl2onnx's tree converter fails (uint32 attributes) when a float32 graph is the first it
    # builds in a process; a double graph first sets it up
    onnx_export.convert(pipeline, numeric, categorical, classifier=False)
    monkeypatch.setattr(onnx_export, "unsupported", lambda pipeline: None)  # compile it anyway
    monkeypatch.setattr(onnx_export, "convert", float32_graph)
    monkeypatch.setattr(
        onnx_export,
        "onnx_inputs",
        lambda rows, n, c: {name: rows[[name]].to_numpy(np.float32) for name in n},
    )
    compiled = onnx_export.export(pipeline, frame.drop(columns=target), numeric, categorical)
    assert compiled.blob is None
    assert "disagrees with the pipeline" in str(compiled.reason)
    assert compiled.info["check"]["max_abs_difference"] > 1.0


class Unknown(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """An estimator skl2onnx has no converter for."""

    def fit(self, x: Any, y: Any) -> Unknown:
        self.classes_ = np.unique(y)
        return self

    def predict(self, x: Any) -> Any:
        return np.full(len(x), self.classes_[0])

    def predict_proba(self, x: Any) -> Any:
        return np.tile([1.0] + [0.0] * (len(self.classes_) - 1), (len(x), 1))


def test_a_pipeline_that_cannot_convert_gets_no_onnx_with_the_reason() -> None:
    frame = mixed_frame(100)
    pipeline, numeric, categorical = fitted("logistic", frame, "label", "classification")
    pipeline.steps[-1] = ("model", Unknown().fit(None, frame["label"]))
    compiled = onnx_export.export(pipeline, frame.drop(columns="label"), numeric, categorical)
    assert compiled.blob is None
    assert str(compiled.reason).startswith("cannot convert to ONNX")


def test_a_planted_disagreement_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The graph of another model (labels flipped) must fail the check, not be registered."""
    frame = mixed_frame(300)
    pipeline, numeric, categorical = fitted("logistic", frame, "label", "classification")
    flipped = frame.assign(label=np.where(frame["label"] == "yes", "no", "yes"))
    other, _, _ = fitted("logistic", flipped, "label", "classification")
    real_convert = onnx_export.convert
    monkeypatch.setattr(
        onnx_export, "convert", lambda p, n, c, classifier: real_convert(other, n, c, classifier)
    )
    compiled = onnx_export.export(pipeline, frame.drop(columns="label"), numeric, categorical)
    assert compiled.blob is None
    assert "labels differ" in str(compiled.reason)
