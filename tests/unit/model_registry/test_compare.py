"""``model-registry compare``: two versions side by side, for people and for scripts."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from model_registry import Registry
from model_registry.__main__ import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, main
from tests.conftest import metadata_body
from tests.unit.model_registry.test_cli import FORCED_GATE, FOREST_PARAMS, run, trained

LOGISTIC_PARAMS = {"C": 1.0, "class_weight": None, "max_iter": 2000, "random_state": 42}
ACCEPTED_GATE = {
    "accepted": True,
    "reason": "no production version to compare with; roc_auc=0.9960",
    "metric": "roc_auc",
    "candidate": 0.996,
    "forced": False,
}
ONNX = b"an onnx graph"
ONNX_INFO = {
    "file": "model.onnx",
    "sha256": hashlib.sha256(ONNX).hexdigest(),
    "size_bytes": len(ONNX),
    "check": {"rows": 569, "max_abs_difference": 3.3e-16, "edges": {"rows": 256}},
}
NO_ONNX = {"file": None, "reason": "skl2onnx cannot convert this pipeline"}


@pytest.fixture
def churn(registry: Registry) -> Registry:
    """v1: logistic, in production, compiled for ONNX; v2: a forest with overrides, forced in."""
    registry.publish(
        "churn",
        b"one",
        metadata_body(
            primary_metric="roc_auc",
            metrics={"roc_auc": 0.996, "accuracy": 0.9649, "log_loss": 0.0773},
            training=trained("logistic", LOGISTIC_PARAMS, param_overrides={}, gate=ACCEPTED_GATE),
            onnx=ONNX_INFO,
        ),
        onnx=ONNX,
    )
    registry.publish(
        "churn",
        b"two",
        metadata_body(
            primary_metric="roc_auc",
            metrics={"roc_auc": 0.9934, "accuracy": 0.9561, "log_loss": 0.122},
            training=trained(
                "random-forest",
                {**FOREST_PARAMS, "class_weight": "balanced"},
                param_overrides={"max_depth": 4, "class_weight": "balanced"},
                gate=FORCED_GATE,
                test_rows=25,
            ),
            onnx=NO_ONNX,
        ),
    )
    registry.set_alias("churn", "production", "v1")
    return registry


def compared(registry: Registry, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    assert run(registry, "-o", "json", "compare", *args) == EXIT_OK
    return orjson.loads(capsys.readouterr().out)


def labelled(out: str) -> dict[str, list[str]]:
    """``label: value`` lines, with the unlabelled lines that follow each one."""
    found: dict[str, list[str]] = {}
    label = ""
    for line in out.splitlines():
        if line[:1] not in ("", " ") and line[:13].rstrip().endswith(":"):
            label = line[:13].strip()
            found[label] = [line[13:]]
        elif line.startswith(" " * 13) and label:
            found[label].append(line[13:])
        else:
            label = ""
    return found


def test_compare_text_side_by_side(churn: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(churn, "compare", "churn", "production", "latest") == EXIT_OK
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "model:       churn"
    assert lines[1] == (
        "verdict:     v1 is better by roc_auc (higher is better): v1 0.9960, v2 0.9934"
    )
    rows = {line.split()[0]: line.split()[1:] for line in lines if line and line[0] != " "}
    assert rows["estimator"] == ["logistic", "random-forest"]
    assert rows["rows"] == ["100", "100"]
    assert rows["test"] == ["rows", "-", "25"]
    assert rows["engine"] == ["onnx", "sklearn"]
    assert rows["METRIC"] == ["v1", "v2", "v2", "-", "v1", "BETTER"]
    # The primary metric first, marked; the difference is B - A; log_loss: lower is better.
    metric_rows = lines[lines.index(next(x for x in lines if x.startswith("METRIC"))) + 1 :][:3]
    assert [row.split() for row in metric_rows] == [
        ["roc_auc", "*", "0.9960", "0.9934", "-0.0026", "v1"],
        ["accuracy", "0.9649", "0.9561", "-0.0088", "v1"],
        ["log_loss", "0.0773", "0.1220", "+0.0447", "v1"],
    ]
    # Only the parameters that differ; * marks those set with --param.
    assert rows["PARAMETER"] == ["v1", "v2"]
    assert rows["C"] == ["1.0", "-"]
    assert rows["class_weight"] == ["null", "balanced", "*"]
    assert rows["max_depth"] == ["-", "4", "*"]
    assert "max_iter" in rows
    assert "random_state" not in rows  # 42 in both
    assert "(* set with --param; 1 more the same)" in out
    found = labelled(out)
    assert found["data:"] == [f"the same: file:///data.csv (sha256 {'0' * 64})"]
    assert found["features:"] == ["the same 2"]
    assert "target:" not in found
    assert found["engine:"] == [
        "v1: onnx, model.onnx checked on 569 rows and 256 edge rows, largest difference 3.3e-16",
        "v2: sklearn, no model.onnx: skl2onnx cannot convert this pipeline",
    ]
    assert found["gate:"] == [
        f"v1: accepted: {ACCEPTED_GATE['reason']}",
        f"v2: rejected, registered with --force: {FORCED_GATE['reason']}",
    ]


def test_compare_json_for_scripts(churn: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    doc = compared(churn, capsys, "churn", "1", "v2")
    assert doc["model_name"] == "churn"
    assert doc["a"] | {"created_at": None} == {
        "ref": "1",
        "version": "v1",
        "aliases": ["production"],
        "created_at": None,
    }
    assert doc["b"]["version"] == "v2"
    assert doc["primary_metric"] == {"name": "roc_auc", "higher_is_better": True, "note": None}
    assert (doc["better"], doc["better_version"]) == ("a", "v1")
    assert list(doc["metrics"]) == ["roc_auc", "accuracy", "log_loss"]
    assert doc["metrics"]["log_loss"] == {
        "a": 0.0773,
        "b": 0.122,
        "difference": pytest.approx(0.0447),
        "higher_is_better": False,
        "better": "a",
    }
    assert doc["estimator"] == {"a": "logistic", "b": "random-forest"}
    params = doc["params"]
    assert params["a"] == LOGISTIC_PARAMS
    assert params["b"]["max_depth"] == 4
    assert "random_state" not in params["differing"]
    assert {"C", "class_weight", "max_depth"} <= set(params["differing"])
    assert params["overrides"] == {"a": {}, "b": {"max_depth": 4, "class_weight": "balanced"}}
    assert doc["training"]["same_data"] is True
    assert doc["training"]["b"]["test_rows"] == 25
    assert doc["features"]["same"] is True
    assert doc["target"]["same"] is True
    assert doc["engine"]["a"]["engine"] == "onnx"
    assert doc["engine"]["a"]["onnx"]["sha256"] == ONNX_INFO["sha256"]
    assert doc["engine"]["b"] == {
        "engine": "sklearn",
        "onnx": None,
        "note": "no model.onnx: skl2onnx cannot convert this pipeline",
    }
    assert doc["gate"] == {"a": ACCEPTED_GATE, "b": FORCED_GATE}


def test_lower_is_better_for_errors(registry: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    target = {"name": "progression", "dtype": "float64"}
    for rmse, mae, r2 in ((53.78, 42.81, 0.454), (51.2, 43.0, 0.5)):
        metrics = {"rmse": rmse, "mae": mae, "r2": r2}
        body = metadata_body(task="regression", target=target, metrics=metrics)
        registry.publish("diabetes", b"x", {**body, "primary_metric": "rmse"})
    doc = compared(registry, capsys, "diabetes", "v1", "v2")
    assert (doc["better"], doc["better_version"]) == ("b", "v2")
    assert doc["verdict"] == "v2 is better by rmse (lower is better): v1 53.7800, v2 51.2000"
    assert {name: m["better"] for name, m in doc["metrics"].items()} == {
        "rmse": "b",
        "mae": "a",
        "r2": "b",
    }
    assert run(registry, "compare", "diabetes", "v2", "v1") == EXIT_OK
    out = capsys.readouterr().out
    assert "verdict:     v2 is better by rmse (lower is better): v2 51.2000, v1 53.7800" in out
    assert "rmse *       51.2000  53.7800  +2.5800  v2" in out


def test_schema_and_data_differences(
    registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    x1 = metadata_body()["features"][0]
    registry.publish("churn", b"one", metadata_body())
    features = [
        {"name": "x2", "dtype": "int64", "kind": "numeric", "min": 0, "max": 9},
        {**x1, "dtype": "object", "kind": "categorical", "categories": ["lo", "hi"]},
    ]
    training = {
        **metadata_body()["training"],
        "data_uri": "gs://b/new.csv",
        "data_sha256": "1" * 64,
    }
    target = {"name": "y", "dtype": "int64", "classes": [0, 1, 2]}
    registry.publish(
        "churn", b"two", metadata_body(features=features, training=training, target=target)
    )
    doc = compared(registry, capsys, "churn", "v1", "v2")
    assert doc["features"] == {
        "same": False,
        "count": {"a": 2, "b": 2},
        "added": [{"name": "x2", "kind": "numeric", "dtype": "int64"}],
        "removed": [{"name": "color", "kind": "categorical", "dtype": "object"}],
        "changed": [
            {
                "name": "x1",
                "a": {"name": "x1", "kind": "numeric", "dtype": "float64"},
                "b": {"name": "x1", "kind": "categorical", "dtype": "object"},
            }
        ],
        "reordered": False,
    }
    assert doc["training"]["same_data"] is False
    assert doc["target"]["same"] is False
    assert run(registry, "compare", "churn", "v1", "v2") == EXIT_OK
    found = labelled(capsys.readouterr().out)
    assert found["features:"] == [
        "differ (2 in v1, 2 in v2):",
        "v2 adds x2 (numeric, int64)",
        "v2 drops color (categorical, object)",
        "x1 is numeric float64 in v1, categorical object in v2",
    ]
    assert found["data:"] == [
        f"v1: file:///data.csv (sha256 {'0' * 64})",
        f"v2: gs://b/new.csv (sha256 {'1' * 64})",
    ]
    assert found["target:"] == ["v1: y classes=[0, 1]", "v2: y classes=[0, 1, 2]"]


def test_reordered_features_and_same_data_at_two_uris(
    registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    registry.publish("churn", b"one", metadata_body())
    training = {**metadata_body()["training"], "data_uri": "gs://b/data.csv"}
    features = list(reversed(metadata_body()["features"]))
    registry.publish("churn", b"two", metadata_body(features=features, training=training))
    assert run(registry, "compare", "churn", "v1", "v2") == EXIT_OK
    found = labelled(capsys.readouterr().out)
    assert found["features:"] == [
        "differ (2 in v1, 2 in v2):",
        "the features they share come in another order in v2",
    ]
    assert found["data:"][-1] == "(the same bytes at two URIs)"


def test_the_same_data_uri_with_other_bytes(
    registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    registry.publish("churn", b"one", metadata_body())
    training = {**metadata_body()["training"], "data_sha256": "2" * 64}
    registry.publish("churn", b"two", metadata_body(training=training))
    assert run(registry, "compare", "churn", "v1", "v2") == EXIT_OK
    assert labelled(capsys.readouterr().out)["data:"] == [
        f"v1: file:///data.csv (sha256 {'0' * 64})",
        f"v2: file:///data.csv (sha256 {'2' * 64})",
        "(the data at this URI changed between the two)",
    ]


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        # Versions registered before the primary metric was recorded: the trainer's default.
        (
            {"metrics": {"roc_auc": 0.9}},
            {"metrics": {"roc_auc": 0.9}},
            (
                "neither: both have roc_auc 0.9000",
                "roc_auc, the trainer's default for the task: v1 and v2 recorded no primary metric",
            ),
        ),
        (
            {"primary_metric": "roc_auc", "metrics": {"roc_auc": 0.9, "f1": 0.8}},
            {"primary_metric": "f1", "metrics": {"roc_auc": 0.91, "f1": 0.7}},
            (
                "v1 is better by f1 (higher is better): v1 0.8000, v2 0.7000",
                "the versions' primary metrics differ (v1: roc_auc, v2: f1); compared by f1",
            ),
        ),
        (
            {"primary_metric": "roc_auc", "metrics": {"roc_auc": 0.9, "f1": 0.8}},
            {"primary_metric": "f1", "metrics": {"roc_auc": 0.91}},
            (
                "v2 is better by roc_auc (higher is better): v1 0.9000, v2 0.9100",
                "the versions' primary metrics differ (v1: roc_auc, v2: f1); compared by roc_auc",
            ),
        ),
        (
            {"primary_metric": "roc_auc", "metrics": {"f1": 0.8}},
            {"primary_metric": "roc_auc", "metrics": {"roc_auc": 0.91}},
            ("none: v1 recorded no roc_auc", None),
        ),
        (
            {"primary_metric": "brier", "metrics": {"brier": 0.1}},
            {"primary_metric": "brier", "metrics": {"brier": 0.2}},
            ("none: which way brier improves is not known here", None),
        ),
    ],
)
def test_verdict_edge_cases(
    registry: Registry,
    capsys: pytest.CaptureFixture[str],
    a: dict[str, Any],
    b: dict[str, Any],
    expected: tuple[str, str | None],
) -> None:
    """``expected``: the verdict, and the note on the metric it was reached by."""
    verdict, note = expected
    registry.publish("churn", b"one", metadata_body(**a))
    registry.publish("churn", b"two", metadata_body(**b))
    doc = compared(registry, capsys, "churn", "v1", "v2")
    assert (doc["verdict"], doc["primary_metric"]["note"]) == (verdict, note)
    assert run(registry, "compare", "churn", "v1", "v2") == EXIT_OK
    out = capsys.readouterr().out
    assert f"verdict:     {verdict}\n" in out
    if note:
        assert f"\n             ({note})\n" in out


def test_a_version_with_itself(churn: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(churn, "compare", "churn", "production", "1") == EXIT_OK
    out = capsys.readouterr().out
    assert "(A and B are both v1 (production))" in out
    assert "verdict:     neither: both have roc_auc 0.9960" in out
    assert "parameters:  the same (4)" in out
    doc = compared(churn, capsys, "churn", "production", "1")
    assert doc["params"]["differing"] == []
    assert doc["better"] == "same"
    assert doc["better_version"] is None


def test_gradient_boosting_is_served_by_the_pipeline(
    registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    training = trained("gradient-boosting", {"max_iter": 100})
    for blob in (b"one", b"two"):
        registry.publish("churn", blob, metadata_body(training=training, onnx=ONNX_INFO), onnx=ONNX)
    doc = compared(registry, capsys, "churn", "v1", "v2")
    assert doc["engine"]["a"]["engine"] == "sklearn"
    assert doc["engine"]["a"]["note"].startswith("model.onnx is not used: the server runs ")


def test_compare_errors(churn: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(churn, "compare", "churn", "v1", "v9") == EXIT_NOT_FOUND
    assert capsys.readouterr().err == (
        "model-registry: not found: model 'churn' has no version v9; versions: v1, v2 "
        "(aliases: production -> v1)\n"
    )
    assert run(churn, "compare", "churn", "staging", "v1") == EXIT_NOT_FOUND
    assert "model 'churn' has no alias 'staging'; versions: v1, v2" in capsys.readouterr().err
    assert run(churn, "compare", "chrun", "v1", "v2") == EXIT_NOT_FOUND
    assert f"model 'chrun' not found in {churn.uri}; models: churn\n" in capsys.readouterr().err
    assert run(churn, "compare", "Churn", "v1", "v2") == EXIT_USAGE
    assert run(churn, "compare", "churn", "v1", "latest-ish!") == EXIT_USAGE
    with pytest.raises(SystemExit) as exit_info:
        run(churn, "compare", "churn", "v1")
    assert exit_info.value.code == EXIT_USAGE
    assert "the following arguments are required: VERSION_B" in capsys.readouterr().err


def test_compare_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: model-registry compare" in out
    assert "VERSION_A" in out
    assert "difference (B - A)" in out
    assert "lower is better" in out
    assert "  model-registry compare breast-cancer production latest\n" in out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "compare" in capsys.readouterr().out
