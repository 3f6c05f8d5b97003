"""Whole training runs on bundled samples and files: registration, gate, metadata, round trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from model_registry import Registry
from model_registry.artifacts import dump_model
from tests.conftest import mixed_frame
from trainer.data import load_sample, load_uri, prepare
from trainer.errors import ConfigError, DataError
from trainer.pipeline import build_pipeline
from trainer.settings import TrainerSettings
from trainer.train import run


def settings(registry: Registry, **values: Any) -> TrainerSettings:
    values.setdefault("sample", "breast-cancer")
    return TrainerSettings(registry_uri=registry.uri, **values)


def test_sample_is_registered_with_complete_metadata(registry: Registry) -> None:
    result = run(settings(registry, promote=True), registry)
    assert result.outcome == "registered"
    assert result.version == "v1"
    assert registry.aliases("breast-cancer") == {"production": "v1"}
    meta = registry.get("breast-cancer", "production").model_dump(mode="json")
    # Every field DESIGN.md's registry contract names.
    for key in ("model_name", "version", "created_at", "artifact", "task", "features", "target"):
        assert meta[key], key
    assert set(meta["artifact"]) >= {"file", "format", "sha256"}
    assert meta["artifact"]["format"] == "skops"
    assert meta["task"] == "classification"
    assert len(meta["features"]) == 30
    for feature in meta["features"]:
        assert feature["dtype"] == "float64"
        assert feature["min"] <= feature["max"]
    assert meta["target"] == {
        "name": "diagnosis",
        "dtype": "object",
        "classes": ["benign", "malignant"],
    }
    assert set(meta["metrics"]) >= {"accuracy", "f1", "roc_auc"}
    assert meta["metrics"]["roc_auc"] > 0.95
    training = meta["training"]
    assert set(training) >= {"rows", "data_uri", "data_sha256", "params", "duration_seconds"}
    assert training["rows"] + training["test_rows"] == 569
    assert training["data_uri"] == "sample:breast-cancer"
    assert len(training["data_sha256"]) == 64
    provenance = meta["provenance"]
    assert set(provenance) >= {"git_sha", "image_digest", "python", "sklearn", "package_version"}
    assert provenance["package_version"] == "0.1.0"
    reference = meta["reference"]
    radius = reference["features"]["mean_radius"]
    assert len(radius["fractions"]) == len(radius["edges"]) + 1 == 10
    assert sum(radius["fractions"]) == pytest.approx(1.0, abs=1e-4)
    assert reference["prediction"]["categories"] == ["benign", "malignant"]
    onnx = meta["onnx"]  # the logistic pipeline compiles, checked on every row
    assert onnx["file"] == "model.onnx"
    assert onnx["check"]["rows"] == 569
    assert onnx["check"]["passed"] is True
    assert set(onnx) >= {"sha256", "size_bytes", "opset", "skl2onnx", "onnxruntime"}
    stored = registry.read_onnx(registry.get("breast-cancer", "v1"))
    assert stored is not None
    assert len(stored) == onnx["size_bytes"]


def test_regression_sample(registry: Registry) -> None:
    result = run(settings(registry, sample="diabetes"), registry)
    meta = registry.get("diabetes")
    assert result.outcome == "registered"
    assert meta.task == "regression"
    assert meta.target.classes is None
    assert set(meta.metrics) == {"rmse", "mae", "r2"}
    assert meta.primary_metric == "rmse"
    assert meta.reference.prediction is not None
    assert meta.reference.prediction.kind == "numeric"


def test_registered_model_predicts_identically_after_loading(registry: Registry) -> None:
    prepared = prepare(load_sample("breast-cancer"))
    pipeline = build_pipeline(
        task="classification",
        estimator="logistic",
        numeric=prepared.numeric,
        categorical=[],
        params={},
        seed=0,
    ).fit(prepared.features, prepared.target)
    registry.publish("roundtrip", dump_model(pipeline), _metadata_from_run(registry))
    _, loaded = registry.load_model("roundtrip")
    np.testing.assert_array_equal(
        loaded.predict(prepared.features), pipeline.predict(prepared.features)
    )
    np.testing.assert_array_equal(
        loaded.predict_proba(prepared.features), pipeline.predict_proba(prepared.features)
    )


def _metadata_from_run(registry: Registry) -> dict[str, Any]:
    run(settings(registry), registry)
    meta = registry.get("breast-cancer").model_dump(mode="json")
    for key in ("model_name", "version", "created_at", "artifact", "onnx"):
        del meta[key]
    return meta


def test_metrics_in_metadata_are_those_of_the_stored_model(registry: Registry) -> None:
    run(settings(registry), registry)
    meta, model = registry.load_model("breast-cancer")
    prepared = prepare(load_sample("breast-cancer"))
    from sklearn.model_selection import train_test_split

    _, x_test, _, y_test = train_test_split(
        prepared.features, prepared.target, test_size=0.2, random_state=42, stratify=prepared.target
    )
    proba = model.predict_proba(x_test)[:, 1]
    assert roc_auc_score(y_test == "malignant", proba) == pytest.approx(meta.metrics["roc_auc"])


def test_worse_model_is_rejected_and_nothing_registered(registry: Registry) -> None:
    run(settings(registry, promote=True), registry)
    worse = settings(
        registry, estimator="random-forest", param={"n_estimators": "3", "max_depth": "1"}
    )
    result = run(worse, registry)
    assert result.outcome == "rejected"
    assert result.gate.basis == "same-holdout"
    assert result.gate.champion_version == "v1"
    assert "is worse than production v1's" in result.gate.reason
    assert result.gate.verdict == "rejected"
    assert result.gate.tolerance_needed is not None
    assert result.gate.remedy.endswith("--force registers anyway")
    assert [m.version for m in registry.list_versions("breast-cancer")] == ["v1"]
    assert registry.storage.find("breast-cancer/v2") == {}


def test_tolerance_and_force_let_a_worse_model_in(registry: Registry) -> None:
    run(settings(registry, promote=True), registry)
    worse = {"estimator": "random-forest", "param": {"n_estimators": "3", "max_depth": "1"}}
    assert run(settings(registry, tolerance=0.5, **worse), registry).outcome == "registered"
    forced = run(settings(registry, force=True, **worse), registry)
    assert forced.outcome == "registered"
    assert forced.gate.forced
    assert registry.aliases("breast-cancer") == {"production": "v1"}


def test_better_model_passes_and_promotes(registry: Registry) -> None:
    run(
        settings(
            registry,
            promote=True,
            estimator="random-forest",
            param={"n_estimators": "3", "max_depth": "1"},
        ),
        registry,
    )
    result = run(settings(registry, promote=True), registry)
    assert result.outcome == "registered"
    assert result.gate.accepted
    assert registry.aliases("breast-cancer") == {"production": "v2"}


def test_file_with_categorical_columns(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "churn.parquet"
    mixed_frame(300).to_parquet(path)
    result = run(
        TrainerSettings(
            registry_uri=registry.uri,
            data_uri=str(path),
            target="label",
            model_name="churn",
            estimator="gradient-boosting",
            param={"max_iter": "20"},
        ),
        registry,
    )
    assert result.outcome == "registered"
    meta = registry.get("churn")
    color = next(f for f in meta.features if f.name == "color")
    assert color.kind == "categorical"
    assert color.categories == ["blue", "green", "red"]
    assert meta.reference.features["color"].categories == ["blue", "green", "red"]
    assert meta.training.params["max_iter"] == 20
    assert meta.training.data_uri == str(path)
    _, model = registry.load_model("churn")
    unseen = pd.DataFrame({"x1": [0.1], "x2": [3.0], "color": ["purple"]})
    assert model.predict(unseen)[0] in {"yes", "no"}


def test_invalid_data_registers_nothing(registry: Registry, tmp_path: Path) -> None:
    frame = mixed_frame()
    frame.loc[:5, "x2"] = np.nan
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="x2"):
        run(
            TrainerSettings(
                registry_uri=registry.uri, data_uri=str(path), target="label", model_name="m"
            ),
            registry,
        )
    assert registry.storage.find("") == {}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"param": {"no_such": "1"}}, "unknown parameter"),
        ({"param": {"C": "-1"}}, "invalid --param"),
        ({"estimator": "linear"}, "does not do classification"),
        ({"primary_metric": "rmse"}, "not defined here"),
        ({"primary_metric": "bogus"}, "unknown --primary-metric"),
    ],
)
def test_bad_configuration_is_a_config_error(
    registry: Registry, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        run(settings(registry, **values), registry)
    assert registry.storage.find("") == {}


def test_joblib_needs_allow_pickle() -> None:
    with pytest.raises(ValueError, match="allow-pickle"):
        TrainerSettings(sample="diabetes", artifact_format="joblib")


def churn_table(rows: int = 600) -> pd.DataFrame:
    """Numbers and text with a few missing values in every encoding: None, NaN and "" in text
    (and "NA", which is North America, not a missing value), NaN in numbers."""
    frame = mixed_frame(rows, seed=5)
    rng = np.random.default_rng(5)
    color = frame["color"].astype(object)
    color[rng.choice(rows, 6, replace=False)] = None
    color[rng.choice(rows, 6, replace=False)] = np.nan
    color[rng.choice(rows, 6, replace=False)] = ""
    frame["color"] = color
    frame["region"] = rng.choice(["EU", "NA", "APAC"], size=rows)
    frame.loc[frame["region"] == "NA", "x1"] += 0.5  # "NA" matters to the label
    frame.loc[rng.choice(rows, 8, replace=False), "x2"] = np.nan
    return frame


@pytest.mark.parametrize(
    ("estimator", "params"),
    [("logistic", {}), ("random-forest", {"n_estimators": "25", "n_jobs": "1"})],
)
def test_csv_and_parquet_of_one_table_train_the_same_model(
    tmp_path: Path, estimator: str, params: dict[str, str]
) -> None:
    table = churn_table()
    table.to_csv(tmp_path / "churn.csv", index=False)
    table.to_parquet(tmp_path / "churn.parquet")
    results, models, metas = {}, {}, {}
    for fmt in ("csv", "parquet"):
        registry = Registry(str(tmp_path / f"registry-{fmt}"))
        results[fmt] = run(
            TrainerSettings(
                registry_uri=registry.uri,
                data_uri=str(tmp_path / f"churn.{fmt}"),
                target="label",
                model_name="churn",
                max_missing_fraction=0.1,
                estimator=estimator,
                param=params,
                seed=7,
            ),
            registry,
        )
        metas[fmt], models[fmt] = registry.load_model("churn")
    assert results["csv"].metrics == results["parquet"].metrics  # exactly, every metric
    features = {fmt: [f.model_dump() for f in meta.features] for fmt, meta in metas.items()}
    assert features["csv"] == features["parquet"]
    assert metas["csv"].reference == metas["parquet"].reference
    prepared = prepare(load_uri(str(tmp_path / "churn.parquet"), "label"), max_missing_fraction=0.1)
    from sklearn.model_selection import train_test_split

    _, x_test, _, _ = train_test_split(
        prepared.features, prepared.target, test_size=0.2, random_state=7, stratify=prepared.target
    )
    assert x_test["color"].isna().any()
    np.testing.assert_array_equal(models["csv"].predict(x_test), models["parquet"].predict(x_test))
    np.testing.assert_array_equal(
        models["csv"].predict_proba(x_test), models["parquet"].predict_proba(x_test)
    )
    for meta in metas.values():  # both compiled and checked, every label identical
        assert meta.onnx is not None
        assert meta.onnx.file == "model.onnx", meta.onnx.reason
        check = (meta.onnx.model_extra or {})["check"]
        assert check["passed"] is True
        assert check["labels_differing"] == 0
    checks = [(m.onnx.model_extra or {})["check"] for m in metas.values() if m.onnx]
    assert checks[0]["rows"] == checks[1]["rows"]
    assert checks[0]["max_abs_difference"] == checks[1]["max_abs_difference"]
