"""ONNX export at training time: conversion, the check against the pipeline, the fallbacks."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.pipeline import Pipeline

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
    session = onnx_export.session(compiled.blob)
    labels, probabilities = session.run(None, onnx_export.onnx_inputs(rows, numeric, categorical))
    assert list(labels.ravel()) == list(pipeline.predict(rows))
    assert np.abs(probabilities - pipeline.predict_proba(rows)).max() < 1e-4


def test_trees_that_float32_moves_across_a_split_get_no_onnx_and_say_why() -> None:
    frame = load_sample("diabetes").frame
    target = frame.columns[-1]
    pipeline, numeric, categorical = fitted("gradient-boosting", frame, target, "regression")
    compiled = onnx_export.export(pipeline, frame.drop(columns=target), numeric, categorical)
    assert compiled.blob is None
    assert "disagrees with the pipeline (float32)" in str(compiled.reason)
    assert compiled.info["check"]["passed"] is False


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
