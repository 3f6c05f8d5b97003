"""``model_registry.values``: what a value means for the trainer, the codec and both engines."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from model_registry import Registry
from model_registry.onnx_runtime import agreement, largest_size, onnx_inputs, session
from model_registry.values import (
    LIMIT,
    category_array,
    edge_columns,
    frame_of,
    is_missing,
    non_finite,
    numeric_limits,
    pipeline_outputs,
)
from model_server.codec_v1 import decode_v1
from model_server.codec_v2 import decode_v2
from model_server.schema import Columns, FeatureSchema
from tests.conftest import mixed_frame
from trainer.pipeline import build_pipeline
from trainer.settings import TrainerSettings
from trainer.train import run

SCHEMA = FeatureSchema(("a", "n", "c"), frozenset({"c"}), None, max_rows=10)
COLUMNS: dict[str, list[Any]] = {
    "a": [0.5, None, 2.0, -1.0, 3.0],
    "n": [1, 2, 3, 4, 5],  # whole numbers where floats are expected
    "c": ["red", "", None, "never-seen", "blue"],
}


def test_missing_means_null_nan_or_empty_and_nothing_else() -> None:
    assert all(is_missing(v) for v in (None, math.nan, np.float32("nan"), ""))
    assert not any(is_missing(v) for v in (0, 0.0, " ", "none", "nan", False))
    column = category_array(["a", "", None, math.nan, "b"])
    assert column[0] == "a"
    assert column[4] == "b"
    assert all(isinstance(v, float) and math.isnan(v) for v in column[1:4])


def _binary_like(columns: dict[str, list[Any]]) -> dict[str, Any]:
    """V2 per-feature tensors as binary data decodes them: arrays, NaN and ``""`` for missing."""
    inputs = []
    for name, values in columns.items():
        if name == "c":
            array = np.array(["" if v is None else v for v in values], dtype=object)
            datatype = "BYTES"
        else:
            array = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
            datatype = "FP64"
        inputs.append({"name": name, "datatype": datatype, "shape": [len(values)], "data": array})
    return {"inputs": inputs}


@pytest.mark.parametrize("encoding", ["v1-objects", "v1-lists", "v2-json", "v2-binary"])
def test_frame_of_reads_client_values_as_the_codec_does(encoding: str) -> None:
    """The trainer's ONNX check and the load-time check build rows with ``frame_of``; the
    codec builds them from requests. Both must make the same DataFrame of the same values."""
    rows = list(zip(*COLUMNS.values(), strict=True))
    if encoding == "v1-objects":
        decoded = decode_v1(
            {"instances": [dict(zip(COLUMNS, r, strict=True)) for r in rows]}, SCHEMA
        )
    elif encoding == "v1-lists":
        decoded = decode_v1({"instances": [list(r) for r in rows]}, SCHEMA)
    elif encoding == "v2-json":
        inputs = [
            {
                "name": name,
                "datatype": "BYTES" if name == "c" else "FP64",
                "shape": [len(values)],
                "data": values,
            }
            for name, values in COLUMNS.items()
        ]
        decoded = decode_v2({"inputs": inputs}, SCHEMA)
    else:
        decoded = decode_v2(_binary_like(COLUMNS), SCHEMA)
    assert isinstance(decoded.frame, Columns)
    pd.testing.assert_frame_equal(decoded.frame.frame(), frame_of(COLUMNS, {"c"}))


def test_numeric_limits_come_from_the_pipelines_scaler() -> None:
    frame = mixed_frame()
    pipeline = build_pipeline(
        task="classification",
        estimator="logistic",
        numeric=["x1", "x2"],
        categorical=["color"],
        params={},
        seed=0,
    ).fit(frame[["x1", "x2", "color"]], frame["label"])
    limits = numeric_limits(pipeline, ["x1", "x2"])
    scaler = pipeline.named_steps["prep"].named_transformers_["numeric"].named_steps["scale"]
    for name, mean, scale in zip(["x1", "x2"], scaler.mean_, scaler.scale_, strict=True):
        low, high = limits[name]
        assert low == pytest.approx(mean - LIMIT * scale)
        assert high == pytest.approx(mean + LIMIT * scale)
        # the ends standardise to at most float32's largest value, so a forest's cast holds
        assert abs((high - mean) / scale) <= float(np.finfo(np.float32).max)
    bare = Pipeline([("model", LogisticRegression())])
    assert numeric_limits(bare, ["x"]) == {"x": (-LIMIT, LIMIT)}


@pytest.mark.parametrize(
    "model", [RandomForestClassifier(20, random_state=0), LogisticRegression()]
)
def test_pipeline_outputs_labels_are_the_models_own(model: Any) -> None:
    frame = mixed_frame(300)
    x = frame[["x1", "x2"]]
    fitted = model.fit(x, frame["label"])
    labels, proba = pipeline_outputs(fitted, x, classifier=True)
    assert proba is not None
    assert labels.tolist() == fitted.predict(x).tolist()
    np.testing.assert_array_equal(proba, fitted.predict_proba(x))
    assert non_finite(labels, proba, True) == 0
    proba[3, 1] = np.inf
    proba[5, 0] = np.nan
    assert non_finite(labels, proba, True) == 2


def test_a_regressor_off_on_missing_categories_fails_the_edge_check(tmp_path: Path) -> None:
    """Edge rows hold extreme outputs (about 1e39 for a ridge at its range's ends), and with
    ten numeric features more than a tenth of them do. Held to its own largest (or typical)
    output, a graph that imputes a missing category wrongly passed there; held to the data
    rows' scale, it fails."""
    from trainer import onnx_export

    rng = np.random.default_rng(4)
    frame = mixed_frame(300)
    for i in range(8):
        frame[f"z{i}"] = rng.normal(size=len(frame))
    frame["target"] = frame["x1"] * 3 + np.where(frame["color"] == "red", 2.0, -1.0)
    frame = frame.drop(columns="label")
    frame.loc[::9, "color"] = np.nan
    frame.to_csv(tmp_path / "d.csv", index=False)
    registry = Registry(str(tmp_path / "r"))
    settings = TrainerSettings(
        data_uri=str(tmp_path / "d.csv"),
        target="target",
        model_name="d",
        estimator="ridge",
        max_missing_fraction=0.2,
        registry_uri=registry.uri,
    )
    result = run(settings, registry)
    assert result.metadata is not None
    meta, pipeline = registry.load_model("d")
    assert meta.onnx is not None
    assert meta.onnx.file == "model.onnx"
    wrong = copy.deepcopy(pipeline)
    impute = wrong.named_steps["prep"].named_transformers_["categorical"].named_steps["impute"]
    fill = impute.statistics_[0]
    impute.statistics_ = np.array(["red" if fill != "red" else "blue"], dtype=object)
    numeric = [f.name for f in meta.features if f.kind == "numeric"]
    categorical = ["color"]
    assert len(numeric) == 10
    graph = onnx_export.convert(wrong, numeric, categorical, classifier=False)
    edges = frame_of(edge_columns(meta.features, numeric_limits(pipeline, numeric)), categorical)
    outputs = session(graph).run(None, onnx_inputs(edges, numeric, categorical))
    expected, _ = pipeline_outputs(pipeline, edges, classifier=False)
    extreme = np.abs(expected) > 1e30
    assert extreme.mean() > 0.1  # over a tenth of the rows: a 90th percentile would be extreme
    features = frame.drop(columns="target")[list(meta.feature_names)]
    scale = largest_size(pipeline_outputs(pipeline, features, classifier=False)[0])
    check = agreement(pipeline, edges, outputs[0], None, scale)
    assert not check["passed"]
    assert check["values_over_tolerance"] > 0
    assert check["scale"] == scale < 100
    # held to the edge rows' own largest output, the same graph would have passed
    assert agreement(pipeline, edges, outputs[0], None)["passed"]


def test_edge_rows_hold_missing_values_for_every_feature() -> None:
    """Whether or not training had missing values for a feature (``nullable``), a client may
    send one and the server imputes it: the edge rows hold null and NaN for every number, null
    and "" for every category, and a first row missing every feature."""
    from model_registry.metadata import FeatureSpec

    features = [
        FeatureSpec(name="a", dtype="float64", kind="numeric", min=-1.0, max=5.0, nullable=True),
        FeatureSpec(name="n", dtype="int64", kind="numeric", min=0.0, max=40.0),
        FeatureSpec(name="c", dtype="object", kind="categorical", categories=["x", "y"]),
        FeatureSpec(
            name="many",
            dtype="object",
            kind="categorical",
            categories=[f"k{i}" for i in range(300)],  # more categories than edge rows
        ),
    ]
    columns = edge_columns(features, {"a": (-1e30, 1e30), "n": (-1e9, 1e9)}, rows=256)
    assert all(len(values) == 256 for values in columns.values())
    assert all(values[0] is None for values in columns.values())  # every feature missing
    for name in ("a", "n"):
        later = columns[name][1:]
        assert None in later
        assert any(isinstance(v, float) and math.isnan(v) for v in later)
    for name in ("c", "many"):
        assert None in columns[name][1:]
        assert "" in columns[name]
    frame = frame_of(columns, {"c", "many"})
    assert frame.iloc[0].isna().all()
    assert frame.isna().any().all()
